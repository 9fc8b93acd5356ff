package catalog

import (
	"context"
	"fmt"
	"log/slog"
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
	// DataDir holds StoreFileName and SnapshotFileName of the embedded backend; it is
	// created if missing. Unused with Backend.
	DataDir string
	// Backend, when set, holds the catalogue instead of the embedded backend in DataDir
	// (Index, SnapshotInterval then do not apply); the catalogue closes it at Close.
	Backend Backend
	// Embedder embeds photos; the catalogue does not close it (its opener does).
	Embedder Embedder
	// Index parameters for a fresh graph.
	Index IndexParams
	// SnapshotInterval saves the graph this often when it changed; 0 disables periodic saves
	// (Close and SaveSnapshot still save).
	SnapshotInterval time.Duration
	// SnapshotChanges saves the graph once this many changes are not in the last snapshot
	// (EmbeddedConfig.SnapshotChanges: 0 is the default, negative never).
	SnapshotChanges int
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
	log        *slog.Logger
	embedder   Embedder
	dim        int
	backend    Backend
	params     IndexParams
	keepPhotos bool

	// ingestSlots bounds the photos analysed for writes at once (maxIngestAnalyses).
	ingestSlots chan struct{}

	// life guards the open/closed state: operations hold it shared, Close exclusively, so
	// Close waits for in-flight calls and later calls see ErrClosed.
	life   sync.RWMutex
	closed bool

	// writeMu serialises writes: planning against the table, the backend write and the
	// table update happen in one order.
	writeMu sync.Mutex

	// metaMu guards byKey (photo key -> its product) and byID (product id -> product).
	metaMu sync.RWMutex
	byKey  map[index.Key]*entry
	byID   map[string]*entry

	// windows keeps recently computed crop windows across scans and checks.
	windows *windowCache
}

// Open opens the catalogue: its backend (cfg.Backend, or the embedded one in cfg.DataDir),
// checked against the embedder's model, and the product table read from it.
func Open(ctx context.Context, cfg Config) (*Catalog, error) {
	if cfg.Embedder == nil {
		return nil, fmt.Errorf("%w: catalog.Config.Embedder is nil", ErrInvalidArgument)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dim := cfg.Embedder.Dim()
	backend := cfg.Backend
	if backend == nil {
		if cfg.DataDir == "" {
			return nil, fmt.Errorf("%w: catalog.Config.DataDir is empty", ErrInvalidArgument)
		}
		b, err := OpenEmbedded(ctx, EmbeddedConfig{
			DataDir: cfg.DataDir, ModelIdentity: cfg.Embedder.Identity(), Dim: dim,
			Index: cfg.Index, SnapshotInterval: cfg.SnapshotInterval, SnapshotChanges: cfg.SnapshotChanges, Logger: log,
		})
		if err != nil {
			return nil, err
		}
		backend = b
	}
	if model, bdim := backend.Identity(); model != cfg.Embedder.Identity() || bdim != dim {
		_ = backend.Close()
		return nil, fmt.Errorf("%w: the catalogue was made with model %q (%d-d), this server runs %q (%d-d)",
			store.ErrModelMismatch, model, bdim, cfg.Embedder.Identity(), dim)
	}
	c := &Catalog{
		log: log, embedder: cfg.Embedder, dim: dim, backend: backend,
		params: cfg.Index.withDefaults(), keepPhotos: cfg.KeepPhotos,
		byKey: make(map[index.Key]*entry), byID: make(map[string]*entry),
		ingestSlots: make(chan struct{}, maxIngestAnalyses),
		windows:     newWindowCache(windowCacheSize),
	}
	start := time.Now()
	if err := backend.Products(ctx, func(p store.Product) error {
		e := entryFromStore(p)
		for _, ph := range e.photos {
			c.byKey[ph.key] = e
		}
		c.byID[e.id] = e
		return nil
	}); err != nil {
		_ = backend.Close()
		return nil, fmt.Errorf("catalog: read products: %w", err)
	}
	log.Info("catalogue open", "products", len(c.byID), "photos", len(c.byKey), "took", time.Since(start).Round(time.Millisecond))
	return c, nil
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

// SaveSnapshot saves the backend's derived index if it has one (the embedded graph) and
// it changed since the last save; other backends persist as they go, and this does nothing.
func (c *Catalog) SaveSnapshot(ctx context.Context) error {
	if err := c.enter(); err != nil {
		return err
	}
	defer c.life.RUnlock()
	if s, ok := c.backend.(snapshotter); ok {
		return s.SaveSnapshot(ctx)
	}
	return ctx.Err()
}

// Close waits for in-flight calls and closes the backend (the embedded one saves its graph
// snapshot if it changed). Later calls return ErrClosed. The embedder is left open.
func (c *Catalog) Close() error {
	c.life.Lock()
	defer c.life.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	return c.backend.Close()
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
