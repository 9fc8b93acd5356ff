package catalog

import (
	"cmp"
	"container/heap"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"time"

	"lookalike/index"
)

// catchUp brings the embedded graph up to the store's state beside the serving path, so
// that a start after a crash serves as soon as the snapshot is loaded (or at once, with an
// empty graph, when the graph is rebuilt) instead of after the whole replay or rebuild.
//
// It holds the desired final state of every photo key the graph does not reflect yet: its
// vector, or deleted. The state is net per key (the store's current one, not the sequence of
// changes that led there), so the order in which keys reach the graph does not matter.
// Background workers apply each key's state to the graph (Add replaces, Delete removes) and
// then forget the key, unless its state changed meanwhile (a version says so), in which case
// they apply it again. While a catch-up exists the embedded backend's writes record their
// graph changes here instead of in the graph, and searches read both (view).
//
// The invariant that makes this correct: for every key, its served state is its pending
// state here when it has one, else the graph's. A worker forgets a key only after the graph
// holds the very state it forgets, so forgetting never changes a served state; writes set
// the pending state, so they are served at once; nothing else changes the graph meanwhile.
type catchUp struct {
	graph *index.HNSW
	log   *slog.Logger
	// gate, when set (tests only), holds every worker until it is closed.
	gate <-chan struct{}
	// onEmpty is called, outside mu, by the worker that forgot the last pending key; it
	// decides (under the backend's write lock) whether the catch-up is over (finish) or
	// must go on (more keys set).
	onEmpty func()

	mu   sync.RWMutex
	wake *sync.Cond // on mu's write lock: a worker's queue got a key, or stop/finish
	// pending is the desired state of each key the graph does not reflect yet.
	pending map[index.Key]*pendingPhoto
	// withVec and gone list the pending keys that have a vector and those deleted, densely
	// (pendingPhoto.slot is the position), so that a search copies them in one go.
	withVec []index.Key
	vecs    [][]float32
	gone    []index.Key
	// queues[w] are the keys worker w owns and has yet to apply, oldest first. A key is in
	// its owner's queue, or being applied by it, for as long as it is pending: a key always
	// goes to the same worker (key mod workers), so its applications never overlap.
	queues [][]index.Key
	// stopped says Close wants the workers gone; finished says the catch-up is over.
	stopped, finished bool
	// reconciled says the graph was found to disagree with the store once already; guarded
	// by the backend's writeMu, not mu (finishCatchUp).
	reconciled bool

	// applied counts the keys forgotten after their application; started, total (the keys
	// set before the start) and lastLog are for the progress logs.
	applied int
	total   int
	started time.Time
	lastLog time.Time

	workers sync.WaitGroup
	// quit is closed by stop, so that workers held at gate return too; done is closed when
	// every worker has returned (finished or stopped).
	quit     chan struct{}
	quitOnce sync.Once
	done     chan struct{}
}

// pendingPhoto is one key's desired state.
type pendingPhoto struct {
	// vec is the vector the graph must hold; nil means the key must not be in the graph.
	// Never changed in place: a new state is a new slice, so a search may hold the old one.
	vec []float32
	// version grows with every state set, so a worker knows whether what it applied is
	// still what is wanted.
	version uint64
	// slot is the key's position in withVec (vec set) or gone (vec nil).
	slot int
}

// newCatchUp returns an empty catch-up of graph; set fills it, start runs it.
func newCatchUp(graph *index.HNSW, log *slog.Logger, gate <-chan struct{}) *catchUp {
	c := &catchUp{
		graph: graph, log: log, gate: gate,
		pending: make(map[index.Key]*pendingPhoto),
		queues:  make([][]index.Key, runtime.GOMAXPROCS(0)),
		quit:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	c.wake = sync.NewCond(&c.mu)
	return c
}

// set makes vec (nil: deleted) the state the graph must reach for key. The caller owns no
// reference to vec afterwards. Writers call it under the backend's write lock, in store
// order, so the last state set is the store's.
func (c *catchUp) set(key index.Key, vec []float32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.pending[key]
	if !ok {
		p = &pendingPhoto{slot: -1}
		c.pending[key] = p
		w := int(key % uint32(len(c.queues)))
		c.queues[w] = append(c.queues[w], key)
		c.wake.Broadcast()
	}
	p.version++
	switch {
	case p.slot < 0:
	case p.vec != nil && vec != nil:
		c.vecs[p.slot] = vec
		p.vec = vec
		return
	default:
		c.unlist(p)
	}
	p.vec = vec
	if vec != nil {
		p.slot = len(c.withVec)
		c.withVec = append(c.withVec, key)
		c.vecs = append(c.vecs, vec)
	} else {
		p.slot = len(c.gone)
		c.gone = append(c.gone, key)
	}
}

// unlist removes p's key from its dense list, moving the list's last key into its slot; the
// caller holds mu.
func (c *catchUp) unlist(p *pendingPhoto) {
	if p.vec != nil {
		last := len(c.withVec) - 1
		moved := c.withVec[last]
		c.withVec[p.slot], c.vecs[p.slot] = moved, c.vecs[last]
		c.pending[moved].slot = p.slot
		c.vecs[last] = nil
		c.withVec, c.vecs = c.withVec[:last], c.vecs[:last]
	} else {
		last := len(c.gone) - 1
		moved := c.gone[last]
		c.gone[p.slot] = moved
		c.pending[moved].slot = p.slot
		c.gone = c.gone[:last]
	}
	p.slot = -1
}

// start runs the workers; onEmpty is called whenever the last pending key is forgotten.
func (c *catchUp) start(onEmpty func()) {
	c.mu.Lock()
	c.onEmpty = onEmpty
	c.total = len(c.pending)
	c.started, c.lastLog = time.Now(), time.Now()
	c.mu.Unlock()
	for w := range c.queues {
		c.workers.Go(func() { c.work(w) })
	}
	go func() {
		c.workers.Wait()
		close(c.done)
	}()
}

// work is worker w: it applies the keys of its queue until the catch-up is stopped or over.
func (c *catchUp) work(w int) {
	if c.gate != nil {
		select {
		case <-c.gate:
		case <-c.quit:
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		for len(c.queues[w]) == 0 && !c.stopped && !c.finished {
			c.wake.Wait()
		}
		if c.stopped || c.finished {
			return
		}
		key := c.queues[w][0]
		c.queues[w] = c.queues[w][1:]
		p := c.pending[key] // only this worker forgets key, so it is there
		vec, version := p.vec, p.version
		c.mu.Unlock()
		var err error
		if vec != nil {
			err = c.graph.Add(key, vec)
		} else {
			c.graph.Delete(key)
		}
		if err != nil {
			// The store validated the vector when it was written, so this is a bug; the key
			// is forgotten (the graph lacks it) and the count check at the end reports it.
			c.log.Error("catch-up: the graph refused a photo's vector", "key", key, "err", err)
		}
		c.mu.Lock()
		if p.version != version {
			c.queues[w] = append(c.queues[w], key) // written meanwhile: apply the new state
			continue
		}
		c.unlist(p)
		delete(c.pending, key)
		c.applied++
		if time.Since(c.lastLog) >= 2*time.Second {
			c.lastLog = time.Now()
			c.log.Info("graph catching up", "applied", c.applied, "pending", len(c.pending),
				"elapsed", time.Since(c.started).Round(time.Second))
		}
		if len(c.pending) == 0 {
			c.mu.Unlock()
			c.onEmpty()
			c.mu.Lock()
		}
	}
}

// empty reports whether no key is pending.
func (c *catchUp) empty() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.pending) == 0
}

// finish ends the catch-up: the workers return. The caller has just seen it empty under
// the backend's write lock and still holds that lock, so no key can have been set since.
func (c *catchUp) finish() {
	c.mu.Lock()
	c.finished = true
	c.wake.Broadcast()
	c.mu.Unlock()
}

// stop makes the workers return once their current application is done, and waits for them.
func (c *catchUp) stop() {
	c.mu.Lock()
	c.stopped = true
	c.wake.Broadcast()
	c.mu.Unlock()
	c.quitOnce.Do(func() { close(c.quit) })
	<-c.done
}

// progress returns how many keys are pending, how many were applied and for how long the
// catch-up has run.
func (c *catchUp) progress() (pending, applied int, took time.Duration) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.pending), c.applied, time.Since(c.started)
}

// vector returns key's pending state: pending says whether it has one, vec is its vector
// (nil when deleted), not to be changed by the caller.
func (c *catchUp) vector(key index.Key) (vec []float32, pending bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	p, ok := c.pending[key]
	if !ok {
		return nil, false
	}
	return p.vec, true
}

// search returns the n photos nearest q among every photo served: the pending photos with a
// vector that admit accepts (nil: all), scored exactly, merged by score with the graph's
// results for the keys not pending. The pending set is copied first, then the graph is
// searched without the copied keys: a key forgotten meanwhile was applied to the graph
// before, and a key set meanwhile is one the graph still holds in its earlier state, so
// every key is answered once, in a state it had during the search.
func (c *catchUp) search(q []float32, n int, ef int, admit func(index.Key) bool) []index.Neighbor {
	if n <= 0 || len(q) != c.graph.Dim() {
		return nil // as the graph answers
	}
	c.mu.RLock()
	keys, vecs, gone := slices.Clone(c.withVec), slices.Clone(c.vecs), slices.Clone(c.gone)
	c.mu.RUnlock()
	masked := make(map[index.Key]struct{}, len(keys)+len(gone))
	for _, k := range keys {
		masked[k] = struct{}{}
	}
	for _, k := range gone {
		masked[k] = struct{}{}
	}

	filter := func(k index.Key) bool {
		if _, ok := masked[k]; ok {
			return false
		}
		return admit == nil || admit(k)
	}
	out := c.graph.Search(q, n, index.SearchOptions{EF: ef, Filter: filter})
	out = append(out, exactTop(q, n, keys, vecs, admit)...)
	slices.SortFunc(out, func(a, b index.Neighbor) int {
		if a.Score != b.Score {
			return cmp.Compare(b.Score, a.Score)
		}
		return cmp.Compare(a.Key, b.Key)
	})
	return out[:min(n, len(out))]
}

// exactTop scores every vector whose key admit accepts (nil: all) against q with the graph's
// metric and returns the n best, in no particular order.
func exactTop(q []float32, n int, keys []index.Key, vecs [][]float32, admit func(index.Key) bool) []index.Neighbor {
	var best worstFirst
	for i, k := range keys {
		if admit != nil && !admit(k) {
			continue
		}
		nb := index.Neighbor{Key: k, Score: index.InnerProduct.Score(q, vecs[i])}
		if len(best) < n {
			heap.Push(&best, nb)
		} else if nb.Score > best[0].Score || (nb.Score == best[0].Score && nb.Key < best[0].Key) {
			best[0] = nb
			heap.Fix(&best, 0)
		}
	}
	return best
}

// worstFirst is a heap of neighbours with the worst (lowest score, then highest key) on top.
type worstFirst []index.Neighbor

func (h worstFirst) Len() int { return len(h) }
func (h worstFirst) Less(i, j int) bool {
	if h[i].Score != h[j].Score {
		return h[i].Score < h[j].Score
	}
	return h[i].Key > h[j].Key
}
func (h worstFirst) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *worstFirst) Push(x any)   { *h = append(*h, x.(index.Neighbor)) }
func (h *worstFirst) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
