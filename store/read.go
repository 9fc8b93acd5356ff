package store

import (
	"encoding/binary"
	"fmt"
	"os"

	bolt "go.etcd.io/bbolt"
)

func getProduct(tx *bolt.Tx, id string) (Product, error) {
	v := tx.Bucket(bucketProducts).Get([]byte(id))
	if v == nil {
		return Product{}, fmt.Errorf("%w: product %q", ErrNotFound, id)
	}
	return decodeProduct(id, v)
}

// Get returns the product with that id, its photos without vectors, or ErrNotFound.
func (s *Store) Get(id string) (Product, error) {
	var p Product
	err := s.view(func(tx *bolt.Tx) error {
		var err error
		p, err = getProduct(tx, id)
		return err
	})
	return p, err
}

// GetWithVectors is Get with every photo's Vector filled in.
func (s *Store) GetWithVectors(id string) (Product, error) {
	var p Product
	err := s.view(func(tx *bolt.Tx) error {
		var err error
		if p, err = getProduct(tx, id); err != nil {
			return err
		}
		vectors := tx.Bucket(bucketVectors)
		for i := range p.Photos {
			if p.Photos[i].Vector, err = decodeVector(vectors.Get(keyBytes(p.Photos[i].Key)), s.dim); err != nil {
				return fmt.Errorf("product %q photo %q: %w", id, p.Photos[i].ID, err)
			}
		}
		return nil
	})
	return p, err
}

// Vector returns the vector stored under a photo key, or ErrNotFound.
func (s *Store) Vector(key uint32) ([]float32, error) {
	var vec []float32
	err := s.view(func(tx *bolt.Tx) error {
		raw := tx.Bucket(bucketVectors).Get(keyBytes(key))
		if raw == nil {
			return fmt.Errorf("%w: photo key %d", ErrNotFound, key)
		}
		var err error
		vec, err = decodeVector(raw, s.dim)
		if err != nil {
			return fmt.Errorf("photo key %d: %w", key, err)
		}
		return nil
	})
	return vec, err
}

// KeptPhoto returns the kept photo (JPEG) of a photo key, or ErrNotFound when the photo is
// unknown or none was kept.
func (s *Store) KeptPhoto(key uint32) ([]byte, error) {
	var jpeg []byte
	err := s.view(func(tx *bolt.Tx) error {
		raw := tx.Bucket(bucketKept).Get(keyBytes(key))
		if raw == nil {
			return fmt.Errorf("%w: no kept photo under key %d", ErrNotFound, key)
		}
		var err error
		jpeg, err = decodeKept(raw)
		if err != nil {
			return fmt.Errorf("photo key %d: %w", key, err)
		}
		return nil
	})
	return jpeg, err
}

// ForEach calls fn for every product (photos without vectors) in id order, all from one
// consistent read snapshot; an error from fn stops the walk and is returned. Each Product is
// fn's to keep. fn must not call the Store's methods: it runs inside a read transaction, and
// a nested transaction can deadlock against a writer growing the file.
func (s *Store) ForEach(fn func(Product) error) error {
	return s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketProducts).ForEach(func(id, raw []byte) error {
			p, err := decodeProduct(string(id), raw)
			if err != nil {
				return err
			}
			return fn(p)
		})
	})
}

// ForEachVector calls fn with every photo key and vector in key order, without decoding
// metadata. vec is fn's to keep. The same rule as ForEach: fn must not call the Store.
func (s *Store) ForEachVector(fn func(key uint32, vec []float32) error) error {
	return s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketVectors).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if len(k) != 4 {
				return fmt.Errorf("%w: vector key %x", ErrCorrupt, k)
			}
			vec, err := decodeVector(v, s.dim)
			if err != nil {
				return fmt.Errorf("photo key %d: %w", binary.BigEndian.Uint32(k), err)
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
// Vector. An upsert change may name a key deleted by a later change in the same list.
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
			ch, err := decodeChange(k, v)
			if err != nil {
				return err
			}
			changes = append(changes, ch)
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

func decodeChange(k, v []byte) (Change, error) {
	if len(k) != 8 || len(v) != 5 {
		return Change{}, fmt.Errorf("%w: log record %x", ErrCorrupt, k)
	}
	ch := Change{Seq: binary.BigEndian.Uint64(k), Key: binary.BigEndian.Uint32(v), Deleted: v[4] == opDelete}
	switch op := v[4]; {
	case op == opMetadata && ch.Key == 0, (op == opUpsert || op == opDelete) && ch.Key != 0:
		return ch, nil
	}
	return Change{}, fmt.Errorf("%w: log record %x", ErrCorrupt, k)
}

// TruncateLog drops the log entries up to and including uptoSeq (clamped to Seq), once a
// saved snapshot covers them. It is not a change: Seq stays as it is. It deletes them in
// transactions of at most defaultTruncateChunk entries: bbolt has one writer at a time, and
// the first save after a bulk ingest truncates a log as long as the ingest, which in one
// transaction would hold every write back for all of it.
func (s *Store) TruncateLog(uptoSeq uint64) error {
	for {
		var floor, upto uint64
		err := s.update(func(tx *bolt.Tx, m *metaState) error {
			upto = min(uptoSeq, m.seq)
			floor = m.logFloor
			if upto <= floor {
				return nil
			}
			b := tx.Bucket(bucketLog)
			var doomed [][]byte
			c := b.Cursor()
			for k, _ := c.First(); k != nil && binary.BigEndian.Uint64(k) <= upto && len(doomed) < s.truncateChunk; k, _ = c.Next() {
				doomed = append(doomed, append([]byte(nil), k...))
			}
			for _, k := range doomed {
				if err := b.Delete(k); err != nil {
					return fmt.Errorf("store: truncate log: %w", err)
				}
			}
			// The log holds every seq above the floor, so deleting its first entries up to
			// key k leaves it starting after k.
			floor = upto
			if len(doomed) == s.truncateChunk {
				floor = binary.BigEndian.Uint64(doomed[len(doomed)-1])
			}
			m.logFloor = floor
			return nil
		})
		if err != nil || floor >= upto {
			return err
		}
		if s.afterTruncateChunk != nil {
			s.afterTruncateChunk(floor)
		}
	}
}

// CountByCategory returns the number of products per category. The counts are maintained
// in their own bucket by every write, so this reads one small bucket, not every product.
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
		st.Products, st.Photos, st.Seq, st.LogEntries = int(m.count), int(m.photos), m.seq, m.seq-m.logFloor
		st.KeptPhotos, st.KeptBytes = int(m.keptPhotos), int64(m.keptBytes)
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
