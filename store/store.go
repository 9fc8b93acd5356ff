package store

import (
	"context"
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

// SchemaVersion is the layout version this code writes and reads.
const SchemaVersion = 1

var (
	bucketMeta       = []byte("meta")
	bucketItems      = []byte("items")
	bucketVectors    = []byte("vectors")
	bucketKeys       = []byte("keys")
	bucketCategories = []byte("categories")
	bucketLog        = []byte("log")

	allBuckets = [][]byte{bucketMeta, bucketItems, bucketVectors, bucketKeys, bucketCategories, bucketLog}

	metaSchema     = []byte("schema")
	metaModel      = []byte("model")
	metaDim        = []byte("dim")
	metaNextKey    = []byte("next_key")
	metaSeq        = []byte("seq")
	metaCount      = []byte("count")
	metaLogFloor   = []byte("log_floor")
	metaGeneration = []byte("generation")
	metaCreated    = []byte("created")
)

// initialMmapBytes is the address space mapped at open (see Open).
const initialMmapBytes = 1 << 30

// Change kinds in the log.
const (
	opUpsert byte = 1
	opDelete byte = 2
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

// Store is an open catalogue file. All methods are safe for concurrent use; writes are
// serialised by bbolt, reads run in parallel with them.
type Store struct {
	db         *bolt.DB
	path       string
	dim        int
	model      string
	generation string
	log        *slog.Logger

	// mu guards the mirror of the last committed meta, so Seq and Count cost no transaction.
	mu    sync.Mutex
	seq   uint64
	count int
}

// Change is one entry of the change log.
type Change struct {
	// Seq is the sequence number of the write.
	Seq uint64
	// Key is the compact key of the item written.
	Key uint32
	// Deleted is true for a delete; false for an insert or a replace.
	Deleted bool
}

// Stats describes a store for monitoring.
type Stats struct {
	// Path is the store file and FileBytes its size on disk.
	Path      string
	FileBytes int64
	// Items counts the products; Seq is the last committed write's sequence number.
	Items int
	Seq   uint64
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
	s := &Store{db: db, path: path, log: logger}
	if err := s.init(opt); err != nil {
		_ = db.Close()
		return nil, err
	}
	logger.Info("store opened", "path", path, "items", s.count, "seq", s.seq,
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
		s.seq, s.count = m.seq, int(m.count)
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
	count    uint64
	logFloor uint64
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
		s.seq, s.count = m.seq, int(m.count)
	}
	s.mu.Unlock()
}

// Path is the file the store lives in; the index snapshot goes beside it.
func (s *Store) Path() string { return s.path }

// Dim is the vector dimension of every item.
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

// Count is the number of items.
func (s *Store) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count
}

// Close closes the file. Further calls fail with ErrClosed.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("store: close %s: %w", s.path, err)
	}
	return nil
}

// view runs fn in a read transaction, mapping bbolt's closed error to ErrClosed.
func (s *Store) view(fn func(tx *bolt.Tx) error) error {
	return closedErr(s.db.View(fn))
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

func keyBytes(key uint32) []byte { return binary.BigEndian.AppendUint32(nil, key) }

func seqBytes(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// categoryKey prefixes a category so "" is a valid bbolt key.
func categoryKey(category string) []byte { return append([]byte{'c'}, category...) }

// Upsert inserts a new item or replaces the item with the same ID, and returns what was
// stored: its Key (new, or the replaced item's), Created (kept on replace) and Updated.
// It has been committed with fsync when it returns.
func (s *Store) Upsert(ctx context.Context, it Item) (Item, error) {
	out, err := s.UpsertBatch(ctx, []Item{it})
	if err != nil {
		return Item{}, err
	}
	return out[0], nil
}

// UpsertBatch upserts many items in one transaction: all are committed or none. Items are
// applied in order, so a later item with the same ID replaces an earlier one. Each item
// counts as one change for Seq and the log. Very large batches hold the write lock for long;
// a few thousand items per call is a good size.
func (s *Store) UpsertBatch(ctx context.Context, items []Item) ([]Item, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	valid := make([]Item, len(items))
	for i, it := range items {
		v, err := validate(it, s.dim)
		if err != nil {
			if len(items) == 1 {
				return nil, err
			}
			return nil, fmt.Errorf("item %d (%q): %w", i, it.ID, err)
		}
		valid[i] = v
	}
	if len(valid) == 0 {
		return nil, nil
	}
	var out []Item
	err := s.update(func(tx *bolt.Tx, m *metaState) error {
		out = make([]Item, 0, len(valid))
		now := time.Now().UTC()
		for i, it := range valid {
			if i%256 == 255 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			stored, err := putItem(tx, m, it, now)
			if err != nil {
				return err
			}
			out = append(out, stored)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func putItem(tx *bolt.Tx, m *metaState, it Item, now time.Time) (Item, error) {
	items := tx.Bucket(bucketItems)
	id := []byte(it.ID)
	if old := items.Get(id); old != nil {
		prev, err := decodeItem(it.ID, old)
		if err != nil {
			return Item{}, err
		}
		it.Key = prev.Key
		it.Created = prev.Created
		if err := addCategory(tx, prev.Category, -1); err != nil {
			return Item{}, err
		}
	} else {
		if m.nextKey == 0 || m.nextKey == ^uint32(0) {
			return Item{}, ErrKeysExhausted
		}
		it.Key = m.nextKey
		m.nextKey++
		m.count++
		if it.Created.IsZero() {
			it.Created = now
		}
	}
	if it.Updated.IsZero() {
		it.Updated = now
	}
	it.Created, it.Updated = it.Created.UTC(), it.Updated.UTC()
	key := keyBytes(it.Key)
	if err := items.Put(id, encodeItem(it)); err != nil {
		return Item{}, fmt.Errorf("store: put item %q: %w", it.ID, err)
	}
	vectors := tx.Bucket(bucketVectors)
	vectors.FillPercent = 1 // keys only grow, so full pages stay full
	if err := vectors.Put(key, encodeVector(it.Vector)); err != nil {
		return Item{}, fmt.Errorf("store: put vector %d: %w", it.Key, err)
	}
	keys := tx.Bucket(bucketKeys)
	keys.FillPercent = 1
	if err := keys.Put(key, id); err != nil {
		return Item{}, fmt.Errorf("store: put key %d: %w", it.Key, err)
	}
	if err := addCategory(tx, it.Category, +1); err != nil {
		return Item{}, err
	}
	if err := appendLog(tx, m, it.Key, opUpsert); err != nil {
		return Item{}, err
	}
	return cloneItem(it), nil
}

func appendLog(tx *bolt.Tx, m *metaState, key uint32, op byte) error {
	m.seq++
	b := tx.Bucket(bucketLog)
	b.FillPercent = 1
	rec := append(keyBytes(key), op)
	if err := b.Put(seqBytes(m.seq), rec); err != nil {
		return fmt.Errorf("store: append log %d: %w", m.seq, err)
	}
	return nil
}

func addCategory(tx *bolt.Tx, category string, delta int64) error {
	b := tx.Bucket(bucketCategories)
	k := categoryKey(category)
	var n int64
	if v := b.Get(k); len(v) == 8 {
		n = int64(binary.BigEndian.Uint64(v))
	}
	n += delta
	if n < 0 {
		return fmt.Errorf("%w: category %q count below zero", ErrCorrupt, category)
	}
	if n == 0 {
		return b.Delete(k)
	}
	return b.Put(k, binary.BigEndian.AppendUint64(nil, uint64(n)))
}

// Delete removes the item with that ID and returns it as it was. ErrNotFound if none.
// Its key is never handed out again.
func (s *Store) Delete(ctx context.Context, id string) (Item, error) {
	if err := ctx.Err(); err != nil {
		return Item{}, err
	}
	if err := ValidateID(id); err != nil {
		return Item{}, err
	}
	var gone Item
	err := s.update(func(tx *bolt.Tx, m *metaState) error {
		it, err := getItem(tx, s.dim, id)
		if err != nil {
			return err
		}
		key := keyBytes(it.Key)
		for _, del := range []struct {
			bucket, key []byte
		}{{bucketItems, []byte(id)}, {bucketVectors, key}, {bucketKeys, key}} {
			if err := tx.Bucket(del.bucket).Delete(del.key); err != nil {
				return fmt.Errorf("store: delete %q from %s: %w", id, del.bucket, err)
			}
		}
		if err := addCategory(tx, it.Category, -1); err != nil {
			return err
		}
		m.count--
		gone = it
		return appendLog(tx, m, it.Key, opDelete)
	})
	if err != nil {
		return Item{}, err
	}
	return gone, nil
}

func getItem(tx *bolt.Tx, dim int, id string) (Item, error) {
	v := tx.Bucket(bucketItems).Get([]byte(id))
	if v == nil {
		return Item{}, fmt.Errorf("%w: id %q", ErrNotFound, id)
	}
	it, err := decodeItem(id, v)
	if err != nil {
		return Item{}, err
	}
	it.Vector, err = decodeVector(tx.Bucket(bucketVectors).Get(keyBytes(it.Key)), dim)
	if err != nil {
		return Item{}, fmt.Errorf("item %q: %w", id, err)
	}
	return it, nil
}

// Get returns the item with that product id, or ErrNotFound.
func (s *Store) Get(id string) (Item, error) {
	var it Item
	err := s.view(func(tx *bolt.Tx) error {
		var err error
		it, err = getItem(tx, s.dim, id)
		return err
	})
	return it, err
}

// GetByKey returns the item with that compact key, or ErrNotFound.
func (s *Store) GetByKey(key uint32) (Item, error) {
	var it Item
	err := s.view(func(tx *bolt.Tx) error {
		id := tx.Bucket(bucketKeys).Get(keyBytes(key))
		if id == nil {
			return fmt.Errorf("%w: key %d", ErrNotFound, key)
		}
		var err error
		it, err = getItem(tx, s.dim, string(id))
		return err
	})
	return it, err
}

// ForEach calls fn for every item in key order (the order ids were first stored), all from
// one consistent read snapshot; an error from fn stops the walk and is returned. Each Item is
// fn's to keep. fn must not call the Store's methods: it runs inside a read transaction, and
// a nested transaction can deadlock against a writer growing the file.
func (s *Store) ForEach(fn func(Item) error) error {
	return s.forEach(true, fn)
}

// ForEachMetadata is ForEach without the vectors (Item.Vector is nil): what a caller that
// only needs metadata reads, without decoding 5 KB per item it would throw away.
func (s *Store) ForEachMetadata(fn func(Item) error) error {
	return s.forEach(false, fn)
}

func (s *Store) forEach(withVectors bool, fn func(Item) error) error {
	return s.view(func(tx *bolt.Tx) error {
		items := tx.Bucket(bucketItems)
		vectors := tx.Bucket(bucketVectors).Cursor()
		kc := tx.Bucket(bucketKeys).Cursor()
		vk, vv := vectors.First()
		for k, id := kc.First(); k != nil; k, id = kc.Next() {
			if vk == nil || string(vk) != string(k) {
				return fmt.Errorf("%w: key %x has no vector", ErrCorrupt, k)
			}
			raw := items.Get(id)
			if raw == nil {
				return fmt.Errorf("%w: key %x maps to missing id %q", ErrCorrupt, k, id)
			}
			it, err := decodeItem(string(id), raw)
			if err != nil {
				return err
			}
			if withVectors {
				if it.Vector, err = decodeVector(vv, s.dim); err != nil {
					return fmt.Errorf("item %q: %w", it.ID, err)
				}
			}
			if err := fn(it); err != nil {
				return err
			}
			vk, vv = vectors.Next()
		}
		return nil
	})
}

// ForEachVector calls fn with every key and vector in key order, without decoding metadata.
// vec is fn's to keep. The same rule as ForEach: fn must not call the Store.
func (s *Store) ForEachVector(fn func(key uint32, vec []float32) error) error {
	return s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketVectors).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if len(k) != 4 {
				return fmt.Errorf("%w: vector key %x", ErrCorrupt, k)
			}
			vec, err := decodeVector(v, s.dim)
			if err != nil {
				return err
			}
			if err := fn(binary.BigEndian.Uint32(k), vec); err != nil {
				return err
			}
		}
		return nil
	})
}

// ChangesSince calls fn, in order, for every change with a sequence number above seq. It
// fails with ErrChangesUnavailable when the log no longer reaches back to seq (TruncateLog)
// or seq is ahead of the store (a snapshot of another history); the caller then rebuilds.
// The changes are read first and fn is called outside any transaction, so fn may call
// GetByKey. An upsert change may name a key deleted by a later change in the same list.
func (s *Store) ChangesSince(seq uint64, fn func(Change) error) error {
	var changes []Change
	err := s.view(func(tx *bolt.Tx) error {
		m, err := readMeta(tx)
		if err != nil {
			return err
		}
		if seq < m.logFloor {
			return fmt.Errorf("%w: log starts after seq %d, asked for changes since %d", ErrChangesUnavailable, m.logFloor, seq)
		}
		if seq > m.seq {
			return fmt.Errorf("%w: seq %d is ahead of the store's %d", ErrChangesUnavailable, seq, m.seq)
		}
		changes = make([]Change, 0, m.seq-seq)
		c := tx.Bucket(bucketLog).Cursor()
		for k, v := c.Seek(seqBytes(seq + 1)); k != nil; k, v = c.Next() {
			if len(k) != 8 || len(v) != 5 || (v[4] != opUpsert && v[4] != opDelete) {
				return fmt.Errorf("%w: log record %x", ErrCorrupt, k)
			}
			changes = append(changes, Change{
				Seq:     binary.BigEndian.Uint64(k),
				Key:     binary.BigEndian.Uint32(v),
				Deleted: v[4] == opDelete,
			})
		}
		if uint64(len(changes)) != m.seq-seq {
			return fmt.Errorf("%w: log holds %d changes after %d, meta says %d", ErrCorrupt, len(changes), seq, m.seq-seq)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, ch := range changes {
		if err := fn(ch); err != nil {
			return err
		}
	}
	return nil
}

// TruncateLog drops the log entries up to and including uptoSeq (clamped to Seq), once a
// saved snapshot covers them. It is not a change: Seq stays as it is.
func (s *Store) TruncateLog(uptoSeq uint64) error {
	return s.update(func(tx *bolt.Tx, m *metaState) error {
		upto := min(uptoSeq, m.seq)
		if upto <= m.logFloor {
			return nil
		}
		b := tx.Bucket(bucketLog)
		var doomed [][]byte
		c := b.Cursor()
		for k, _ := c.First(); k != nil && binary.BigEndian.Uint64(k) <= upto; k, _ = c.Next() {
			doomed = append(doomed, append([]byte(nil), k...))
		}
		for _, k := range doomed {
			if err := b.Delete(k); err != nil {
				return fmt.Errorf("store: truncate log: %w", err)
			}
		}
		m.logFloor = upto
		return nil
	})
}

// CountByCategory returns the number of items per category. The counts are maintained in
// their own bucket by every write, so this reads one small bucket, not every item.
func (s *Store) CountByCategory() (map[string]int, error) {
	counts := make(map[string]int)
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketCategories).ForEach(func(k, v []byte) error {
			if len(k) < 1 || len(v) != 8 {
				return fmt.Errorf("%w: category record %q", ErrCorrupt, k)
			}
			counts[string(k[1:])] = int(binary.BigEndian.Uint64(v))
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return counts, nil
}

// Stats reports the store's size and position.
func (s *Store) Stats() (Stats, error) {
	st := Stats{Path: s.path, Dim: s.dim, ModelIdentity: s.model, Generation: s.generation}
	err := s.view(func(tx *bolt.Tx) error {
		m, err := readMeta(tx)
		if err != nil {
			return err
		}
		st.Items, st.Seq, st.LogEntries = int(m.count), m.seq, m.seq-m.logFloor
		return nil
	})
	if err != nil {
		return Stats{}, err
	}
	info, err := os.Stat(s.path)
	if err != nil {
		return Stats{}, fmt.Errorf("store: stat: %w", err)
	}
	st.FileBytes = info.Size()
	return st, nil
}
