package catalog

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"lookalike/embed"
	"lookalike/index"
	"lookalike/store"
)

// File names inside Config.DataDir.
const (
	// StoreFileName is the bbolt file holding products and vectors (the source of truth).
	StoreFileName = "lookalike.db"
	// SnapshotFileName is the saved HNSW graph (derived; rebuilt when missing or damaged).
	SnapshotFileName = "index.hnsw"
)

// Defaults for IndexParams fields left at zero.
const (
	DefaultM              = 16
	DefaultEFConstruction = 200
	DefaultEFSearch       = 64
)

// Embedder turns photo bytes into L2-normalised vectors; *embed.Embedder implements it.
type Embedder interface {
	// Embed returns a photo's vector (queries need nothing else).
	Embed(ctx context.Context, image []byte) ([]float32, error)
	// Analyze returns a photo's vector, perceptual hash and, when asked, its kept copy,
	// all from one decode (what a stored photo needs).
	Analyze(ctx context.Context, image []byte, opt embed.AnalyzeOptions) (embed.Analysis, error)
	// Dim is the vector length and Identity names the model and its preprocessing.
	Dim() int
	Identity() string
}

// IndexParams are the HNSW parameters used when the graph is built from scratch. A loaded
// snapshot keeps the parameters it was built with, except EFSearch, which is a query-time
// default and always comes from here.
type IndexParams struct {
	// M is the number of links per node above layer 0 (layer 0 keeps 2M).
	M int
	// EFConstruction is the candidate-list size while inserting.
	EFConstruction int
	// EFSearch is the candidate-list size of a search that does not ask for one.
	EFSearch int
	// Quantize, when index.QuantizeInt8, keeps one byte per dimension in the graph instead
	// of four and re-scores each search's best candidates on the store's full vectors (read
	// from bbolt's mmapped pages, checksums verified), so the process holds no float32 copy
	// of the vectors. A snapshot saved with another setting is rebuilt at Open.
	Quantize index.Quantization
}

func (p IndexParams) withDefaults() IndexParams {
	if p.M <= 0 {
		p.M = DefaultM
	}
	if p.EFConstruction <= 0 {
		p.EFConstruction = DefaultEFConstruction
	}
	if p.EFSearch <= 0 {
		p.EFSearch = DefaultEFSearch
	}
	return p
}

// Config says where the catalogue lives and how to build it.
type Config struct {
	// DataDir holds StoreFileName and SnapshotFileName; it is created if missing.
	DataDir string
	// Embedder embeds photos; the catalogue does not close it (its opener does).
	Embedder Embedder
	// Index parameters for a fresh graph.
	Index IndexParams
	// SnapshotInterval saves the graph this often when it changed; 0 disables periodic saves
	// (Close and SaveSnapshot still save).
	SnapshotInterval time.Duration
	// KeepPhotos stores each uploaded photo as the model sees it before cropping (a JPEG of
	// the model's resize size), so the catalogue can show it (Photo) and re-embed it later
	// without the original files.
	KeepPhotos bool
	// Logger receives progress and warnings; nil discards them.
	Logger *slog.Logger
}

// entry is the in-memory copy of a product's metadata (everything but the vectors), so that
// filters and results never touch the database. An entry is never changed once published in
// the table: a write publishes a new one.
type entry struct {
	id         string
	category   string
	title      string
	attributes map[string]string
	created    time.Time
	updated    time.Time
	photos     []photoEntry
}

// photoEntry is one photo of an entry.
type photoEntry struct {
	id        string
	key       index.Key
	imageURL  string
	sha256    string
	phash     uint64
	phashMir  uint64 // the hash of the photo mirrored left to right
	hasPHash  bool
	keptBytes int
	created   time.Time
	updated   time.Time
}

func entryFromStore(p store.Product) *entry {
	e := &entry{
		id: p.ID, category: p.Category, title: p.Title, attributes: cloneAttributes(p.Attributes),
		created: p.Created, updated: p.Updated, photos: make([]photoEntry, len(p.Photos)),
	}
	for i, ph := range p.Photos {
		e.photos[i] = photoEntry{
			id: ph.ID, key: ph.Key, imageURL: ph.ImageURL, sha256: ph.SHA256, phash: ph.PHash,
			phashMir: ph.PHashMirror, hasPHash: ph.HasPHash, keptBytes: ph.KeptBytes, created: ph.Created, updated: ph.Updated,
		}
	}
	return e
}

func (e *entry) product() Product {
	p := Product{
		ID: e.id, Category: e.category, Title: e.title, Attributes: cloneAttributes(e.attributes),
		Created: e.created, Updated: e.updated, Photos: make([]Photo, len(e.photos)),
	}
	for i, ph := range e.photos {
		p.Photos[i] = ph.photo()
	}
	return p
}

func (ph photoEntry) photo() Photo {
	return Photo{
		ID: ph.id, ImageURL: ph.imageURL, SHA256: ph.sha256, PHash: ph.phash, HasPHash: ph.hasPHash,
		Kept: ph.keptBytes > 0, KeptBytes: ph.keptBytes, Created: ph.created, Updated: ph.updated,
	}
}

// photo returns the entry's photo under key.
func (e *entry) photo(key index.Key) (photoEntry, bool) {
	for _, ph := range e.photos {
		if ph.key == key {
			return ph, true
		}
	}
	return photoEntry{}, false
}

// Catalog is an open product catalogue. All methods are safe for concurrent use.
type Catalog struct {
	log          *slog.Logger
	embedder     Embedder
	dim          int
	store        *store.Store
	graph        *index.HNSW
	params       IndexParams
	keepPhotos   bool
	snapshotFile string // SnapshotFileName in Config.DataDir

	// ingestSlots bounds the photos analysed for writes at once (maxIngestAnalyses).
	ingestSlots chan struct{}

	// life guards the open/closed state: operations hold it shared, Close exclusively, so
	// Close waits for in-flight calls and later calls see ErrClosed.
	life   sync.RWMutex
	closed bool

	// writeMu serialises store+index writes so the index applies them in store order.
	writeMu sync.Mutex

	// metaMu guards byKey (photo key -> its product) and byID (product id -> product).
	metaMu sync.RWMutex
	byKey  map[index.Key]*entry
	byID   map[string]*entry

	// snapMu serialises snapshot saves. snapInfoMu guards the last snapshot's seq and time,
	// apart from snapMu so that Stats never waits for a save in progress.
	snapMu       sync.Mutex
	snapInfoMu   sync.Mutex
	snapshotSeq  uint64
	snapshotTime time.Time

	stopPeriodic context.CancelFunc
	periodicDone chan struct{}
}

// Open opens (or creates) the catalogue in cfg.DataDir: the store with the embedder's
// identity and dimension, then the graph from its snapshot caught up with the store's change
// log, or rebuilt from the store when the snapshot is missing, stale or damaged.
func Open(ctx context.Context, cfg Config) (*Catalog, error) {
	if cfg.Embedder == nil {
		return nil, fmt.Errorf("%w: catalog.Config.Embedder is nil", ErrInvalidArgument)
	}
	if cfg.DataDir == "" {
		return nil, fmt.Errorf("%w: catalog.Config.DataDir is empty", ErrInvalidArgument)
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
	dim := cfg.Embedder.Dim()
	st, err := store.Open(storePath, store.Options{
		ModelIdentity: cfg.Embedder.Identity(), Dim: dim, Logger: log,
	})
	if errors.Is(err, store.ErrCorrupt) {
		return nil, fmt.Errorf("catalog: the store %s is damaged and cannot be served: stop the server and put back a backup "+
			"(lookalike restore --data %s BACKUP), then start it again; the graph is rebuilt from the restored store: %w",
			storePath, cfg.DataDir, err)
	}
	if err != nil {
		return nil, fmt.Errorf("catalog: open store: %w", err)
	}
	c := &Catalog{
		log: log, embedder: cfg.Embedder, dim: dim, store: st,
		params: cfg.Index.withDefaults(), keepPhotos: cfg.KeepPhotos, snapshotFile: filepath.Join(cfg.DataDir, SnapshotFileName),
		byKey: make(map[index.Key]*entry), byID: make(map[string]*entry),
		ingestSlots: make(chan struct{}, maxIngestAnalyses),
	}
	if err := c.loadIndex(ctx); err != nil {
		_ = st.Close()
		if errors.Is(err, store.ErrCorrupt) {
			return nil, fmt.Errorf("catalog: the store %s is damaged (%w); stop the server and put back a backup "+
				"(lookalike restore --data %s BACKUP), then start it again", storePath, err, cfg.DataDir)
		}
		return nil, err
	}
	if cfg.SnapshotInterval > 0 {
		pctx, cancel := context.WithCancel(context.Background())
		c.stopPeriodic = cancel
		c.periodicDone = make(chan struct{})
		go c.savePeriodically(pctx, cfg.SnapshotInterval)
	}
	return c, nil
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
	// Rare (a store gone or emptied), so reading the whole snapshot to count it is fine.
	graph, info, err := index.LoadSnapshot(snapPath)
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

func (c *Catalog) newGraph() *index.HNSW {
	cfg := index.Config{
		Metric: index.InnerProduct, M: c.params.M,
		EFConstruction: c.params.EFConstruction, EFSearch: c.params.EFSearch, Logger: c.log,
		Quantize: c.params.Quantize,
	}
	if c.params.Quantize != index.QuantizeNone {
		cfg.Vectors = c.storeVector
	}
	return index.NewHNSW(c.dim, cfg)
}

// storeVector is the full-vector source of a quantised graph: the store's copy of a photo's
// vector, nil when the store has none (the graph then skips the candidate). The graph calls it
// during searches and writes, never inside a store transaction of ours.
func (c *Catalog) storeVector(k index.Key) []float32 {
	v, err := c.store.Vector(k)
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			c.log.Warn("cannot read a photo's vector from the store", "key", k, "err", err)
		}
		return nil
	}
	return v
}

// loadIndex fills the metadata table from the store and brings the graph up to the store's
// state. A bad snapshot is logged and replaced by a rebuild: it never stops the start.
func (c *Catalog) loadIndex(ctx context.Context) error {
	start := time.Now()
	graph, snapSeq, ok := c.loadSnapshot()
	if ok {
		if err := c.replay(graph, snapSeq); err != nil {
			c.log.Warn("graph snapshot cannot be caught up with the store; rebuilding", "err", err)
			ok = false
		}
	}
	if err := c.store.ForEach(func(p store.Product) error {
		e := entryFromStore(p)
		for _, ph := range e.photos {
			c.byKey[ph.key] = e
		}
		c.byID[e.id] = e
		return ctx.Err()
	}); err != nil {
		return fmt.Errorf("catalog: read store: %w", err)
	}
	if ok && graph.Len() != len(c.byKey) {
		c.log.Warn("graph snapshot disagrees with the store; rebuilding",
			"graph_photos", graph.Len(), "store_photos", len(c.byKey))
		ok = false
	}
	if ok {
		c.graph = graph
		c.snapshotSeq = snapSeq
		if st, err := os.Stat(c.snapshotFile); err == nil {
			c.snapshotTime = st.ModTime()
		}
		c.log.Info("graph loaded from snapshot", "photos", graph.Len(), "products", len(c.byID), "snapshot_seq", snapSeq,
			"store_seq", c.store.Seq(), "took", time.Since(start).Round(time.Millisecond))
		return nil
	}
	graph, err := c.rebuild(ctx)
	if err != nil {
		return err
	}
	c.graph = graph
	return nil
}

// loadSnapshot reads the saved graph if there is a usable one. A snapshot belongs to one
// store history, named by the store's generation: a store restored from a backup (or from
// another data directory) gets a new generation, and its sequence numbers say nothing about
// a graph saved from another history even when they are equal.
func (c *Catalog) loadSnapshot() (*index.HNSW, uint64, bool) {
	opt := index.LoadOptions{Logger: c.log}
	if c.params.Quantize != index.QuantizeNone {
		opt.Vectors = c.storeVector
	}
	graph, info, err := index.LoadSnapshotWith(c.snapshotFile, opt)
	seq := info.Seq
	switch {
	case errors.Is(err, fs.ErrNotExist):
		c.log.Info("no graph snapshot; building the graph from the store")
		return nil, 0, false
	case err != nil:
		c.log.Warn("graph snapshot unusable; rebuilding from the store", "path", c.snapshotFile, "err", err)
		return nil, 0, false
	case info.Tag != c.store.Generation():
		c.log.Warn("graph snapshot was saved from another store history (restored store?); rebuilding",
			"snapshot_generation", info.Tag, "store_generation", c.store.Generation(), "snapshot_seq", seq, "store_seq", c.store.Seq())
		return nil, 0, false
	case graph.Dim() != c.dim:
		c.log.Warn("graph snapshot has another dimension; rebuilding", "snapshot_dim", graph.Dim(), "dim", c.dim)
		return nil, 0, false
	case graph.Config().Quantize != c.params.Quantize:
		c.log.Info("graph snapshot has another quantisation; rebuilding",
			"snapshot_quantize", graph.Config().Quantize.String(), "quantize", c.params.Quantize.String())
		return nil, 0, false
	case seq > c.store.Seq():
		c.log.Warn("graph snapshot is newer than the store (store restored from a backup?); rebuilding",
			"snapshot_seq", seq, "store_seq", c.store.Seq())
		return nil, 0, false
	}
	return graph, seq, true
}

// replay applies the store changes made after the snapshot was taken.
func (c *Catalog) replay(graph *index.HNSW, since uint64) error {
	n := 0
	err := c.store.ChangesSince(since, func(ch store.Change) error {
		n++
		switch {
		case ch.Metadata():
			return nil // the graph holds no metadata
		case ch.Deleted:
			graph.Delete(ch.Key)
			return nil
		}
		vec, err := c.store.Vector(ch.Key)
		if errors.Is(err, store.ErrNotFound) {
			// Deleted again later; its own change record follows, but be safe.
			graph.Delete(ch.Key)
			return nil
		}
		if err != nil {
			return err
		}
		return graph.Add(ch.Key, vec)
	})
	if err != nil {
		return err
	}
	if n > 0 {
		c.log.Info("graph snapshot caught up with the store", "changes", n)
	}
	return nil
}

// rebuild builds a fresh graph from every vector in the store.
func (c *Catalog) rebuild(ctx context.Context) (*index.HNSW, error) {
	graph := c.newGraph()
	total := len(c.byKey)
	start, last := time.Now(), time.Now()
	c.log.Info("building graph from store", "photos", total, "m", c.params.M, "ef_construction", c.params.EFConstruction)
	done := 0
	// The metadata table is already filled, so this pass reads only keys and vectors.
	err := c.store.ForEachVector(func(key uint32, vec []float32) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := graph.Add(key, vec); err != nil {
			return fmt.Errorf("add key %d: %w", key, err)
		}
		done++
		if time.Since(last) >= 2*time.Second {
			last = time.Now()
			c.log.Info("building graph", "done", done, "photos", total,
				"elapsed", time.Since(start).Round(time.Second))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("catalog: rebuild graph: %w", err)
	}
	c.log.Info("graph built", "photos", done, "took", time.Since(start).Round(time.Millisecond))
	return graph, nil
}

func (c *Catalog) savePeriodically(ctx context.Context, every time.Duration) {
	defer close(c.periodicDone)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := c.SaveSnapshot(ctx); err != nil && !errors.Is(err, ErrClosed) {
				c.log.Warn("periodic graph snapshot failed", "err", err)
			}
		}
	}
}

// enter marks the start of an operation; the caller must call c.life.RUnlock when done.
func (c *Catalog) enter() error {
	c.life.RLock()
	if c.closed {
		c.life.RUnlock()
		return ErrClosed
	}
	return nil
}

// SaveSnapshot writes the graph to the data directory if it changed since the last save,
// then lets the store forget the change log the snapshot covers.
func (c *Catalog) SaveSnapshot(ctx context.Context) error {
	if err := c.enter(); err != nil {
		return err
	}
	defer c.life.RUnlock()
	return c.saveSnapshot(ctx)
}

func (c *Catalog) saveSnapshot(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.snapMu.Lock()
	defer c.snapMu.Unlock()
	// Every write with a seq <= this one is already in the graph (writes hold writeMu across
	// store and index). Later writes may or may not land in the file; replaying them on the
	// next open is idempotent, so the snapshot stays correct either way.
	c.writeMu.Lock()
	seq := c.store.Seq()
	c.writeMu.Unlock()
	c.snapInfoMu.Lock()
	unchanged := seq == c.snapshotSeq && !c.snapshotTime.IsZero()
	c.snapInfoMu.Unlock()
	if unchanged {
		return nil
	}
	start := time.Now()
	if err := c.graph.SaveSnapshot(c.snapshotFile, index.SnapshotInfo{Seq: seq, Tag: c.store.Generation()}); err != nil {
		return fmt.Errorf("catalog: save graph snapshot: %w", err)
	}
	c.snapInfoMu.Lock()
	c.snapshotSeq, c.snapshotTime = seq, time.Now()
	c.snapInfoMu.Unlock()
	c.log.Info("graph snapshot saved", "seq", seq, "photos", c.graph.Len(),
		"took", time.Since(start).Round(time.Millisecond))
	if err := c.store.TruncateLog(seq); err != nil {
		c.log.Warn("store change log not truncated", "seq", seq, "err", err)
	}
	return nil
}

// Close waits for in-flight calls, saves the graph snapshot if it changed and closes the
// store. Later calls return ErrClosed. The embedder is left open.
func (c *Catalog) Close() error {
	if c.stopPeriodic != nil {
		c.stopPeriodic()
		<-c.periodicDone
	}
	c.life.Lock()
	defer c.life.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	saveErr := c.saveSnapshot(context.Background())
	closeErr := c.store.Close()
	if closeErr != nil {
		closeErr = fmt.Errorf("catalog: close store: %w", closeErr)
	}
	return errors.Join(saveErr, closeErr)
}

// Dim is the embedding dimension.
func (c *Catalog) Dim() int { return c.dim }

// Len counts the products.
func (c *Catalog) Len() int {
	c.metaMu.RLock()
	defer c.metaMu.RUnlock()
	return len(c.byID)
}

func cloneAttributes(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
