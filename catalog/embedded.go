package catalog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"lookalike/index"
	"lookalike/store"
)

// EmbeddedConfig says where an embedded backend lives and how to build its graph.
type EmbeddedConfig struct {
	// DataDir holds StoreFileName and SnapshotFileName; it is created if missing.
	DataDir string
	// ModelIdentity and Dim are the model the store is made for; an existing store made
	// for another model is refused.
	ModelIdentity string
	Dim           int
	// Index parameters for a fresh graph (and Quantize for any graph).
	Index IndexParams
	// SnapshotInterval saves the graph this often when it changed; 0 disables periodic saves
	// (Close and SaveSnapshot still save).
	SnapshotInterval time.Duration
	// SnapshotChanges also saves the graph, beside the write path, once the store holds this
	// many changes the last snapshot does not cover, so that a restart after a crash replays
	// at most about that many; 0 means DefaultSnapshotChanges, negative never.
	SnapshotChanges int
	// Logger receives progress and warnings; nil discards them.
	Logger *slog.Logger

	// catchUpGate, when set (tests only), holds the background catch-up's workers until it
	// is closed, so a test can look at a backend that is serving while its graph lags.
	catchUpGate <-chan struct{}
}

// catchUpAbove is the most photo keys a start brings into the graph before it returns;
// past it (a long replay of the change log, a rebuild of a catalogue) OpenEmbedded returns
// once the snapshot is loaded and the graph catches up in the background (catchup.go).
const catchUpAbove = 256

// truncateLogAfter is how many changes a snapshot save lets the store's change log keep
// beyond the last truncation before it truncates again. A truncation is a store write
// transaction with its fsync, which the writes wait behind; the entries it frees are a few
// bytes each, so a save does it only every few thousand changes.
const truncateLogAfter = 4096

// DefaultSnapshotChanges bounds the change log a restart replays onto the last snapshot.
// Replaying inserts costs what building the graph does, a few hundred to a few thousand a
// second on one core for 1280-d vectors. A replay of more than catchUpAbove photos runs after
// the start, beside the serving (catchup.go), so the bound no longer decides when a restart
// serves but how long its graph takes to hold everything again and how many photos each
// search scores exactly meanwhile: about 8 s and 4,000 at 100,000 photos on the project's
// 2-core machine (scripts/restart-time.sh measures it).
const DefaultSnapshotChanges = 4000

// Embedded is the one-machine backend: products and vectors in a bbolt store (the truth),
// the HNSW graph derived from it in memory, and the graph's snapshots, which spare a rebuild
// at the next open. It implements Backend.
type Embedded struct {
	log          *slog.Logger
	store        *store.Store
	graph        *index.HNSW
	params       IndexParams
	dataDir      string
	snapshotFile string

	// writeMu serialises store+graph writes so the graph applies them in store order, and
	// lets a snapshot read a store seq that every applied write is at or below.
	writeMu sync.Mutex

	// snapMu serialises snapshot saves. snapInfoMu guards the last snapshot's seq and time,
	// apart from snapMu so that stats never wait for a save in progress.
	snapMu      sync.Mutex
	snapInfoMu  sync.Mutex
	snapshotSeq uint64
	// truncatedSeq is where SaveSnapshot last truncated the store's change log; guarded by
	// snapMu.
	truncatedSeq uint64
	snapshotTime time.Time

	// snapshotChanges is EmbeddedConfig.SnapshotChanges with its default applied; a write
	// past it nudges the saver through saveSoon (capacity 1, never blocks the writer).
	snapshotChanges int
	saveSoon        chan struct{}
	// saved, when set (tests only), is told the seq of every snapshot the saver writes.
	saved chan uint64

	// catchUp is the graph's catch-up with the store after a start, nil when the graph holds
	// every photo's latest state. Set at open; cleared once, under writeMu, when it is over.
	// While set, writes record their graph changes in it and searches read it too.
	catchUp     atomic.Pointer[catchUp]
	catchUpGate <-chan struct{}

	stopPeriodic context.CancelFunc
	periodicDone chan struct{}
}

// OpenEmbedded opens (or creates) the store in cfg.DataDir, then brings the graph up to the
// store's state: from its snapshot caught up with the store's change log, or rebuilt from the
// store when the snapshot is missing, stale or damaged. When that is more than catchUpAbove
// photos it returns as soon as the snapshot is loaded (at once for a rebuild) and the graph
// catches up in the background (catchup.go), every search and write served correctly
// meanwhile.
func OpenEmbedded(ctx context.Context, cfg EmbeddedConfig) (*Embedded, error) {
	if cfg.DataDir == "" {
		return nil, fmt.Errorf("%w: catalog.EmbeddedConfig.DataDir is empty", ErrInvalidArgument)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("catalog: create data dir: %w", err)
	}
	removeLeftovers(cfg.DataDir, log)
	storePath, snapPath := filepath.Join(cfg.DataDir, StoreFileName), filepath.Join(cfg.DataDir, SnapshotFileName)
	if err := checkStoreNotLost(storePath, snapPath); err != nil {
		return nil, err
	}
	st, err := store.Open(storePath, store.Options{ModelIdentity: cfg.ModelIdentity, Dim: cfg.Dim, Logger: log})
	if errors.Is(err, store.ErrCorrupt) {
		return nil, fmt.Errorf("catalog: the store %s is damaged and cannot be served: stop the server and put back a backup "+
			"(lookalike restore --data %s BACKUP), then start it again; the graph is rebuilt from the restored store: %w",
			storePath, cfg.DataDir, err)
	}
	if err != nil {
		return nil, fmt.Errorf("catalog: open store: %w", err)
	}
	b := &Embedded{log: log, store: st, params: cfg.Index.withDefaults(), dataDir: cfg.DataDir, snapshotFile: snapPath,
		catchUpGate: cfg.catchUpGate}
	c, err := b.loadGraph(ctx)
	if err != nil {
		_ = st.Close()
		if errors.Is(err, store.ErrCorrupt) {
			return nil, fmt.Errorf("catalog: the store %s is damaged (%w); stop the server and put back a backup "+
				"(lookalike restore --data %s BACKUP), then start it again", storePath, err, cfg.DataDir)
		}
		return nil, err
	}
	// Before the saver starts: no snapshot may be saved until the graph caught up.
	b.catchUp.Store(c)
	b.snapshotChanges = cfg.SnapshotChanges
	if b.snapshotChanges == 0 {
		b.snapshotChanges = DefaultSnapshotChanges
	}
	if cfg.SnapshotInterval > 0 || b.snapshotChanges > 0 {
		b.saveSoon = make(chan struct{}, 1)
		pctx, cancel := context.WithCancel(context.Background())
		b.stopPeriodic = cancel
		b.periodicDone = make(chan struct{})
		go b.saveInBackground(pctx, cfg.SnapshotInterval)
	}
	if err := b.runCatchUp(ctx, c); err != nil {
		_ = b.Close()
		return nil, fmt.Errorf("catalog: catch the graph up with the store: %w", err)
	}
	return b, nil
}

// ErrStoreLost means the data directory held a catalogue (its graph snapshot is there) but
// its store is missing or empty: serving would quietly answer from an empty catalogue.
var ErrStoreLost = errors.New("catalog: store lost")

// checkStoreNotLost refuses a data directory whose store is missing or empty while a graph
// snapshot of a non-empty catalogue lies beside it.
func checkStoreNotLost(storePath, snapPath string) error {
	st, err := os.Stat(storePath)
	if err == nil && st.Size() > 0 {
		return nil
	}
	// Rare (a store gone or emptied), so reading the whole snapshot to count it is fine;
	// a quantised snapshot without its vector source still counts.
	graph, info, err := index.LoadSnapshotWith(snapPath, index.LoadOptions{Vectors: func(index.Key) []float32 { return nil }})
	if err != nil || graph.Len() == 0 {
		return nil // no usable snapshot: nothing says a catalogue was here
	}
	return fmt.Errorf("%w: %s is missing or empty, but the graph snapshot %s beside it holds %d photos (store seq %d): "+
		"put back a backup (lookalike restore --data %s BACKUP), or remove %s to start an empty catalogue",
		ErrStoreLost, storePath, snapPath, graph.Len(), info.Seq, filepath.Dir(storePath), snapPath)
}

// removeLeftovers deletes the temporary files an interrupted snapshot save or restore leaves
// in the data directory (they are never read, only renamed into place when complete).
func removeLeftovers(dir string, log *slog.Logger) {
	for _, pattern := range []string{SnapshotFileName + ".tmp-*", "." + StoreFileName + ".tmp-*"} {
		matches, _ := filepath.Glob(filepath.Join(dir, pattern))
		for _, m := range matches {
			if err := os.Remove(m); err != nil {
				log.Warn("cannot remove a leftover temporary file", "path", m, "err", err)
				continue
			}
			log.Info("removed a leftover temporary file", "path", m)
		}
	}
}

func (b *Embedded) newGraph() *index.HNSW {
	cfg := index.Config{
		Metric: index.InnerProduct, M: b.params.M,
		EFConstruction: b.params.EFConstruction, EFSearch: b.params.EFSearch, Logger: b.log,
		Quantize: b.params.Quantize,
	}
	if b.params.Quantize != index.QuantizeNone {
		cfg.Vectors = b.storeVector
	}
	return index.NewHNSW(b.store.Dim(), cfg)
}

// storeVector is the full-vector source of a quantised graph: the store's copy of a photo's
// vector, nil when the store has none (the graph then skips the candidate). The graph calls it
// during searches and writes, never inside a store transaction of ours.
func (b *Embedded) storeVector(k index.Key) []float32 {
	v, err := b.store.Vector(k)
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			b.log.Warn("cannot read a photo's vector from the store", "key", k, "err", err)
		}
		return nil
	}
	return v
}

// loadGraph loads the graph snapshot, or makes an empty graph when there is no usable one,
// and returns what the graph lacks of the store's state: the catch-up, not started yet. A
// bad snapshot is logged and replaced by a rebuild: it never stops the start.
func (b *Embedded) loadGraph(ctx context.Context) (*catchUp, error) {
	start := time.Now()
	graph, snapSeq, ok := b.loadSnapshot()
	if ok {
		c := newCatchUp(graph, b.log, b.catchUpGate)
		changes, err := b.pendingSince(c, snapSeq)
		if err == nil {
			b.graph = graph
			b.snapshotSeq = snapSeq
			if st, err := os.Stat(b.snapshotFile); err == nil {
				b.snapshotTime = st.ModTime()
			}
			pending, _, _ := c.progress()
			b.log.Info("graph loaded from snapshot", "photos", graph.Len(), "products", b.store.Count(), "snapshot_seq", snapSeq,
				"store_seq", b.store.Seq(), "changes", changes, "photos_to_apply", pending, "took", time.Since(start).Round(time.Millisecond))
			return c, nil
		}
		b.log.Warn("graph snapshot cannot be caught up with the store; rebuilding", "err", err)
		graph.Close()
	}
	graph = b.newGraph()
	c := newCatchUp(graph, b.log, b.catchUpGate)
	b.log.Info("building graph from store", "photos", b.store.Photos(), "m", b.params.M, "ef_construction", b.params.EFConstruction)
	err := b.store.ForEachVector(func(key uint32, vec []float32) error {
		c.set(key, vec)
		return ctx.Err()
	})
	if err != nil {
		graph.Close()
		return nil, fmt.Errorf("catalog: rebuild graph: %w", err)
	}
	b.graph = graph
	return c, nil
}

// pendingSince sets in c the current state of every photo the store changed after seq (its
// vector, or deleted) and returns how many changes that was. Several changes of one key
// leave one state, the store's: the graph needs no more.
func (b *Embedded) pendingSince(c *catchUp, seq uint64) (int, error) {
	n := 0
	seen := make(map[index.Key]struct{})
	err := b.store.ChangesSince(seq, func(ch store.Change) error {
		n++
		if ch.Metadata() {
			return nil // the graph holds no metadata
		}
		if _, dup := seen[ch.Key]; dup {
			return nil
		}
		seen[ch.Key] = struct{}{}
		vec, err := b.store.Vector(ch.Key)
		switch {
		case errors.Is(err, store.ErrNotFound):
			c.set(ch.Key, nil)
			return nil
		case err != nil:
			return err
		}
		c.set(ch.Key, vec)
		return nil
	})
	return n, err
}

// runCatchUp starts c and, when it holds at most catchUpAbove photos, waits for it to end;
// a longer one goes on in the background while the backend serves.
func (b *Embedded) runCatchUp(ctx context.Context, c *catchUp) error {
	c.start(func() { b.finishCatchUp(c) })
	if c.empty() {
		b.finishCatchUp(c) // nothing to apply: only the count check
	}
	if pending, _, _ := c.progress(); pending > catchUpAbove {
		b.log.Info("serving while the graph catches up with the store in the background (searches score its photos exactly)",
			"graph_photos", b.graph.Len(), "photos_to_apply", pending)
		return nil
	}
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		c.stop()
		return ctx.Err()
	}
}

// finishCatchUp ends c once nothing is pending (its workers call it when they forget the
// last key): under writeMu, so no write can set a key meanwhile, it checks that the graph
// holds as many photos as the store, and from then on writes go to the graph. A graph that
// disagrees (a snapshot inconsistent with the store's log) is reconciled with the store once
// more, in the background too; one that still disagrees is served, with an error logged.
func (b *Embedded) finishCatchUp(c *catchUp) {
	b.writeMu.Lock()
	defer b.writeMu.Unlock()
	if b.catchUp.Load() != c || !c.empty() {
		return // over already, or a write set a key since the worker saw it empty
	}
	if graphPhotos, storePhotos := b.graph.Len(), b.store.Photos(); graphPhotos != storePhotos {
		if !c.reconciled {
			c.reconciled = true
			b.log.Warn("graph disagrees with the store after catching up; reconciling it with the store in the background",
				"graph_photos", graphPhotos, "store_photos", storePhotos)
			if err := b.reconcile(c); err != nil {
				b.log.Error("cannot reconcile the graph with the store; serving it as it is", "err", err)
			}
			if !c.empty() {
				return
			}
		}
		b.log.Error("graph still disagrees with the store after reconciling; serving it as it is (restart to rebuild it)",
			"graph_photos", graphPhotos, "store_photos", storePhotos)
	}
	c.finish()
	b.catchUp.Store(nil)
	_, applied, took := c.progress()
	b.log.Info("graph caught up with the store", "photos", b.graph.Len(), "applied", applied,
		"took", took.Round(time.Millisecond))
	if b.saveSoon != nil && applied > catchUpAbove {
		select { // save it soon: a crash now would otherwise do the catch-up again
		case b.saveSoon <- struct{}{}:
		default:
		}
	}
}

// reconcile sets in c every difference between the graph and the store: the store's photos
// the graph lacks (or holds another vector for: only a float32 graph can tell, a quantised
// one reads its vectors from the store) and the graph's photos the store does not have. The
// caller holds writeMu, so the store does not change meanwhile.
func (b *Embedded) reconcile(c *catchUp) error {
	inGraph := make(map[index.Key]struct{}, b.graph.Len())
	for _, k := range b.graph.Keys() {
		inGraph[k] = struct{}{}
	}
	ownVectors := b.params.Quantize == index.QuantizeNone
	err := b.store.ForEachVector(func(key uint32, vec []float32) error {
		if _, ok := inGraph[key]; !ok {
			c.set(key, vec)
			return nil
		}
		delete(inGraph, key)
		if ownVectors {
			// The graph's own copy: no store read inside this store transaction.
			if gv, _ := b.graph.Vector(key); !slices.Equal(gv, vec) {
				c.set(key, vec)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for k := range inGraph {
		c.set(k, nil)
	}
	return nil
}

// loadSnapshot reads the saved graph if there is a usable one. A snapshot belongs to one
// store history, named by the store's generation: a store restored from a backup (or from
// another data directory) gets a new generation, and its sequence numbers say nothing about
// a graph saved from another history even when they are equal.
func (b *Embedded) loadSnapshot() (*index.HNSW, uint64, bool) {
	// Snapshots hold no live vectors (SaveSnapshot); older ones that do load as before.
	opt := index.LoadOptions{Logger: b.log, Vectors: b.storeVector}
	graph, info, err := index.LoadSnapshotWith(b.snapshotFile, opt)
	seq := info.Seq
	switch {
	case errors.Is(err, fs.ErrNotExist):
		b.log.Info("no graph snapshot; building the graph from the store")
		return nil, 0, false
	case err != nil:
		b.log.Warn("graph snapshot unusable; rebuilding from the store", "path", b.snapshotFile, "err", err)
		return nil, 0, false
	case info.Tag != b.store.Generation():
		b.log.Warn("graph snapshot was saved from another store history (restored store?); rebuilding",
			"snapshot_generation", info.Tag, "store_generation", b.store.Generation(), "snapshot_seq", seq, "store_seq", b.store.Seq())
		return nil, 0, false
	case graph.Dim() != b.store.Dim():
		b.log.Warn("graph snapshot has another dimension; rebuilding", "snapshot_dim", graph.Dim(), "dim", b.store.Dim())
		return nil, 0, false
	case graph.Config().Quantize != b.params.Quantize:
		b.log.Info("graph snapshot has another quantisation; rebuilding",
			"snapshot_quantize", graph.Config().Quantize.String(), "quantize", b.params.Quantize.String())
		return nil, 0, false
	case seq > b.store.Seq():
		b.log.Warn("graph snapshot is newer than the store (store restored from a backup?); rebuilding",
			"snapshot_seq", seq, "store_seq", b.store.Seq())
		return nil, 0, false
	}
	return graph, seq, true
}

// saveInBackground is the snapshot saver: every interval (if any), and whenever a write
// reports that the change log outgrew snapshotChanges. Saves by change count are spaced by
// at least twice the last save's duration, so that a bulk ingest, which crosses the count
// again and again, spends at most a third of the saver's time saving ever larger graphs.
func (b *Embedded) saveInBackground(ctx context.Context, every time.Duration) {
	defer close(b.periodicDone)
	var tick <-chan time.Time
	if every > 0 {
		t := time.NewTicker(every)
		defer t.Stop()
		tick = t.C
	}
	var lastEnd time.Time
	var lastTook time.Duration
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
		case <-b.saveSoon:
			if wait := 2*lastTook - time.Since(lastEnd); wait > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
			}
		}
		start := time.Now()
		saved, err := b.saveSnapshot(ctx)
		if err != nil && !errors.Is(err, context.Canceled) {
			b.log.Warn("background graph snapshot failed", "err", err)
			continue
		}
		if !saved {
			continue
		}
		lastEnd, lastTook = time.Now(), time.Since(start)
		if b.saved != nil {
			_, seq, _ := b.SnapshotState()
			b.saved <- seq
		}
	}
}

// noteChanges nudges the saver when the store's changes since the last snapshot reach
// snapshotChanges. Called by writers after their write; it never waits.
func (b *Embedded) noteChanges() {
	if b.saveSoon == nil || b.snapshotChanges <= 0 {
		return
	}
	storeSeq, snapSeq, _ := b.SnapshotState()
	if storeSeq-snapSeq < uint64(b.snapshotChanges) {
		return
	}
	select {
	case b.saveSoon <- struct{}{}:
	default: // a save is already due
	}
}

// Name implements Backend.
func (b *Embedded) Name() string { return "embedded" }

// Identity implements Backend.
func (b *Embedded) Identity() (string, int) { return b.store.ModelIdentity(), b.store.Dim() }

// Products implements Backend.
func (b *Embedded) Products(ctx context.Context, fn func(store.Product) error) error {
	err := b.store.ForEach(func(p store.Product) error {
		if err := fn(p); err != nil {
			return err
		}
		return ctx.Err()
	})
	if errors.Is(err, store.ErrCorrupt) {
		return fmt.Errorf("the store %s is damaged (%w); stop the server and put back a backup "+
			"(lookalike restore --data %s BACKUP), then start it again", b.store.Path(), err, b.dataDir)
	}
	return err
}

// Put implements Backend: one store transaction (fsynced), then the graph.
func (b *Embedded) Put(ctx context.Context, products []store.Product) ([]store.Product, error) {
	b.writeMu.Lock()
	defer b.writeMu.Unlock()
	// The photos a product loses are deleted from the graph after the store commit; the
	// store knows them only inside its transaction, so read the old keys first (writes are
	// serialised, so nothing changes them in between).
	current := make(map[string][]index.Key, len(products))
	for _, p := range products {
		if _, seen := current[p.ID]; seen {
			continue
		}
		prev, err := b.store.Get(p.ID)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
		keys := []index.Key{}
		for _, ph := range prev.Photos {
			keys = append(keys, ph.Key)
		}
		current[p.ID] = keys
	}
	stored, err := b.store.UpsertBatch(ctx, products)
	if err != nil {
		return nil, err
	}
	// In batch order, as the store applied them: a later product with the same id
	// replaces an earlier one.
	for i, sp := range stored {
		kept := make(map[index.Key]bool, len(sp.Photos))
		keys := make([]index.Key, len(sp.Photos))
		for j, ph := range products[i].Photos {
			keys[j] = sp.Photos[j].Key
			kept[keys[j]] = true
			if ph.Vector == nil {
				continue
			}
			if err := b.graphAdd(keys[j], ph.Vector); err != nil {
				// Vectors are validated before they reach the store, so this is a bug; the
				// store stays the truth and the next open rebuilds or replays the graph.
				return nil, fmt.Errorf("product %q: index: %w", sp.ID, err)
			}
		}
		for _, k := range current[sp.ID] {
			if !kept[k] {
				b.graphDelete(k)
			}
		}
		current[sp.ID] = keys
	}
	b.noteChanges()
	return stored, nil
}

// Delete implements Backend.
func (b *Embedded) Delete(ctx context.Context, id string) (store.Product, error) {
	b.writeMu.Lock()
	defer b.writeMu.Unlock()
	sp, err := b.store.Delete(ctx, id)
	if err != nil {
		return store.Product{}, err
	}
	for _, ph := range sp.Photos {
		b.graphDelete(ph.Key)
	}
	b.noteChanges()
	return sp, nil
}

// graphAdd puts a written photo's vector in the graph, or in the catch-up while there is
// one (the graph gets it from there); the caller holds writeMu and has committed the write.
func (b *Embedded) graphAdd(key index.Key, vec []float32) error {
	c := b.catchUp.Load()
	if c == nil {
		return b.graph.Add(key, vec)
	}
	if len(vec) != b.store.Dim() {
		return fmt.Errorf("%w: got %d, want %d", index.ErrDimension, len(vec), b.store.Dim())
	}
	c.set(key, slices.Clone(vec)) // the caller's slice is not ours to keep
	return nil
}

// graphDelete removes a deleted photo from the graph, or records its deletion in the
// catch-up while there is one; the caller holds writeMu and has committed the write.
func (b *Embedded) graphDelete(key index.Key) {
	if c := b.catchUp.Load(); c != nil {
		c.set(key, nil)
		return
	}
	b.graph.Delete(key)
}

// Search implements Backend on the graph, testing opt.Admit on every photo it visits; while
// the graph catches up, the photos it does not hold yet are scored exactly beside it.
func (b *Embedded) Search(ctx context.Context, q []float32, n int, opt PhotoQuery) ([]index.Neighbor, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if c := b.catchUp.Load(); c != nil {
		return c.search(q, n, opt.EF, opt.Admit), nil
	}
	return b.graph.Search(q, n, index.SearchOptions{EF: opt.EF, Filter: opt.Admit}), nil
}

// Vectors implements Backend from the graph's copies (the store's for a quantised graph),
// or the catch-up's for a photo the graph does not hold yet.
func (b *Embedded) Vectors(_ context.Context, keys []index.Key) ([][]float32, error) {
	c := b.catchUp.Load()
	out := make([][]float32, len(keys))
	for i, k := range keys {
		if c != nil {
			// The catch-up first: a key it forgets was applied to the graph before.
			if vec, pending := c.vector(k); pending {
				out[i] = slices.Clone(vec)
				continue
			}
		}
		out[i], _ = b.graph.Vector(k)
	}
	return out, nil
}

// KeptPhoto implements Backend.
func (b *Embedded) KeptPhoto(_ context.Context, key index.Key) ([]byte, error) {
	return b.store.KeptPhoto(key)
}

// Setting implements Backend.
func (b *Embedded) Setting(_ context.Context, name string) ([]byte, error) {
	return b.store.Setting(name)
}

// SetSetting implements Backend.
func (b *Embedded) SetSetting(ctx context.Context, name string, value []byte) error {
	return b.store.SetSetting(ctx, name, value)
}

// Decisions implements Backend.
func (b *Embedded) Decisions(context.Context) ([]store.Decision, error) { return b.store.Decisions() }

// PutDecisions implements Backend.
func (b *Embedded) PutDecisions(ctx context.Context, ds []store.Decision) ([]store.Decision, error) {
	return b.store.PutDecisions(ctx, ds)
}

// DeleteDecision implements Backend.
func (b *Embedded) DeleteDecision(ctx context.Context, a, bID string) error {
	return b.store.DeleteDecision(ctx, a, bID)
}

// Graph is the backend's HNSW graph, for its parameters and size. While the graph catches up
// after a start (CatchingUp > 0) it lacks the latest state of that many photos.
func (b *Embedded) Graph() *index.HNSW { return b.graph }

// CatchingUp counts the photos whose latest state the graph does not hold yet, while it
// catches up with the store after a start; 0 once it holds everything.
func (b *Embedded) CatchingUp() int {
	c := b.catchUp.Load()
	if c == nil {
		return 0
	}
	pending, _, _ := c.progress()
	return pending
}

// SnapshotState reports the store's sequence number and the last snapshot's seq and time.
func (b *Embedded) SnapshotState() (storeSeq, snapSeq uint64, at time.Time) {
	b.snapInfoMu.Lock()
	defer b.snapInfoMu.Unlock()
	return b.store.Seq(), b.snapshotSeq, b.snapshotTime
}

// SaveSnapshot writes the graph to the data directory if it changed since the last save,
// then lets the store forget the change log the snapshot covers. While the graph catches up
// after a start it saves nothing: the graph does not hold every change up to the store's
// seq, and the last snapshot with the store's log still describes everything.
func (b *Embedded) SaveSnapshot(ctx context.Context) error {
	_, err := b.saveSnapshot(ctx)
	return err
}

// saveSnapshot is SaveSnapshot; saved says whether it wrote a snapshot.
func (b *Embedded) saveSnapshot(ctx context.Context) (saved bool, err error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	b.snapMu.Lock()
	defer b.snapMu.Unlock()
	// Every write with a seq <= this one is already in the graph (writes hold writeMu across
	// store and graph, and a catch-up ends under writeMu). Later writes may or may not land
	// in the file; replaying them on the next open is idempotent, so the snapshot stays
	// correct either way.
	b.writeMu.Lock()
	seq := b.store.Seq()
	catchingUp := b.catchUp.Load() != nil
	b.writeMu.Unlock()
	if catchingUp {
		b.log.Debug("graph snapshot not saved: the graph is still catching up with the store", "store_seq", seq)
		return false, nil
	}
	b.snapInfoMu.Lock()
	unchanged := seq == b.snapshotSeq && !b.snapshotTime.IsZero()
	b.snapInfoMu.Unlock()
	if unchanged {
		return false, nil
	}
	start := time.Now()
	// The store holds every live photo's vector: the file need not.
	info := index.SnapshotInfo{Seq: seq, Tag: b.store.Generation(), VectorsOutside: true}
	if err := b.graph.SaveSnapshot(b.snapshotFile, info); err != nil {
		return false, fmt.Errorf("catalog: save graph snapshot: %w", err)
	}
	b.snapInfoMu.Lock()
	b.snapshotSeq, b.snapshotTime = seq, time.Now()
	b.snapInfoMu.Unlock()
	b.log.Info("graph snapshot saved", "seq", seq, "photos", b.graph.Len(),
		"took", time.Since(start).Round(time.Millisecond))
	if seq-b.truncatedSeq >= truncateLogAfter {
		if err := b.store.TruncateLog(seq); err != nil {
			b.log.Warn("store change log not truncated", "seq", seq, "err", err)
		} else {
			b.truncatedSeq = seq
		}
	}
	return true, nil
}

// Backup writes a consistent copy of the store file to w; see Catalog.Backup.
func (b *Embedded) Backup(ctx context.Context, w io.Writer) (BackupInfo, error) {
	info, err := b.store.BackupWithInfo(ctxWriter{ctx: ctx, w: w})
	if err != nil {
		return BackupInfo{}, err
	}
	return BackupInfo(info), nil
}

// stopBackground ends the work the backend runs beside its callers: the periodic saves, a
// catch-up of the graph (its workers finish the photo each is applying) and the graph's
// compactions.
func (b *Embedded) stopBackground() {
	if b.stopPeriodic != nil {
		b.stopPeriodic()
		<-b.periodicDone
	}
	if c := b.catchUp.Load(); c != nil {
		c.stop()
	}
	b.graph.Close()
}

// Close stops the periodic saves, a catch-up of the graph (its workers finish the photo each
// is applying) and the graph's compactions (one running is abandoned: it reads the store, and
// its tombstones are saved with the graph), saves the graph snapshot if it changed, unless
// the catch-up was not over (the last snapshot and the store's log, which no save truncated
// meanwhile, still describe everything), and closes the store.
func (b *Embedded) Close() error {
	b.stopBackground()
	saveErr := b.SaveSnapshot(context.Background())
	closeErr := b.store.Close()
	if closeErr != nil {
		closeErr = fmt.Errorf("catalog: close store: %w", closeErr)
	}
	return errors.Join(saveErr, closeErr)
}
