package index

import (
	"runtime"
	"slices"
	"sync"
)

// Exact is a brute-force index with the same interface as HNSW: ground truth for tests and
// benchmarks, and the right choice for small catalogues. It is safe for concurrent use.
type Exact struct {
	dim int
	l2  bool

	mu   sync.RWMutex
	vecs []float32 // dense: slot i at [i*dim, (i+1)*dim)
	keys []Key
	slot map[Key]int
}

// NewExact returns an empty exact index of dim-dimensional vectors.
func NewExact(dim int, m Metric) *Exact {
	return &Exact{dim: dim, l2: m == L2, slot: make(map[Key]int)}
}

// Add stores vec under key, replacing any previous vector.
func (e *Exact) Add(key Key, vec []float32) error {
	if err := checkVector(e.dim, vec); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if i, ok := e.slot[key]; ok {
		copy(e.vecs[i*e.dim:(i+1)*e.dim], vec)
		return nil
	}
	e.slot[key] = len(e.keys)
	e.keys = append(e.keys, key)
	e.vecs = append(e.vecs, vec...)
	return nil
}

// Delete removes key, moving the last slot into its place so the storage stays dense.
func (e *Exact) Delete(key Key) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	i, ok := e.slot[key]
	if !ok {
		return false
	}
	last := len(e.keys) - 1
	if i != last {
		copy(e.vecs[i*e.dim:(i+1)*e.dim], e.vecs[last*e.dim:])
		e.keys[i] = e.keys[last]
		e.slot[e.keys[i]] = i
	}
	e.keys = e.keys[:last]
	e.vecs = e.vecs[:last*e.dim]
	delete(e.slot, key)
	return true
}

// Vector returns a copy of the vector stored under key.
func (e *Exact) Vector(key Key) ([]float32, bool) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	i, ok := e.slot[key]
	if !ok {
		return nil, false
	}
	return append([]float32(nil), e.vecs[i*e.dim:(i+1)*e.dim]...), true
}

// Len counts the stored keys.
func (e *Exact) Len() int {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return len(e.keys)
}

// parallelScanWork is the number of multiply-adds (items x dim) above which an unfiltered
// search splits the scan across cores.
const parallelScanWork = 1 << 21

// Search scores every stored vector and returns the k best, best first. EF is ignored. An
// unfiltered search over a large index runs on all cores; a filtered one stays on the calling
// goroutine so the filter need not be safe for concurrent use.
func (e *Exact) Search(query []float32, k int, opt SearchOptions) []Neighbor {
	if k <= 0 || len(query) != e.dim {
		return nil
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	n := len(e.keys)
	workers := 1
	if opt.Filter == nil && n*e.dim > parallelScanWork {
		workers = min(runtime.GOMAXPROCS(0), n/1024+1)
	}
	parts := make([]maxHeap, workers)
	var wg sync.WaitGroup
	chunk := (n + workers - 1) / workers
	for w := range workers {
		lo, hi := w*chunk, min(n, (w+1)*chunk)
		run := func() { e.scanRange(&parts[w], query, k, lo, hi, opt.Filter) }
		if workers == 1 {
			run()
		} else {
			wg.Go(run)
		}
	}
	wg.Wait()
	var all []candidate
	for w := range parts {
		all = append(all, parts[w].items...)
	}
	slices.SortFunc(all, func(a, b candidate) int {
		switch {
		case a.dist < b.dist:
			return -1
		case a.dist > b.dist:
			return 1
		default:
			// Ties broken by key so results do not depend on storage order.
			return int(e.keys[a.node]) - int(e.keys[b.node])
		}
	})
	if len(all) > k {
		all = all[:k]
	}
	out := make([]Neighbor, len(all))
	for i, c := range all {
		out[i] = Neighbor{Key: e.keys[c.node], Score: -c.dist}
	}
	return out
}

func (e *Exact) scanRange(res *maxHeap, q []float32, k, lo, hi int, filter func(Key) bool) {
	for i := lo; i < hi; i++ {
		if filter != nil && !filter(e.keys[i]) {
			continue
		}
		res.pushBounded(candidate{distance(e.l2, q, e.vecs[i*e.dim:(i+1)*e.dim]), uint32(i)}, k)
	}
}

// Compile-time checks that both indexes satisfy the contract.
var (
	_ Index = (*HNSW)(nil)
	_ Index = (*Exact)(nil)
)
