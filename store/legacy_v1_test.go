package store

// The first release's file format (schema 1), written here the way that release wrote it, so
// the upgrade can be tested against files of every shape and size without the old code.

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// itemV1 is one item of schema 1: a product with exactly one photo and no photo id.
type itemV1 struct {
	ID         string
	Key        uint32
	Created    time.Time
	Updated    time.Time
	Category   string
	Title      string
	ImageURL   string
	SHA256     string
	Attributes map[string]string
	Vector     []float32
}

// encodeItemV1 is the first release's encodeItem:
//
//	byte    format (1)
//	uint32  key, big endian
//	varint  created, updated (unix nanoseconds)
//	string  category, title, image URL, image sha256  (uvarint length + bytes)
//	uvarint attribute count, then name, value strings sorted by name
func encodeItemV1(it itemV1) []byte {
	b := []byte{itemFormat1}
	b = binary.BigEndian.AppendUint32(b, it.Key)
	b = binary.AppendVarint(b, it.Created.UnixNano())
	b = binary.AppendVarint(b, it.Updated.UnixNano())
	for _, s := range []string{it.Category, it.Title, it.ImageURL, it.SHA256} {
		b = appendString(b, s)
	}
	b = binary.AppendUvarint(b, uint64(len(it.Attributes)))
	for _, k := range slices.Sorted(maps.Keys(it.Attributes)) {
		b = appendString(b, k)
		b = appendString(b, it.Attributes[k])
	}
	return b
}

// encodeVectorV1 is schema 1's vector: raw little-endian float32s, no checksum.
func encodeVectorV1(v []float32) []byte {
	b := make([]byte, 0, 4*len(v))
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return b
}

// storeV1 is the content of a schema-1 file, changed by the first release's write rules:
// a new id takes the next key, a replace keeps key and Created, a delete never frees a key,
// and every change is one sequence number and one log record.
type storeV1 struct {
	model      string
	dim        int
	generation string
	nextKey    uint32
	seq        uint64
	logFloor   uint64
	items      map[string]itemV1
	log        []Change // the changes after logFloor
}

func newStoreV1(dim int, generation string) *storeV1 {
	return &storeV1{model: testModel, dim: dim, generation: generation, nextKey: 1, items: map[string]itemV1{}}
}

func (h *storeV1) upsert(it itemV1) {
	if old, ok := h.items[it.ID]; ok {
		it.Key, it.Created = old.Key, old.Created
	} else {
		it.Key = h.nextKey
		h.nextKey++
	}
	h.items[it.ID] = it
	h.seq++
	h.log = append(h.log, Change{Seq: h.seq, Key: it.Key})
}

func (h *storeV1) delete(id string) {
	it, ok := h.items[id]
	if !ok {
		panic("delete of an absent item " + id)
	}
	delete(h.items, id)
	h.seq++
	h.log = append(h.log, Change{Seq: h.seq, Key: it.Key, Deleted: true})
}

func (h *storeV1) truncateLog(upto uint64) {
	for len(h.log) > 0 && h.log[0].Seq <= upto {
		h.log = h.log[1:]
	}
	h.logFloor = upto
}

// write creates a schema-1 file at path holding h, as the first release laid it out.
func (h *storeV1) write(t testing.TB, path string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	u32 := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
	u64 := func(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
	err = db.Update(func(tx *bolt.Tx) error {
		b := map[string]*bolt.Bucket{}
		for _, name := range []string{"meta", "items", "vectors", "keys", "categories", "log"} {
			var err error
			if b[name], err = tx.CreateBucket([]byte(name)); err != nil {
				return err
			}
		}
		meta := []struct {
			k string
			v []byte
		}{
			{"schema", u32(schemaV1)}, {"model", []byte(h.model)}, {"dim", u32(uint32(h.dim))},
			{"next_key", u32(h.nextKey)}, {"seq", u64(h.seq)}, {"count", u64(uint64(len(h.items)))},
			{"log_floor", u64(h.logFloor)}, {"generation", []byte(h.generation)},
			{"created", []byte("2025-03-04T05:06:07.123456789Z")},
		}
		for _, m := range meta {
			if err := b["meta"].Put([]byte(m.k), m.v); err != nil {
				return err
			}
		}
		categories := map[string]uint64{}
		for _, it := range h.items {
			if err := b["items"].Put([]byte(it.ID), encodeItemV1(it)); err != nil {
				return err
			}
			if err := b["vectors"].Put(u32(it.Key), encodeVectorV1(it.Vector)); err != nil {
				return err
			}
			if err := b["keys"].Put(u32(it.Key), []byte(it.ID)); err != nil {
				return err
			}
			categories[it.Category]++
		}
		for c, n := range categories {
			if err := b["categories"].Put(append([]byte{'c'}, c...), u64(n)); err != nil {
				return err
			}
		}
		for _, c := range h.log {
			op := byte(1)
			if c.Deleted {
				op = 2
			}
			if err := b["log"].Put(u64(c.Seq), append(u32(c.Key), op)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// historyV1 is a schema-1 store after n inserts, some replaces and deletes, a few inserts
// after them, and a truncated log: items with and without sha256 (the upgrade derives their
// photo ids differently), with and without attributes, in the "" category and others.
func historyV1(rng *rand.Rand, n, dim int) *storeV1 {
	h := newStoreV1(dim, fmt.Sprintf("%032x", rng.Uint64()))
	day := int64(24 * time.Hour)
	item := func(id string) itemV1 {
		created := time.Unix(0, 1_600_000_000_000_000_000+rng.Int64N(1000*day)).UTC()
		it := itemV1{
			ID:       id,
			Created:  created,
			Updated:  created.Add(time.Duration(rng.Int64N(day))),
			Category: []string{"", "shoes", "bags", "hats"}[rng.IntN(4)],
			Title:    "title of " + id,
			Vector:   randomVector(rng, dim),
		}
		if rng.IntN(4) != 0 {
			sum := sha256.Sum256([]byte(id + fmt.Sprint(rng.Uint64())))
			it.SHA256 = hex.EncodeToString(sum[:])
			it.ImageURL = "https://example.test/" + id + ".jpg"
		}
		if rng.IntN(3) != 0 {
			it.Attributes = map[string]string{"colour": []string{"red", "blue"}[rng.IntN(2)], "size": fmt.Sprint(rng.IntN(50))}
		}
		return it
	}
	for i := range n {
		h.upsert(item(fmt.Sprintf("item-%05d", i)))
	}
	for range n / 10 {
		h.upsert(item(fmt.Sprintf("item-%05d", rng.IntN(n))))
	}
	for _, id := range slices.Sorted(maps.Keys(h.items))[:n/20] {
		h.delete(id)
	}
	for i := range 3 {
		h.upsert(item(fmt.Sprintf("late-%d", i)))
	}
	h.truncateLog(h.seq / 3)
	return h
}

// photoIDV1 is the photo id the upgrade must give an item, derived here independently of
// the store's helpers: 16 hex digits of its sha256, or of the sha256 of its raw vector.
func photoIDV1(it itemV1) string {
	if it.SHA256 != "" {
		return it.SHA256[:16]
	}
	sum := sha256.Sum256(encodeVectorV1(it.Vector))
	return hex.EncodeToString(sum[:])[:16]
}

// productFromV1 is the product the upgrade must make of an item.
func productFromV1(it itemV1) Product {
	return Product{ID: it.ID, Category: it.Category, Title: it.Title, Attributes: it.Attributes,
		Created: it.Created, Updated: it.Updated, Photos: []Photo{{
			ID: photoIDV1(it), Key: it.Key, ImageURL: it.ImageURL, SHA256: it.SHA256,
			Created: it.Created, Updated: it.Updated,
		}}}
}

// verifyUpgraded fails unless s holds exactly h's items as one-photo products, with h's
// keys, vectors, sequence number, log and category counts, and passes Check.
func verifyUpgraded(t testing.TB, s *Store, h *storeV1, generation string) {
	t.Helper()
	if s.Count() != len(h.items) || s.Photos() != len(h.items) || s.Seq() != h.seq || s.Dim() != h.dim ||
		s.ModelIdentity() != h.model || s.Generation() != generation {
		t.Fatalf("upgraded: count %d photos %d seq %d dim %d model %q generation %q; want %d items, seq %d, dim %d, %q, %q",
			s.Count(), s.Photos(), s.Seq(), s.Dim(), s.ModelIdentity(), s.Generation(), len(h.items), h.seq, h.dim, h.model, generation)
	}
	mustCheck(t, s)
	seen := 0
	err := s.ForEach(func(p Product) error {
		it, ok := h.items[p.ID]
		if !ok {
			return fmt.Errorf("product %q was not an item", p.ID)
		}
		seen++
		return errorIf(productDiff(p, productFromV1(it)))
	})
	if err != nil || seen != len(h.items) {
		t.Fatalf("ForEach: %v (%d of %d items)", err, seen, len(h.items))
	}
	byKey := map[uint32]itemV1{}
	for _, it := range h.items {
		byKey[it.Key] = it
	}
	seen = 0
	err = s.ForEachVector(func(key uint32, vec []float32) error {
		it, ok := byKey[key]
		if !ok || !sameVector(vec, it.Vector) {
			return fmt.Errorf("key %d: vector not the item's (item known: %v)", key, ok)
		}
		seen++
		return nil
	})
	if err != nil || seen != len(h.items) {
		t.Fatalf("ForEachVector: %v (%d of %d)", err, seen, len(h.items))
	}
	want := map[string]int{}
	for _, it := range h.items {
		want[it.Category]++
	}
	if got, err := s.CountByCategory(); err != nil || !maps.Equal(got, want) {
		t.Fatalf("CountByCategory %v, %v; want %v", got, err, want)
	}
	// The old log is still there: an index saved by the old release at any seq since the
	// floor catches up.
	for _, since := range []uint64{h.logFloor, min(h.logFloor+1, h.seq), (h.logFloor + h.seq) / 2, h.seq} {
		if got := changesSince(t, s, since); !slices.Equal(got, h.log[since-h.logFloor:]) {
			t.Fatalf("ChangesSince(%d): %d changes, want %d", since, len(got), len(h.log[since-h.logFloor:]))
		}
	}
	if h.logFloor > 0 {
		if err := s.ChangesSince(h.logFloor-1, func(Change) error { return nil }); err == nil {
			t.Fatal("ChangesSince below the old log floor succeeded")
		}
	}
	st, err := s.Stats()
	if err != nil || st.KeptPhotos != 0 || st.KeptBytes != 0 || st.LogEntries != uint64(len(h.log)) {
		t.Fatalf("stats %+v, %v", st, err)
	}
}

func errorIf(diff string) error {
	if diff != "" {
		return fmt.Errorf("%s", diff)
	}
	return nil
}

// schemaOf reads the schema number and the bucket names of a closed file straight from bbolt.
func schemaOf(t testing.TB, path string) (uint32, []string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var schema uint32
	var buckets []string
	err = db.View(func(tx *bolt.Tx) error {
		schema = binary.BigEndian.Uint32(tx.Bucket(bucketMeta).Get(metaSchema))
		return tx.ForEach(func(name []byte, _ *bolt.Bucket) error { buckets = append(buckets, string(name)); return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	return schema, buckets
}

func TestDecodeItemV1(t *testing.T) {
	it := itemV1{ID: "sku", Key: 7, Created: time.Unix(0, 1_700_000_000_123_456_789).UTC(), Updated: time.Unix(0, 1_700_000_001_000_000_000).UTC(),
		Category: "shoes", Title: "Red shoe ✓", ImageURL: "https://x.test/a.jpg", SHA256: strings.Repeat("ab", 32),
		Attributes: map[string]string{"colour": "red", "size": "42"}}
	p, err := decodeItemV1(it.ID, encodeItemV1(it))
	if err != nil {
		t.Fatal(err)
	}
	sameProduct(t, p, productFromV1(it))
	it.SHA256, it.Attributes = "", nil
	p, err = decodeItemV1(it.ID, encodeItemV1(it))
	if err != nil || p.Photos[0].ID != "" || p.Attributes != nil {
		t.Fatalf("an item without sha256: %+v, %v (the photo id is the caller's to derive)", p, err)
	}
	bad := map[string][]byte{
		"empty":           nil,
		"format 2":        append([]byte{2}, encodeItemV1(it)[1:]...),
		"cut":             encodeItemV1(it)[:10],
		"trailing byte":   append(encodeItemV1(it), 0),
		"short sha256":    encodeItemV1(itemV1{SHA256: "abcd"}),
		"sha256 too long": encodeItemV1(itemV1{SHA256: strings.Repeat("a", 65)}),
	}
	for name, data := range bad {
		if _, err := decodeItemV1("x", data); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", name, err)
		}
	}
}
