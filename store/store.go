package store

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// SchemaVersion is the layout version this code writes. It also reads schema 1 (one photo per
// product), which Open upgrades in place (see migrate.go).
const SchemaVersion = 2

var (
	bucketMeta       = []byte("meta")
	bucketProducts   = []byte("products")
	bucketVectors    = []byte("vectors")
	bucketKeys       = []byte("keys")
	bucketKept       = []byte("kept")
	bucketCategories = []byte("categories")
	bucketLog        = []byte("log")
	bucketDecisions  = []byte("decisions")
	bucketSettings   = []byte("settings")

	allBuckets = [][]byte{bucketMeta, bucketProducts, bucketVectors, bucketKeys, bucketKept, bucketCategories, bucketLog,
		bucketDecisions, bucketSettings}

	metaSchema     = []byte("schema")
	metaModel      = []byte("model")
	metaDim        = []byte("dim")
	metaNextKey    = []byte("next_key")
	metaSeq        = []byte("seq")
	metaCount      = []byte("count")
	metaPhotos     = []byte("photos")
	metaKeptPhotos = []byte("kept_photos")
	metaKeptBytes  = []byte("kept_bytes")
	metaLogFloor   = []byte("log_floor")
	metaGeneration = []byte("generation")
	metaCreated    = []byte("created")
)

// initialMmapBytes is the address space mapped at open (see Open).
const initialMmapBytes = 1 << 30

// Change kinds in the log. Upserts and deletes name a photo key; a metadata change (a
// product's title, category or attributes, or a photo's URL) names key 0, since nothing
// derived from vectors changes.
const (
	opUpsert   byte = 1
	opDelete   byte = 2
	opMetadata byte = 3
)

// Options configures Open.
type Options struct {
	// ModelIdentity is embed's Identity(). A new store records it; an existing store with a
	// different identity is refused with ErrModelMismatch. Empty accepts whatever an existing
	// store holds (for tools that only read or copy a store); a new store needs it.
	ModelIdentity string
	// Dim is the vector dimension, checked like ModelIdentity (0 accepts an existing store's).
	Dim int
	// NoSync skips fsync on commit. Only for benchmarks: a crash can lose acknowledged writes.
	NoSync bool
	// ReadOnly opens the file with a shared lock; every write fails.
	ReadOnly bool
	// LockTimeout bounds the wait for another process's lock on the file (default 2s), after
	// which Open fails with ErrInUse instead of hanging.
	LockTimeout time.Duration
	// Logger receives open events; nil discards them (the store never writes to the
	// process-wide default logger).
	Logger *slog.Logger
}

// defaultTruncateChunk is how many log entries one transaction of TruncateLog deletes: a
// write waiting behind one such transaction waits for a fraction of what a whole ingest's
// log would take.
const defaultTruncateChunk = 1024

// Store is an open catalogue file. All methods are safe for concurrent use; writes are
// serialised by bbolt, reads run in parallel with them.
type Store struct {
	db         *bolt.DB
	path       string
	dim        int
	model      string
	generation string
	log        *slog.Logger

	// truncateChunk is how many log entries one transaction of TruncateLog deletes at most
	// (defaultTruncateChunk; smaller in tests); afterTruncateChunk, when set (tests), is
	// called between those transactions with the log floor reached.
	truncateChunk      int
	afterTruncateChunk func(floor uint64)

	// mu guards the mirror of the last committed meta, so Seq and Count cost no transaction.
	mu     sync.Mutex
	seq    uint64
	count  int
	photos int
}

// Change is one entry of the change log.
type Change struct {
	// Seq is the sequence number of the write.
	Seq uint64
	// Key is the compact key of the photo written; 0 for a metadata-only change.
	Key uint32
	// Deleted is true for a deleted photo; false for an insert or a replace.
	Deleted bool
}

// Metadata reports whether the change touched only metadata (no vector to apply).
func (c Change) Metadata() bool { return c.Key == 0 }

// Stats describes a store for monitoring.
type Stats struct {
	// Path is the store file and FileBytes its size on disk.
	Path      string
	FileBytes int64
	// Products and Photos count what the store holds; Seq is the last committed write's
	// sequence number.
	Products int
	Photos   int
	Seq      uint64
	// KeptPhotos and KeptBytes count the kept photos and their total size.
	KeptPhotos int
	KeptBytes  int64
	// LogEntries counts the change-log records not yet truncated.
	LogEntries uint64
	// Dim, ModelIdentity and Generation are as the methods of the same names report them.
	Dim           int
	ModelIdentity string
	Generation    string
}

// Open opens or creates the store at path.
func Open(path string, opt Options) (*Store, error) {
	start := time.Now()
	logger := opt.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if opt.Dim < 0 {
		return nil, fmt.Errorf("%w: negative dimension %d", ErrInvalidOptions, opt.Dim)
	}
	timeout := opt.LockTimeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	if opt.ReadOnly {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("store: open %s read-only: %w", path, err)
		}
	}
	var db *bolt.DB
	// bbolt reads the freelist while opening and panics on a damaged one.
	err := recoverFaults(func() error {
		var err error
		db, err = bolt.Open(path, 0o600, &bolt.Options{
			Timeout:      timeout,
			NoSync:       opt.NoSync,
			ReadOnly:     opt.ReadOnly,
			FreelistType: bolt.FreelistMapType,
			// Growing the mapping waits for every open read transaction (a backup, a ForEach), so
			// reserve address space up front; it costs no memory until pages are touched.
			InitialMmapSize: initialMmapBytes,
		})
		return err
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s is locked by another process", ErrInUse, path)
	}
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	s := &Store{db: db, path: path, log: logger, truncateChunk: defaultTruncateChunk}
	if err := s.init(opt); err != nil {
		_ = db.Close()
		return nil, err
	}
	logger.Info("store opened", "path", path, "products", s.count, "photos", s.photos, "seq", s.seq,
		"model", s.model, "dim", s.dim, "read_only", opt.ReadOnly, "took", time.Since(start))
	return s, nil
}

// init checks the file and its meta against opt, creating the layout in an empty file.
func (s *Store) init(opt Options) error {
	if err := checkFileSize(s.db); err != nil {
		return err
	}
	// A damaged file can make bbolt read garbage page ids; fail the open instead of crashing.
	return recoverFaults(func() error { return s.initMeta(opt) })
}

func (s *Store) initMeta(opt Options) error {
	var fresh bool
	err := s.db.View(func(tx *bolt.Tx) error {
		fresh = tx.Bucket(bucketMeta) == nil
		if fresh {
			// A bbolt file with other buckets is someone else's data; never write into it.
			return tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
				return fmt.Errorf("%w: %s is a bbolt file but not a catalogue store (bucket %q)", ErrCorrupt, s.path, name)
			})
		}
		return nil
	})
	if err != nil {
		return err
	}
	if fresh {
		if opt.ReadOnly {
			return fmt.Errorf("%w: %s holds no store and is opened read-only", ErrCorrupt, s.path)
		}
		if opt.ModelIdentity == "" || opt.Dim <= 0 {
			return fmt.Errorf("%w: a new store needs ModelIdentity and Dim", ErrInvalidOptions)
		}
		if err := s.create(opt.ModelIdentity, opt.Dim); err != nil {
			return err
		}
	}
	if err := s.migrate(opt); err != nil {
		return err
	}
	return s.db.View(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if tx.Bucket(name) == nil {
				return fmt.Errorf("%w: bucket %q missing", ErrCorrupt, name)
			}
		}
		m, err := readMeta(tx)
		if err != nil {
			return err
		}
		if m.schema != SchemaVersion {
			return fmt.Errorf("%w: %s has schema %d, this build reads %d", ErrSchemaVersion, s.path, m.schema, SchemaVersion)
		}
		if (opt.ModelIdentity != "" && opt.ModelIdentity != m.model) || (opt.Dim != 0 && opt.Dim != m.dim) {
			return fmt.Errorf("%w: %s was written by model %q (dim %d), opened with model %q (dim %d)",
				ErrModelMismatch, s.path, m.model, m.dim, opt.ModelIdentity, opt.Dim)
		}
		s.model, s.dim, s.generation = m.model, m.dim, m.generation
		s.seq, s.count, s.photos = m.seq, int(m.count), int(m.photos)
		return nil
	})
}

func (s *Store) create(model string, dim int) error {
	generation, err := newGeneration()
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("store: create bucket %s: %w", name, err)
			}
		}
		meta := tx.Bucket(bucketMeta)
		puts := []struct{ k, v []byte }{
			{metaSchema, binary.BigEndian.AppendUint32(nil, SchemaVersion)},
			{metaModel, []byte(model)},
			{metaDim, binary.BigEndian.AppendUint32(nil, uint32(dim))},
			{metaGeneration, []byte(generation)},
			{metaCreated, []byte(time.Now().UTC().Format(time.RFC3339Nano))},
		}
		for _, p := range puts {
			if err := meta.Put(p.k, p.v); err != nil {
				return fmt.Errorf("store: write meta: %w", err)
			}
		}
		return writeMeta(tx, metaState{nextKey: 1})
	})
}

func newGeneration() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("store: generation id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// checkFileSize refuses a file shorter than its own meta page says: bbolt would map the
// missing pages and the first read of one would crash the process instead of failing.
func checkFileSize(db *bolt.DB) error {
	info, err := os.Stat(db.Path())
	if err != nil {
		return fmt.Errorf("store: stat %s: %w", db.Path(), err)
	}
	return db.View(func(tx *bolt.Tx) error {
		if tx.Size() > info.Size() {
			return fmt.Errorf("%w: %s is %d bytes but its meta page needs %d (truncated)", ErrCorrupt, db.Path(), info.Size(), tx.Size())
		}
		return nil
	})
}

// metaState is the part of meta that writes change.
type metaState struct {
	nextKey  uint32
	seq      uint64
	count    uint64 // products
	photos   uint64
	logFloor uint64
	// keptPhotos and keptBytes count the kept photos and their size (without checksums).
	keptPhotos uint64
	keptBytes  uint64
}

// fullMeta is everything in the meta bucket.
type fullMeta struct {
	metaState
	schema     uint32
	model      string
	dim        int
	generation string
}

func readMeta(tx *bolt.Tx) (fullMeta, error) {
	b := tx.Bucket(bucketMeta)
	if b == nil {
		return fullMeta{}, fmt.Errorf("%w: meta bucket missing", ErrCorrupt)
	}
	var m fullMeta
	u32 := func(k []byte) uint32 {
		v := b.Get(k)
		if len(v) != 4 {
			return 0
		}
		return binary.BigEndian.Uint32(v)
	}
	u64 := func(k []byte) uint64 {
		v := b.Get(k)
		if len(v) != 8 {
			return 0
		}
		return binary.BigEndian.Uint64(v)
	}
	for _, k := range [][]byte{metaSchema, metaModel, metaDim, metaNextKey, metaSeq, metaCount, metaLogFloor} {
		if b.Get(k) == nil {
			return fullMeta{}, fmt.Errorf("%w: meta %q missing", ErrCorrupt, k)
		}
	}
	m.schema = u32(metaSchema)
	m.model = string(b.Get(metaModel))
	m.dim = int(u32(metaDim))
	m.generation = string(b.Get(metaGeneration))
	m.nextKey = u32(metaNextKey)
	m.seq = u64(metaSeq)
	m.count = u64(metaCount)
	m.photos = u64(metaPhotos)
	m.keptPhotos = u64(metaKeptPhotos)
	m.keptBytes = u64(metaKeptBytes)
	m.logFloor = u64(metaLogFloor)
	if m.dim <= 0 || m.nextKey == 0 {
		return fullMeta{}, fmt.Errorf("%w: meta dim %d next key %d", ErrCorrupt, m.dim, m.nextKey)
	}
	return m, nil
}

func writeMeta(tx *bolt.Tx, m metaState) error {
	b := tx.Bucket(bucketMeta)
	puts := []struct{ k, v []byte }{
		{metaNextKey, binary.BigEndian.AppendUint32(nil, m.nextKey)},
		{metaSeq, binary.BigEndian.AppendUint64(nil, m.seq)},
		{metaCount, binary.BigEndian.AppendUint64(nil, m.count)},
		{metaPhotos, binary.BigEndian.AppendUint64(nil, m.photos)},
		{metaKeptPhotos, binary.BigEndian.AppendUint64(nil, m.keptPhotos)},
		{metaKeptBytes, binary.BigEndian.AppendUint64(nil, m.keptBytes)},
		{metaLogFloor, binary.BigEndian.AppendUint64(nil, m.logFloor)},
	}
	for _, p := range puts {
		if err := b.Put(p.k, p.v); err != nil {
			return fmt.Errorf("store: write meta: %w", err)
		}
	}
	return nil
}

// publish updates the in-memory mirror after a commit. Commits can finish in either order
// relative to this call, so the higher sequence number wins.
func (s *Store) publish(m metaState) {
	s.mu.Lock()
	if m.seq > s.seq {
		s.seq, s.count, s.photos = m.seq, int(m.count), int(m.photos)
	}
	s.mu.Unlock()
}

// Path is the file the store lives in; the index snapshot goes beside it.
func (s *Store) Path() string { return s.path }

// Dim is the vector dimension of every photo.
func (s *Store) Dim() int { return s.dim }

// ModelIdentity is the embedding model identity the store was created for.
func (s *Store) ModelIdentity() string { return s.model }

// Generation is a random id given to the file when it was created and replaced by Restore.
// A snapshot of derived data tagged with it and Seq cannot be mistaken for one of another
// history that happens to reach the same sequence number.
func (s *Store) Generation() string { return s.generation }

// Seq is the sequence number of the last committed write (0 for an empty new store).
func (s *Store) Seq() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seq
}

// Count is the number of products.
func (s *Store) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count
}

// Photos is the number of photos (graph keys) over all products.
func (s *Store) Photos() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.photos
}

// Close closes the file. Further calls fail with ErrClosed.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("store: close %s: %w", s.path, err)
	}
	return nil
}

// view runs fn in a read transaction, mapping bbolt's closed error to ErrClosed.
// A damaged page can make bbolt panic or fault mid-read; recoverFaults turns that into
// ErrCorrupt, so a damaged file is reported, never a crashed process.
func (s *Store) view(fn func(tx *bolt.Tx) error) error {
	return closedErr(recoverFaults(func() error { return s.db.View(fn) }))
}

// update runs fn in a write transaction and publishes the meta fn leaves behind.
func (s *Store) update(fn func(tx *bolt.Tx, m *metaState) error) error {
	var m metaState
	err := s.db.Update(func(tx *bolt.Tx) error {
		full, err := readMeta(tx)
		if err != nil {
			return err
		}
		m = full.metaState
		if err := fn(tx, &m); err != nil {
			return err
		}
		return writeMeta(tx, m)
	})
	if err != nil {
		return closedErr(err)
	}
	s.publish(m)
	return nil
}

func closedErr(err error) error {
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return err
}
