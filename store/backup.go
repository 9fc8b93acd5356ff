package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"
)

// maxCheckErrors bounds how many bbolt consistency errors Check reports.
const maxCheckErrors = 10

// Backup writes a consistent copy of the whole file to w while the store keeps serving
// (one read transaction: writers continue, the copy shows the state at its start).
func (s *Store) Backup(w io.Writer) (int64, error) {
	info, err := s.BackupWithInfo(w)
	return info.Bytes, err
}

// BackupInfo describes the state a backup captured.
type BackupInfo struct {
	// Bytes is the size of the copy.
	Bytes int64
	// Seq is the store's sequence number in the copy: every write acknowledged with a
	// sequence number up to it is inside, none after it.
	Seq uint64
	// Products and Photos count what the copy holds.
	Products int
	Photos   int
}

// BackupWithInfo is Backup that also reports what the copy holds, read in the same
// transaction as the bytes. The read transaction stays open until w has taken every byte,
// so a slow w holds it longer (writers still proceed; the file may grow meanwhile, because
// pages the copy still shows cannot be reused).
func (s *Store) BackupWithInfo(w io.Writer) (BackupInfo, error) {
	var info BackupInfo
	err := s.view(func(tx *bolt.Tx) error {
		m, err := readMeta(tx)
		if err != nil {
			return err
		}
		info.Seq, info.Products, info.Photos = m.seq, int(m.count), int(m.photos)
		info.Bytes, err = tx.WriteTo(w)
		return err
	})
	if err != nil {
		return info, fmt.Errorf("store: backup: %w", err)
	}
	return info, nil
}

// BackupFile writes a backup to path atomically: a temporary file beside it, fsynced, then
// renamed over path, so path holds either the old backup or the complete new one.
func (s *Store) BackupFile(path string) (int64, error) {
	var n int64
	err := writeAtomically(path, func(f *os.File) error {
		var err error
		n, err = s.Backup(f)
		return err
	})
	return n, err
}

// writeAtomically fills a temporary file beside path with fill, fsyncs it, renames it over
// path and fsyncs the directory.
func writeAtomically(path string, fill func(*os.File) error) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("store: temporary file for %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err = fill(f); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("store: sync %s: %w", tmp, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("store: close %s: %w", tmp, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("store: rename into %s: %w", path, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("store: open dir %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("store: sync dir %s: %w", dir, err)
	}
	return nil
}

// Check runs bbolt's page-level consistency check and then the store's own invariants
// (every item decodes, keys, vectors and ids map one to one, counts and the log agree with
// meta). It reads every record, so it costs a full pass; writers wait while it runs,
// because bbolt's check is only safe against concurrent writers inside a write transaction.
func (s *Store) Check() error {
	tx, err := s.db.Begin(!s.db.IsReadOnly())
	if err != nil {
		return closedErr(fmt.Errorf("store: check: %w", err))
	}
	defer func() { _ = tx.Rollback() }()
	return checkTx(tx, s.dim)
}

// checkTx walks the store's own records first, on this goroutine with faults turned into
// panics and recovered: a damaged page can point past the end of the file, and touching it
// would otherwise kill the process. bbolt's check, which runs on a goroutine of its own, then
// only meets pages that walk has already read.
func checkTx(tx *bolt.Tx, dim int) error {
	if err := recoverFaults(func() error { return checkInvariants(tx, dim) }); err != nil {
		return err
	}
	var errs []error
	for err := range tx.Check() {
		if len(errs) < maxCheckErrors {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: bbolt check: %w", ErrCorrupt, errors.Join(errs...))
	}
	return nil
}

// recoverFaults runs fn, turning a memory fault or a panic inside bbolt into ErrCorrupt.
func recoverFaults(fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: reading the file failed: %v", ErrCorrupt, r)
		}
	}()
	return fn()
}

func checkInvariants(tx *bolt.Tx, dim int) error {
	for _, name := range allBuckets {
		if tx.Bucket(name) == nil {
			return fmt.Errorf("%w: bucket %q missing", ErrCorrupt, name)
		}
	}
	m, err := readMeta(tx)
	if err != nil {
		return err
	}
	if dim == 0 {
		dim = m.dim
	}
	if m.dim != dim {
		return fmt.Errorf("%w: meta dim %d, expected %d", ErrCorrupt, m.dim, dim)
	}
	keys, vectors, kept := tx.Bucket(bucketKeys), tx.Bucket(bucketVectors), tx.Bucket(bucketKept)
	categories := make(map[string]uint64)
	var products, photos, keptPhotos, keptBytes uint64
	err = tx.Bucket(bucketProducts).ForEach(func(id, raw []byte) error {
		p, err := decodeProduct(string(id), raw)
		if err != nil {
			return err
		}
		for _, ph := range p.Photos {
			if ph.Key == 0 || ph.Key >= m.nextKey {
				return fmt.Errorf("%w: product %q photo %q has key %d, next key is %d", ErrCorrupt, id, ph.ID, ph.Key, m.nextKey)
			}
			k := keyBytes(ph.Key)
			if back := keys.Get(k); string(back) != string(id) {
				return fmt.Errorf("%w: key %d maps to %q, not %q", ErrCorrupt, ph.Key, back, id)
			}
			// Decoding verifies the checksum, which also touches every overflow page.
			vec, err := decodeVector(vectors.Get(k), dim)
			if err != nil {
				return fmt.Errorf("product %q photo %q: %w", id, ph.ID, err)
			}
			for i, x := range vec {
				if f := float64(x); math.IsNaN(f) || math.IsInf(f, 0) {
					return fmt.Errorf("%w: product %q photo %q vector element %d is %v", ErrCorrupt, id, ph.ID, i, x)
				}
			}
			if raw := kept.Get(k); raw != nil {
				jpeg, err := decodeKept(raw)
				if err != nil {
					return fmt.Errorf("product %q photo %q: %w", id, ph.ID, err)
				}
				if len(jpeg) != ph.KeptBytes {
					return fmt.Errorf("%w: product %q photo %q kept photo is %d bytes, record says %d", ErrCorrupt, id, ph.ID, len(jpeg), ph.KeptBytes)
				}
				keptPhotos++
				keptBytes += uint64(len(jpeg))
			} else if ph.KeptBytes != 0 {
				return fmt.Errorf("%w: product %q photo %q kept photo missing", ErrCorrupt, id, ph.ID)
			}
			photos++
		}
		categories[p.Category]++
		products++
		return nil
	})
	if err != nil {
		return err
	}
	counts := []struct {
		what          string
		found, record uint64
	}{
		{"products", products, m.count},
		{"photos", photos, m.photos},
		{"keys", uint64(keys.Stats().KeyN), photos},
		{"vectors", uint64(vectors.Stats().KeyN), photos},
		{"kept photos", uint64(kept.Stats().KeyN), keptPhotos},
		{"kept photos in meta", keptPhotos, m.keptPhotos},
		{"kept bytes in meta", keptBytes, m.keptBytes},
	}
	for _, c := range counts {
		if c.found != c.record {
			return fmt.Errorf("%w: %d %s, expected %d", ErrCorrupt, c.found, c.what, c.record)
		}
	}
	stored := 0
	err = tx.Bucket(bucketCategories).ForEach(func(k, v []byte) error {
		stored++
		if len(k) < 1 || len(v) != 8 {
			return fmt.Errorf("%w: category record %q", ErrCorrupt, k)
		}
		if counted, recorded := categories[string(k[1:])], binary.BigEndian.Uint64(v); counted != recorded {
			return fmt.Errorf("%w: category %q records %d products, counted %d", ErrCorrupt, k[1:], recorded, counted)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if stored != len(categories) {
		return fmt.Errorf("%w: %d category counts for %d categories", ErrCorrupt, stored, len(categories))
	}
	if err := tx.Bucket(bucketDecisions).ForEach(func(k, v []byte) error {
		_, err := decodeDecision(k, v)
		return err
	}); err != nil {
		return err
	}
	if n := uint64(tx.Bucket(bucketLog).Stats().KeyN); n != m.seq-m.logFloor {
		return fmt.Errorf("%w: log holds %d entries, meta says %d", ErrCorrupt, n, m.seq-m.logFloor)
	}
	return nil
}

// RestoreOptions tunes Restore.
type RestoreOptions struct {
	// Logger receives the restore event; nil discards it. Restore never writes to the
	// process-wide default logger, so a caller's log format and level always apply.
	Logger *slog.Logger
}

// Restore replaces the store file at dst with the backup at backup. The backup is first
// copied beside dst and verified there (it opens, passes Check and holds a store); only then
// is it renamed over dst, so a bad backup leaves dst untouched. The restored file gets a new
// Generation, so anything derived from the old file (a graph snapshot) can tell it is not
// the same history even at an equal sequence number. dst must not be open: Restore fails
// with ErrInUse while a store holds it.
func Restore(backup, dst string, opt RestoreOptions) error {
	logger := opt.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	start := time.Now()
	unlock, err := lockIfExists(dst)
	if err != nil {
		return err
	}
	defer unlock()
	err = writeAtomically(dst, func(f *os.File) error {
		src, err := os.Open(backup)
		if err != nil {
			return err
		}
		defer src.Close()
		if _, err := io.Copy(f, src); err != nil {
			return fmt.Errorf("copy: %w", err)
		}
		// No fsync here: bbolt reads the copy through the page cache, and writeAtomically
		// syncs the file once the new generation is written.
		return verifyAndRegenerate(f.Name())
	})
	if err != nil {
		return fmt.Errorf("store: restore %s from %s: %w", dst, backup, err)
	}
	logger.Info("store restored", "path", dst, "backup", backup, "took", time.Since(start))
	return nil
}

// verifyAndRegenerate opens the copied backup, checks it and gives it a new generation id.
func verifyAndRegenerate(path string) error {
	var db *bolt.DB
	err := recoverFaults(func() error {
		var err error
		db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, FreelistType: bolt.FreelistMapType})
		return err
	})
	if err != nil {
		return fmt.Errorf("%w: backup does not open: %w", ErrCorrupt, err)
	}
	defer db.Close()
	if err := checkFileSize(db); err != nil {
		return err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		m, err := readMeta(tx)
		if err != nil {
			return err
		}
		if m.schema == schemaV1 {
			// A backup of the first release: upgrade it in the same transaction.
			if _, err := migrateV1(tx); err != nil {
				return err
			}
			if m, err = readMeta(tx); err != nil {
				return err
			}
		}
		if err := checkTx(tx, 0); err != nil {
			return err
		}
		if m.schema != SchemaVersion {
			return fmt.Errorf("%w: backup has schema %d, this build reads %d", ErrSchemaVersion, m.schema, SchemaVersion)
		}
		generation, err := newGeneration()
		if err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(metaGeneration, []byte(generation))
	})
	if err != nil {
		return err
	}
	return db.Close()
}
