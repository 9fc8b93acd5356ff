package catalog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"lookalike/index"
	"lookalike/store"
)

// Backend is where a catalogue's products live and where their photos' vectors are
// searched. The catalogue keeps what is Lookalike's own above it: embedding, validation,
// unchanged detection, the product -> photos table, ranking options, the duplicate policy and
// clustering. Two implementations exist: the embedded one (a bbolt store, the HNSW graph
// derived from it and the graph's snapshots; OpenEmbedded) and a Weaviate collection
// (package weaviate). Both pass the suite in package catalog/backendtest.
//
// One catalogue writes through a backend at a time; the catalogue serialises its writes, so
// Put and Delete are never called concurrently. Everything else may be called concurrently
// with anything.
type Backend interface {
	// Name says which backend this is ("embedded", "weaviate"), for stats and logs.
	Name() string
	// Identity is the model identity and vector dimension the backend was created for;
	// the catalogue refuses to open a backend made for another model.
	Identity() (model string, dim int)
	// Products calls fn with every product, photos without vectors, until fn fails.
	Products(ctx context.Context, fn func(store.Product) error) error
	// Put stores each product as its whole new state, as store.UpsertBatch documents: a
	// photo with a Vector is stored (under its old key when its photo id was stored in the
	// product, else under a new key), a photo without one keeps its stored vector and kept
	// copy, a stored photo missing from the new state is removed. It returns the products
	// as stored, keys assigned. The whole batch fails or succeeds when the backend can
	// promise that; the catalogue retries a failed batch product by product.
	Put(ctx context.Context, products []store.Product) ([]store.Product, error)
	// Delete removes a product and its photos and returns it as it was (no vectors);
	// an error wrapping store.ErrNotFound if there is none.
	Delete(ctx context.Context, id string) (store.Product, error)
	// Search returns up to n photos nearest to the unit vector q by inner product, best
	// first, with exact scores; only photos the query's filter admits.
	Search(ctx context.Context, q []float32, n int, opt PhotoQuery) ([]index.Neighbor, error)
	// Vectors returns the vectors of photo keys, nil for a key that has none.
	Vectors(ctx context.Context, keys []index.Key) ([][]float32, error)
	// KeptPhoto returns a photo's kept JPEG; an error wrapping store.ErrNotFound if none.
	KeptPhoto(ctx context.Context, key index.Key) ([]byte, error)
	// Setting returns a named setting (nil if unset) and SetSetting stores one durably.
	Setting(ctx context.Context, name string) ([]byte, error)
	SetSetting(ctx context.Context, name string, value []byte) error
	// Decisions returns the duplicate decisions, PutDecisions stores some (normalised,
	// as stored) and DeleteDecision forgets the one about a pair.
	Decisions(ctx context.Context) ([]store.Decision, error)
	PutDecisions(ctx context.Context, ds []store.Decision) ([]store.Decision, error)
	DeleteDecision(ctx context.Context, a, b string) error
	// Close releases the backend; it is called once, after every other call returned.
	Close() error
}

// PhotoQuery says which photos a backend search may return.
type PhotoQuery struct {
	// EF is the search breadth for backends that take one per query (0: their default).
	EF int
	// Filter is the product-level filter, for backends that filter on stored properties.
	Filter Filter
	// Admit is the same filter compiled against the catalogue's product table, nil when
	// it admits everything; for backends that test photos one by one as they visit them
	// (the embedded graph). It is safe for concurrent use and cheap.
	Admit func(index.Key) bool
}

// exhaustiveFilter is implemented by backends whose filtered searches already find the
// admitted photos exactly when a filter admits few (Weaviate switches to a flat scan); the
// catalogue's own exact fallback scan is skipped for them.
type exhaustiveFilter interface {
	FilteredSearchIsExhaustive() bool
}

// snapshotter is implemented by backends with a derived index saved to disk (the embedded
// one): Catalog.SaveSnapshot and the periodic saves call it.
type snapshotter interface {
	SaveSnapshot(ctx context.Context) error
	SnapshotState() (storeSeq, snapSeq uint64, at time.Time)
}

// backuper is implemented by backends that can write a consistent copy of themselves.
type backuper interface {
	Backup(ctx context.Context, w io.Writer) (BackupInfo, error)
}

// Backend errors the edge maps to status codes.
var (
	// ErrUnsupported means the catalogue's backend cannot do what was asked (a file backup
	// of a Weaviate collection, say).
	ErrUnsupported = errors.New("not supported by this backend")
	// ErrUnavailable means the backend could not be reached (no node of a cluster answered);
	// trying again later may succeed.
	ErrUnavailable = errors.New("backend unavailable")
)

// vector returns one photo's vector, nil when the backend has none for the key.
func (c *Catalog) vector(ctx context.Context, key index.Key) ([]float32, error) {
	vs, err := c.backend.Vectors(ctx, []index.Key{key})
	if err != nil {
		return nil, fmt.Errorf("catalog: read vector: %w", err)
	}
	return vs[0], nil
}

// searchPhotos asks the backend for the n photos nearest q that the filter admits.
func (c *Catalog) searchPhotos(ctx context.Context, q []float32, n, ef int, a *admit) ([]index.Neighbor, error) {
	opt := PhotoQuery{EF: max(c.ef(ef), n)}
	if a != nil {
		opt.Filter, opt.Admit = a.filter, a.key
	}
	ns, err := c.backend.Search(ctx, q, n, opt)
	if err != nil {
		return nil, fmt.Errorf("catalog: search: %w", err)
	}
	return ns, nil
}
