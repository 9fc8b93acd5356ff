package store

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Schema 1 is the layout of the first release: one photo per product. Its buckets were meta,
// items (product id -> itemV1 record, holding the photo's key), vectors (key -> raw
// little-endian float32s, no checksum), keys, categories and log. Schema 2 keeps keys,
// categories and the log as they are (a photo keeps its old key, so a graph snapshot saved
// by the old release stays valid), turns each item into a product with one photo, adds a
// checksum to every vector, and adds the kept-photo bucket.
const (
	schemaV1    = 1
	itemFormat1 = 1
)

var bucketItemsV1 = []byte("items")

// migrate upgrades a schema-1 file to the current schema in one write transaction, so a
// crash at any point leaves either the old file or the new one. A read-only open cannot
// upgrade and is refused with a message saying so.
func (s *Store) migrate(opt Options) error {
	var m fullMeta
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		m, err = readMeta(tx)
		return err
	})
	schema := m.schema
	if err != nil || schema != schemaV1 {
		return err
	}
	if opt.ReadOnly {
		return fmt.Errorf("%w: %s has schema %d; open it once read-write (lookalike serve) to upgrade it to %d",
			ErrSchemaVersion, s.path, schema, SchemaVersion)
	}
	// Refuse another model before upgrading: the upgrade cannot be undone, and an open that
	// fails must leave a file the first release can still read.
	if (opt.ModelIdentity != "" && opt.ModelIdentity != m.model) || (opt.Dim != 0 && opt.Dim != m.dim) {
		return fmt.Errorf("%w: %s was written by model %q (dim %d), opened with model %q (dim %d)",
			ErrModelMismatch, s.path, m.model, m.dim, opt.ModelIdentity, opt.Dim)
	}
	start := time.Now()
	var products int
	err = s.db.Update(func(tx *bolt.Tx) error {
		var err error
		products, err = migrateV1(tx)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: upgrade %s from schema %d: %w", s.path, schema, err)
	}
	s.log.Info("store upgraded", "path", s.path, "from_schema", schema, "to_schema", SchemaVersion,
		"products", products, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// migrateV1 rewrites a schema-1 file inside tx and returns the number of products.
func migrateV1(tx *bolt.Tx) (int, error) {
	m, err := readMeta(tx)
	if err != nil {
		return 0, err
	}
	items, vectors := tx.Bucket(bucketItemsV1), tx.Bucket(bucketVectors)
	if items == nil || vectors == nil || tx.Bucket(bucketKeys) == nil {
		return 0, fmt.Errorf("%w: schema-1 buckets missing", ErrCorrupt)
	}
	products, err := tx.CreateBucket(bucketProducts)
	if err != nil {
		return 0, fmt.Errorf("create products bucket: %w", err)
	}
	for _, b := range [][]byte{bucketKept, bucketDecisions, bucketSettings} {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return 0, fmt.Errorf("create %s bucket: %w", b, err)
		}
	}
	// Read every key first: rewriting values while a cursor walks the bucket invalidates it.
	var keys [][]byte
	c := vectors.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		keys = append(keys, append([]byte(nil), k...))
	}
	vectors.FillPercent = 1
	for _, k := range keys {
		raw := vectors.Get(k)
		if len(raw) != 4*m.dim {
			return 0, fmt.Errorf("%w: vector %x of %d bytes, want %d", ErrCorrupt, k, len(raw), 4*m.dim)
		}
		// decodeRawVector copies: a Put may remap the file under raw.
		if err := vectors.Put(k, encodeVector(decodeRawVector(raw, m.dim))); err != nil {
			return 0, fmt.Errorf("rewrite vector %x: %w", k, err)
		}
	}
	n := 0
	err = items.ForEach(func(id, raw []byte) error {
		p, err := decodeItemV1(string(id), raw)
		if err != nil {
			return err
		}
		// Every item must have its vector (rewritten above with its checksum): an upgrade
		// must not turn a damaged file into one that only fails later.
		vec, err := decodeVector(vectors.Get(keyBytes(p.Photos[0].Key)), m.dim)
		if err != nil {
			return fmt.Errorf("product %q: %w", id, err)
		}
		if p.Photos[0].ID == "" {
			p.Photos[0].ID = VectorPhotoID(vec)
		}
		n++
		return products.Put(append([]byte(nil), id...), encodeProduct(p))
	})
	if err != nil {
		return 0, err
	}
	if uint64(n) != m.count {
		return 0, fmt.Errorf("%w: %d items, meta counts %d", ErrCorrupt, n, m.count)
	}
	if err := tx.DeleteBucket(bucketItemsV1); err != nil {
		return 0, fmt.Errorf("drop items bucket: %w", err)
	}
	st := m.metaState
	st.photos = m.count
	if err := writeMeta(tx, st); err != nil {
		return 0, err
	}
	if err := tx.Bucket(bucketMeta).Put(metaSchema, binary.BigEndian.AppendUint32(nil, SchemaVersion)); err != nil {
		return 0, fmt.Errorf("write schema: %w", err)
	}
	return n, nil
}

// PhotoIDLen is how many hex digits of a hash a derived photo id keeps: 64 bits, so two
// different photos of one product do not collide in practice.
const PhotoIDLen = 16

// BytesPhotoID is the photo id derived from a photo's hex sha256, for photos uploaded
// without an id of their own.
func BytesPhotoID(sha256Hex string) string { return sha256Hex[:PhotoIDLen] }

// VectorPhotoID is the photo id derived from a vector, for photos stored from a ready
// vector without an id of their own: the first hex digits of the sha256 of its
// little-endian float32 bytes (without the store's checksum).
func VectorPhotoID(vec []float32) string {
	enc := encodeVector(vec)
	sum := sha256.Sum256(enc[:len(enc)-4])
	return hex.EncodeToString(sum[:])[:PhotoIDLen]
}

// decodeItemV1 reads a schema-1 item record as a product with one photo, whose id is
// derived from the photo's sha256 (left empty for a vector-only item; the caller derives it
// from the vector). The record layout was:
//
//	byte    format (1)
//	uint32  key, big endian
//	varint  created, updated (unix nanoseconds)
//	string  category, title, image URL, image sha256
//	uvarint attribute count, then name, value strings sorted by name
func decodeItemV1(id string, data []byte) (Product, error) {
	d := decoder{data: data}
	if format := d.byte(); d.err == nil && format != itemFormat1 {
		return Product{}, fmt.Errorf("%w: item %q has unknown format %d", ErrCorrupt, id, format)
	}
	p := Product{ID: id}
	var ph Photo
	ph.Key = d.uint32()
	p.Created = time.Unix(0, d.varint()).UTC()
	p.Updated = time.Unix(0, d.varint()).UTC()
	p.Category = d.string(MaxCategoryBytes)
	p.Title = d.string(MaxTitleBytes)
	ph.ImageURL = d.string(MaxImageURLBytes)
	ph.SHA256 = d.string(64)
	p.Attributes = d.attributes()
	if d.err == nil && len(d.data) != 0 {
		d.fail("trailing bytes")
	}
	if d.err == nil && ph.SHA256 != "" {
		if _, err := hex.DecodeString(ph.SHA256); err != nil || len(ph.SHA256) != 64 {
			d.fail("sha256")
		}
	}
	if d.err != nil {
		return Product{}, fmt.Errorf("%w: item %q: %w", ErrCorrupt, id, d.err)
	}
	if ph.SHA256 != "" {
		ph.ID = BytesPhotoID(ph.SHA256)
	}
	ph.Created, ph.Updated = p.Created, p.Updated
	p.Photos = []Photo{ph}
	return p, nil
}
