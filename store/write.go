package store

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

func keyBytes(key uint32) []byte { return binary.BigEndian.AppendUint32(nil, key) }

func seqBytes(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// categoryKey prefixes a category so "" is a valid bbolt key.
func categoryKey(category string) []byte { return append([]byte{'c'}, category...) }

// Upsert writes one product; see UpsertBatch.
func (s *Store) Upsert(ctx context.Context, p Product) (Product, error) {
	out, err := s.UpsertBatch(ctx, []Product{p})
	if err != nil {
		return Product{}, err
	}
	return out[0], nil
}

// UpsertBatch writes many products in one transaction: all are committed or none, with
// fsync, before it returns. Each product is the full new state of its id:
//
//   - a photo with a Vector is stored (under its old key when its photo id was already
//     stored in the product, else under a new key), with its kept photo if Kept is set;
//   - a photo without a Vector keeps the vector and kept photo stored under its photo id
//     (ErrInvalidVector if there is none) and takes the new metadata (URL, hashes);
//   - a stored photo whose id is not in the new state is deleted.
//
// Each photo stored or deleted is one change for Seq and the log; a product whose photos
// are all kept is one metadata change. Products are applied in order, so a later product
// with the same id replaces an earlier one. A few thousand products per call is a good size.
func (s *Store) UpsertBatch(ctx context.Context, products []Product) ([]Product, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	valid := make([]Product, len(products))
	for i, p := range products {
		v, err := Validate(p, s.dim)
		if err != nil {
			if len(products) == 1 {
				return nil, err
			}
			return nil, fmt.Errorf("product %d (%q): %w", i, p.ID, err)
		}
		valid[i] = v
	}
	if len(valid) == 0 {
		return nil, nil
	}
	var out []Product
	err := s.update(func(tx *bolt.Tx, m *metaState) error {
		out = make([]Product, 0, len(valid))
		now := time.Now().UTC()
		for i, p := range valid {
			if i%256 == 255 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			stored, err := putProduct(tx, m, s.dim, p, now)
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

func putProduct(tx *bolt.Tx, m *metaState, dim int, p Product, now time.Time) (Product, error) {
	products := tx.Bucket(bucketProducts)
	id := []byte(p.ID)
	var old map[string]Photo
	if raw := products.Get(id); raw != nil {
		prev, err := decodeProduct(p.ID, raw)
		if err != nil {
			return Product{}, err
		}
		p.Created = prev.Created
		old = make(map[string]Photo, len(prev.Photos))
		for _, ph := range prev.Photos {
			old[ph.ID] = ph
		}
		if err := addCategory(tx, prev.Category, -1); err != nil {
			return Product{}, err
		}
	} else {
		m.count++
		if p.Created.IsZero() {
			p.Created = now
		}
	}
	if p.Updated.IsZero() {
		p.Updated = now
	}
	p.Created, p.Updated = p.Created.UTC(), p.Updated.UTC()

	vectors, keys, kept := tx.Bucket(bucketVectors), tx.Bucket(bucketKeys), tx.Bucket(bucketKept)
	vectors.FillPercent, keys.FillPercent = 1, 1 // keys only grow, so full pages stay full
	logged := false
	for i := range p.Photos {
		ph := &p.Photos[i]
		prev, existed := old[ph.ID]
		delete(old, ph.ID)
		if ph.Vector == nil {
			if !existed {
				return Product{}, fmt.Errorf("%w: photo %q of product %q has no vector and none is stored", ErrInvalidVector, ph.ID, p.ID)
			}
			ph.Key, ph.Created, ph.Updated, ph.KeptBytes = prev.Key, prev.Created, prev.Updated, prev.KeptBytes
			continue
		}
		if existed {
			ph.Key, ph.Created = prev.Key, prev.Created
		} else {
			if m.nextKey == 0 || m.nextKey == ^uint32(0) {
				return Product{}, ErrKeysExhausted
			}
			ph.Key = m.nextKey
			m.nextKey++
			m.photos++
			if ph.Created.IsZero() {
				ph.Created = now
			}
		}
		if ph.Updated.IsZero() {
			ph.Updated = now
		}
		ph.Created, ph.Updated = ph.Created.UTC(), ph.Updated.UTC()
		key := keyBytes(ph.Key)
		if err := vectors.Put(key, encodeVector(ph.Vector)); err != nil {
			return Product{}, fmt.Errorf("store: put vector %d: %w", ph.Key, err)
		}
		if err := keys.Put(key, id); err != nil {
			return Product{}, fmt.Errorf("store: put key %d: %w", ph.Key, err)
		}
		if existed && prev.KeptBytes > 0 {
			m.keptPhotos--
			m.keptBytes -= uint64(prev.KeptBytes)
		}
		ph.KeptBytes = len(ph.Kept)
		if len(ph.Kept) > 0 { // an empty one stores none: KeptBytes 0 always means no record
			m.keptPhotos++
			m.keptBytes += uint64(len(ph.Kept))
			if err := kept.Put(key, encodeKept(ph.Kept)); err != nil {
				return Product{}, fmt.Errorf("store: put kept photo %d: %w", ph.Key, err)
			}
		} else if err := kept.Delete(key); err != nil {
			return Product{}, fmt.Errorf("store: delete kept photo %d: %w", ph.Key, err)
		}
		if err := appendLog(tx, m, ph.Key, opUpsert); err != nil {
			return Product{}, err
		}
		logged = true
	}
	for _, gone := range old {
		if err := deletePhoto(tx, m, gone); err != nil {
			return Product{}, err
		}
		logged = true
	}
	if !logged {
		if err := appendLog(tx, m, 0, opMetadata); err != nil {
			return Product{}, err
		}
	}
	if err := products.Put(id, encodeProduct(p)); err != nil {
		return Product{}, fmt.Errorf("store: put product %q: %w", p.ID, err)
	}
	if err := addCategory(tx, p.Category, +1); err != nil {
		return Product{}, err
	}
	return cloneProduct(p), nil
}

// deletePhoto removes one photo's vector, kept photo and key, and logs the delete.
func deletePhoto(tx *bolt.Tx, m *metaState, ph Photo) error {
	k := keyBytes(ph.Key)
	for _, b := range [][]byte{bucketVectors, bucketKeys, bucketKept} {
		if err := tx.Bucket(b).Delete(k); err != nil {
			return fmt.Errorf("store: delete photo %d from %s: %w", ph.Key, b, err)
		}
	}
	m.photos--
	if ph.KeptBytes > 0 {
		m.keptPhotos--
		m.keptBytes -= uint64(ph.KeptBytes)
	}
	return appendLog(tx, m, ph.Key, opDelete)
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

// Delete removes the product with that id and all its photos, and returns it as it was
// (without vectors). ErrNotFound if none. Its photos' keys are never handed out again.
func (s *Store) Delete(ctx context.Context, id string) (Product, error) {
	if err := ctx.Err(); err != nil {
		return Product{}, err
	}
	if err := ValidateID(id); err != nil {
		return Product{}, err
	}
	var gone Product
	err := s.update(func(tx *bolt.Tx, m *metaState) error {
		p, err := getProduct(tx, id)
		if err != nil {
			return err
		}
		for _, ph := range p.Photos {
			if err := deletePhoto(tx, m, ph); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bucketProducts).Delete([]byte(id)); err != nil {
			return fmt.Errorf("store: delete product %q: %w", id, err)
		}
		if err := addCategory(tx, p.Category, -1); err != nil {
			return err
		}
		m.count--
		gone = p
		return nil
	})
	if err != nil {
		return Product{}, err
	}
	return gone, nil
}
