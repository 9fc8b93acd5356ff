package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// keepAll is p's new state with every photo's vector and kept photo left as stored.
func keepAll(p Product) Product {
	p.Photos = slices.Clone(p.Photos)
	for i := range p.Photos {
		p.Photos[i].Vector, p.Photos[i].Kept = nil, nil
	}
	return p
}

// keyMapped reports whether the keys bucket maps key to a product.
func keyMapped(t testing.TB, s *Store, key uint32) bool {
	t.Helper()
	var mapped bool
	if err := s.db.View(func(tx *bolt.Tx) error {
		mapped = tx.Bucket(bucketKeys).Get(keyBytes(key)) != nil
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return mapped
}

// wantStats fails unless Stats counts those photos and kept photos.
func wantStats(t testing.TB, s *Store, products, photos, keptPhotos int, keptBytes int64) {
	t.Helper()
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Products != products || st.Photos != photos || st.KeptPhotos != keptPhotos || st.KeptBytes != keptBytes ||
		s.Count() != products || s.Photos() != photos {
		t.Fatalf("stats: %d products %d photos %d kept photos %d kept bytes (Count %d Photos %d); want %d %d %d %d",
			st.Products, st.Photos, st.KeptPhotos, st.KeptBytes, s.Count(), s.Photos(), products, photos, keptPhotos, keptBytes)
	}
	mustCheck(t, s)
}

func TestProductsWithSeveralPhotos(t *testing.T) {
	const dim = 8
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "c.db")
	s := openFast(t, path, dim)
	rng := rand.New(rand.NewPCG(31, 32))
	stored := map[string]Product{}
	var lastKey uint32
	totalPhotos := 0
	for _, n := range []int{1, 2, 32, MaxPhotos} {
		in := withPhotos(rng, fmt.Sprint("n", n), "c", dim, n)
		// Photos keep the caller's order, not the ids' order.
		slices.Reverse(in.Photos)
		seq := s.Seq()
		p, err := s.Upsert(ctx, in)
		if err != nil {
			t.Fatalf("%d photos: %v", n, err)
		}
		if len(p.Photos) != n {
			t.Fatalf("%d photos stored as %d", n, len(p.Photos))
		}
		var want []Change
		for i, ph := range p.Photos {
			// New photos get consecutive new keys, in photo order.
			if ph.ID != in.Photos[i].ID || ph.Key != lastKey+1 {
				t.Fatalf("photo %d: id %q key %d, want %q and %d", i, ph.ID, ph.Key, in.Photos[i].ID, lastKey+1)
			}
			lastKey = ph.Key
			want = append(want, Change{Seq: seq + uint64(i) + 1, Key: ph.Key})
		}
		if got := changesSince(t, s, seq); !slices.Equal(got, want) {
			t.Fatalf("%d photos logged %v, want %v", n, got, want)
		}
		stored[p.ID] = p
		totalPhotos += n
		wantStats(t, s, len(stored), totalPhotos, 0, 0)
	}
	tooMany := withPhotos(rng, "too-many", "c", dim, MaxPhotos+1)
	if _, err := s.Upsert(ctx, tooMany); !errors.Is(err, ErrInvalidMetadata) {
		t.Fatalf("MaxPhotos+1 photos: %v, want ErrInvalidMetadata", err)
	}
	// Every read returns the photos as written, also after a reopen.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openFast(t, path, dim)
	for id, want := range stored {
		got, err := s.GetWithVectors(id)
		if err != nil {
			t.Fatal(err)
		}
		sameProduct(t, got, want)
		for i, ph := range got.Photos {
			if !sameVector(ph.Vector, want.Photos[i].Vector) {
				t.Fatalf("%s photo %s: GetWithVectors returned another vector", id, ph.ID)
			}
			if vec, err := s.Vector(ph.Key); err != nil || !sameVector(vec, want.Photos[i].Vector) {
				t.Fatalf("%s photo %s: Vector(%d): %v", id, ph.ID, ph.Key, err)
			}
		}
	}
	n := 0
	if err := s.ForEachVector(func(uint32, []float32) error { n++; return nil }); err != nil || n != totalPhotos {
		t.Fatalf("ForEachVector: %v, %d vectors for %d photos", err, n, totalPhotos)
	}
	wantStats(t, s, len(stored), totalPhotos, 0, 0)
}

func TestAddingAPhotoKeepsTheOthers(t *testing.T) {
	const dim = 8
	ctx := context.Background()
	s := openFast(t, filepath.Join(t.TempDir(), "c.db"), dim)
	rng := rand.New(rand.NewPCG(33, 34))
	in := withPhotos(rng, "sku", "c", dim, 2)
	in.Photos[0].Kept = []byte("kept jpeg of p0")
	first, err := s.Upsert(ctx, in)
	if err != nil {
		t.Fatal(err)
	}

	// The others sent without vectors: only the new photo is a change.
	next := keepAll(first)
	added := testPhoto(rng, "sku", "p2", dim)
	next.Photos = append(next.Photos, added)
	seq := s.Seq()
	second, err := s.Upsert(ctx, next)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(keysOf(second)[:2], keysOf(first)) || second.Photos[2].Key != first.Photos[1].Key+1 {
		t.Fatalf("keys %v after adding a photo to %v", keysOf(second), keysOf(first))
	}
	if got, want := changesSince(t, s, seq), []Change{{Seq: seq + 1, Key: second.Photos[2].Key}}; !slices.Equal(got, want) {
		t.Fatalf("adding a photo logged %v, want %v", got, want)
	}
	for i, ph := range first.Photos {
		if vec, err := s.Vector(ph.Key); err != nil || !sameVector(vec, in.Photos[i].Vector) {
			t.Fatalf("photo %s lost its vector: %v", ph.ID, err)
		}
		if got := second.Photos[i]; got.KeptBytes != ph.KeptBytes || !got.Created.Equal(ph.Created) || !got.Updated.Equal(ph.Updated) {
			t.Fatalf("photo %s: %+v after adding another, was %+v", ph.ID, withoutVector(got), withoutVector(ph))
		}
	}
	if jpeg, err := s.KeptPhoto(first.Photos[0].Key); err != nil || string(jpeg) != "kept jpeg of p0" {
		t.Fatalf("kept photo of p0: %q, %v", jpeg, err)
	}
	got, err := s.Get("sku")
	if err != nil {
		t.Fatal(err)
	}
	sameProduct(t, got, second)

	// p0 and p1 sent again with vectors (each a replace under its own key), p2 without (kept,
	// not logged), and a new p3.
	again := keepAll(second).Photos
	again[0].Vector = randomVector(rng, dim)
	again[1].Vector = randomVector(rng, dim)
	again = append(again, testPhoto(rng, "sku", "p3", dim))
	seq = s.Seq()
	third, err := s.Upsert(ctx, Product{ID: "sku", Category: "c", Photos: again})
	if err != nil {
		t.Fatal(err)
	}
	k := keysOf(third)
	if !slices.Equal(k[:3], keysOf(second)) || k[3] != k[2]+1 {
		t.Fatalf("keys %v, were %v", k, keysOf(second))
	}
	want := []Change{{Seq: seq + 1, Key: k[0]}, {Seq: seq + 2, Key: k[1]}, {Seq: seq + 3, Key: k[3]}}
	if got := changesSince(t, s, seq); !slices.Equal(got, want) {
		t.Fatalf("re-sending vectors logged %v, want %v", got, want)
	}
	if vec, err := s.Vector(k[2]); err != nil || !sameVector(vec, added.Vector) {
		t.Fatalf("p2's vector: %v", err)
	}
	// p0 was re-sent with a vector and no kept photo: its kept photo is gone.
	if _, err := s.KeptPhoto(k[0]); !errors.Is(err, ErrNotFound) {
		t.Fatalf("p0's kept photo after a new vector without one: %v", err)
	}
	wantStats(t, s, 1, 4, 0, 0)
}

func TestRemovingAPhotoDeletesOnlyIt(t *testing.T) {
	const dim = 8
	ctx := context.Background()
	s := openFast(t, filepath.Join(t.TempDir(), "c.db"), dim)
	rng := rand.New(rand.NewPCG(35, 36))
	in := withPhotos(rng, "sku", "c", dim, 3)
	for i := range in.Photos {
		in.Photos[i].Kept = bytes.Repeat([]byte{byte(i + 1)}, 100*(i+1))
	}
	first, err := s.Upsert(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	other, err := s.Upsert(ctx, withPhotos(rng, "other", "c", dim, 2))
	if err != nil {
		t.Fatal(err)
	}
	wantStats(t, s, 2, 5, 3, 600)

	// Omit p1 from the new state.
	next := keepAll(first)
	next.Photos = slices.Delete(next.Photos, 1, 2)
	seq := s.Seq()
	second, err := s.Upsert(ctx, next)
	if err != nil {
		t.Fatal(err)
	}
	gone := first.Photos[1].Key
	if got, want := changesSince(t, s, seq), []Change{{Seq: seq + 1, Key: gone, Deleted: true}}; !slices.Equal(got, want) {
		t.Fatalf("removing a photo logged %v, want %v", got, want)
	}
	if !slices.Equal(keysOf(second), []uint32{first.Photos[0].Key, first.Photos[2].Key}) {
		t.Fatalf("keys %v after removing %d from %v", keysOf(second), gone, keysOf(first))
	}
	if _, err := s.Vector(gone); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Vector of the removed photo: %v", err)
	}
	if _, err := s.KeptPhoto(gone); !errors.Is(err, ErrNotFound) {
		t.Fatalf("KeptPhoto of the removed photo: %v", err)
	}
	if keyMapped(t, s, gone) {
		t.Fatal("the removed photo's key still maps to the product")
	}
	for _, i := range []int{0, 2} {
		key := first.Photos[i].Key
		if vec, err := s.Vector(key); err != nil || !sameVector(vec, in.Photos[i].Vector) {
			t.Fatalf("photo %d: %v", i, err)
		}
		if jpeg, err := s.KeptPhoto(key); err != nil || !bytes.Equal(jpeg, in.Photos[i].Kept) {
			t.Fatalf("kept photo %d: %v", i, err)
		}
	}
	got, err := s.Get("sku")
	if err != nil {
		t.Fatal(err)
	}
	sameProduct(t, got, second)
	wantStats(t, s, 2, 4, 2, 400)
	if o, err := s.Get("other"); err != nil || !slices.Equal(keysOf(o), keysOf(other)) {
		t.Fatalf("the other product: %v", err)
	}

	// The photo id comes back: a new key, never the old one.
	back := keepAll(second)
	back.Photos = append(back.Photos, testPhoto(rng, "sku", "p1", dim))
	third, err := s.Upsert(ctx, back)
	if err != nil {
		t.Fatal(err)
	}
	if key := third.Photos[2].Key; key == gone || key != other.Photos[1].Key+1 {
		t.Fatalf("p1 came back under key %d (it had %d)", key, gone)
	}
	wantStats(t, s, 2, 5, 2, 400)

	// Replacing every photo at once: deletes of the old keys and upserts of the new ones.
	seq = s.Seq()
	fourth, err := s.Upsert(ctx, withPhotos(rng, "sku", "c", dim, 0))
	if !errors.Is(err, ErrInvalidMetadata) {
		t.Fatalf("a product without photos: %v, %+v", err, fourth)
	}
	swap := Product{ID: "sku", Category: "c", Photos: []Photo{testPhoto(rng, "sku", "q", dim)}}
	fourth, err = s.Upsert(ctx, swap)
	if err != nil {
		t.Fatal(err)
	}
	changes := changesSince(t, s, seq)
	var deleted []uint32
	for _, c := range changes[1:] {
		if !c.Deleted {
			t.Fatalf("changes %v", changes)
		}
		deleted = append(deleted, c.Key)
	}
	slices.Sort(deleted)
	if changes[0] != (Change{Seq: seq + 1, Key: fourth.Photos[0].Key}) || !slices.Equal(deleted, keysOf(third)) {
		t.Fatalf("swapping every photo logged %v (old keys %v, new %d)", changes, keysOf(third), fourth.Photos[0].Key)
	}
	wantStats(t, s, 2, 3, 0, 0)

	// Delete drops every photo of the product.
	seq = s.Seq()
	if _, err := s.Delete(ctx, "other"); err != nil {
		t.Fatal(err)
	}
	want := []Change{{Seq: seq + 1, Key: other.Photos[0].Key, Deleted: true}, {Seq: seq + 2, Key: other.Photos[1].Key, Deleted: true}}
	if got := changesSince(t, s, seq); !slices.Equal(got, want) {
		t.Fatalf("Delete logged %v, want %v", got, want)
	}
	for _, key := range keysOf(other) {
		if _, err := s.Vector(key); !errors.Is(err, ErrNotFound) || keyMapped(t, s, key) {
			t.Fatalf("key %d of a deleted product: %v", key, err)
		}
	}
	wantStats(t, s, 1, 1, 0, 0)
}

func TestPhotoWithoutVectorKeepsItsVector(t *testing.T) {
	const dim = 8
	ctx := context.Background()
	s := openFast(t, filepath.Join(t.TempDir(), "c.db"), dim)
	rng := rand.New(rand.NewPCG(37, 38))
	in := withPhotos(rng, "sku", "shoes", dim, 2)
	in.Photos[0].Kept = []byte("jpeg 0")
	in.Photos[1].Kept = []byte("jpeg one")
	in.Photos[0].Created = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	first, err := s.Upsert(ctx, in)
	if err != nil {
		t.Fatal(err)
	}

	// p0 keeps its vector but takes new metadata; p1 gets a new vector (and no kept photo).
	next := keepAll(first)
	next.Photos[0].ImageURL = "https://example.test/moved.jpg"
	next.Photos[0].SHA256 = ""
	next.Photos[0].HasPHash = false
	next.Photos[0].Updated = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC) // ignored: nothing changed
	next.Photos[1].Vector = randomVector(rng, dim)
	seq := s.Seq()
	second, err := s.Upsert(ctx, next)
	if err != nil {
		t.Fatal(err)
	}
	p0, p1 := second.Photos[0], second.Photos[1]
	if got, want := changesSince(t, s, seq), []Change{{Seq: seq + 1, Key: p1.Key}}; !slices.Equal(got, want) {
		t.Fatalf("logged %v, want %v (nothing for the kept photo)", got, want)
	}
	was := first.Photos[0]
	if p0.Key != was.Key || p0.KeptBytes != len("jpeg 0") || !p0.Created.Equal(was.Created) || !p0.Updated.Equal(was.Updated) ||
		p0.ImageURL != "https://example.test/moved.jpg" || p0.SHA256 != "" || p0.HasPHash {
		t.Fatalf("p0 after a write without vector: %+v, was %+v", withoutVector(p0), withoutVector(was))
	}
	if vec, err := s.Vector(p0.Key); err != nil || !sameVector(vec, in.Photos[0].Vector) {
		t.Fatalf("p0's vector: %v", err)
	}
	if jpeg, err := s.KeptPhoto(p0.Key); err != nil || string(jpeg) != "jpeg 0" {
		t.Fatalf("p0's kept photo: %q, %v", jpeg, err)
	}
	if p1.Key != first.Photos[1].Key || p1.KeptBytes != 0 || !p1.Created.Equal(first.Photos[1].Created) {
		t.Fatalf("p1 after a new vector: %+v", withoutVector(p1))
	}
	if _, err := s.KeptPhoto(p1.Key); !errors.Is(err, ErrNotFound) {
		t.Fatalf("p1's kept photo after a new vector without one: %v", err)
	}
	got, err := s.Get("sku")
	if err != nil {
		t.Fatal(err)
	}
	sameProduct(t, got, second)
	wantStats(t, s, 1, 2, 1, int64(len("jpeg 0")))

	// A photo without vector that was never stored, in a product that exists and in one that
	// does not: refused, nothing written.
	seq = s.Seq()
	bad := keepAll(second)
	bad.Photos = append(bad.Photos, Photo{ID: "new"})
	if _, err := s.Upsert(ctx, bad); !errors.Is(err, ErrInvalidVector) {
		t.Fatalf("a new photo without vector: %v", err)
	}
	if _, err := s.Upsert(ctx, Product{ID: "absent", Photos: []Photo{{ID: mainPhoto}}}); !errors.Is(err, ErrInvalidVector) {
		t.Fatalf("a new product without vector: %v", err)
	}
	if s.Seq() != seq || s.Count() != 1 {
		t.Fatalf("a refused write changed seq %d -> %d, count %d", seq, s.Seq(), s.Count())
	}
	wantStats(t, s, 1, 2, 1, int64(len("jpeg 0")))
}

func TestMetadataOnlyChange(t *testing.T) {
	const dim = 8
	ctx := context.Background()
	s := openFast(t, filepath.Join(t.TempDir(), "c.db"), dim)
	rng := rand.New(rand.NewPCG(39, 40))
	in := withPhotos(rng, "sku", "shoes", dim, 3)
	in.Photos[2].Kept = []byte("jpeg")
	first, err := s.Upsert(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	next := keepAll(first)
	next.Title = "a new title"
	next.Category = "boots"
	next.Attributes = map[string]string{"material": "leather"}
	next.Photos[1].ImageURL = "https://example.test/elsewhere.jpg"
	next.Updated = time.Time{} // now
	seq := s.Seq()
	second, err := s.Upsert(ctx, next)
	if err != nil {
		t.Fatal(err)
	}
	changes := changesSince(t, s, seq)
	if len(changes) != 1 || changes[0] != (Change{Seq: seq + 1}) || !changes[0].Metadata() || changes[0].Deleted || s.Seq() != seq+1 {
		t.Fatalf("a metadata-only write logged %v, seq %d -> %d", changes, seq, s.Seq())
	}
	if !slices.Equal(keysOf(second), keysOf(first)) || !second.Created.Equal(first.Created) || second.Updated.Before(first.Updated) {
		t.Fatalf("metadata change: %+v, was %+v", second, first)
	}
	got, err := s.GetWithVectors("sku")
	if err != nil {
		t.Fatal(err)
	}
	sameProduct(t, got, second)
	if got.Title != "a new title" || got.Category != "boots" || !maps.Equal(got.Attributes, next.Attributes) ||
		got.Photos[1].ImageURL != "https://example.test/elsewhere.jpg" {
		t.Fatalf("stored %+v", got)
	}
	for i, ph := range got.Photos {
		if !sameVector(ph.Vector, in.Photos[i].Vector) {
			t.Fatalf("photo %d lost its vector", i)
		}
	}
	counts, err := s.CountByCategory()
	if err != nil || !maps.Equal(counts, map[string]int{"boots": 1}) {
		t.Fatalf("CountByCategory %v, %v", counts, err)
	}
	// The same state again is still one (metadata) change: writes are not diffed.
	if _, err := s.Upsert(ctx, keepAll(second)); err != nil {
		t.Fatal(err)
	}
	if changes := changesSince(t, s, seq+1); !slices.Equal(changes, []Change{{Seq: seq + 2}}) {
		t.Fatalf("a repeated write logged %v", changes)
	}
	// Metadata changes in a batch: one change per product.
	seq = s.Seq()
	other, err := s.Upsert(ctx, testProduct(rng, "other", "", dim))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpsertBatch(ctx, []Product{keepAll(second), keepAll(other)}); err != nil {
		t.Fatal(err)
	}
	if changes := changesSince(t, s, seq); !slices.Equal(changes, []Change{{Seq: seq + 1, Key: other.Photos[0].Key}, {Seq: seq + 2}, {Seq: seq + 3}}) {
		t.Fatalf("a batch of metadata changes logged %v", changes)
	}
	wantStats(t, s, 2, 4, 1, 4)
}

func TestKeptPhotos(t *testing.T) {
	const dim = 8
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "c.db")
	s := openFast(t, path, dim)
	rng := rand.New(rand.NewPCG(41, 42))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	in := withPhotos(rng, "sku", "c", dim, 3)
	j0, j2 := random(100), random(5000)
	in.Photos[0].Kept = slices.Clone(j0)
	in.Photos[2].Kept = slices.Clone(j2)
	first, err := s.Upsert(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	if k := first.Photos; k[0].KeptBytes != 100 || k[1].KeptBytes != 0 || k[2].KeptBytes != 5000 || k[0].Kept != nil {
		t.Fatalf("KeptBytes %d %d %d (Kept returned: %v)", k[0].KeptBytes, k[1].KeptBytes, k[2].KeptBytes, k[0].Kept != nil)
	}
	// The store keeps its own copy.
	in.Photos[0].Kept[0] ^= 0xff
	key0, key1, key2 := first.Photos[0].Key, first.Photos[1].Key, first.Photos[2].Key
	roundTrip := func(key uint32, want []byte) {
		t.Helper()
		got, err := s.KeptPhoto(key)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("KeptPhoto(%d): %d bytes, %v; want %d bytes", key, len(got), err, len(want))
		}
		got[0] ^= 0xff // the caller's to keep
		if again, _ := s.KeptPhoto(key); !bytes.Equal(again, want) {
			t.Fatal("changing a returned kept photo changed the store")
		}
	}
	roundTrip(key0, j0)
	roundTrip(key2, j2)
	if _, err := s.KeptPhoto(key1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("KeptPhoto of a photo without one: %v", err)
	}
	if _, err := s.KeptPhoto(999); !errors.Is(err, ErrNotFound) {
		t.Fatalf("KeptPhoto of an unknown key: %v", err)
	}
	wantStats(t, s, 1, 3, 2, 5100)

	// A large kept photo (overflow pages), another product's.
	big := random(MaxKeptBytes)
	bp := testProduct(rng, "big", "c", dim)
	bp.Photos[0].Kept = big
	bigStored, err := s.Upsert(ctx, bp)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(bigStored.Photos[0].Key, big)
	wantStats(t, s, 2, 4, 3, 5100+MaxKeptBytes)
	if _, err := s.Delete(ctx, "big"); err != nil {
		t.Fatal(err)
	}
	wantStats(t, s, 1, 3, 2, 5100)

	// Replace p0's vector and kept photo, give p1 one, drop p2's (a new vector without one).
	j0b, j1 := random(300), random(7)
	next := keepAll(first)
	next.Photos[0].Vector, next.Photos[0].Kept = randomVector(rng, dim), j0b
	next.Photos[1].Vector, next.Photos[1].Kept = randomVector(rng, dim), j1
	next.Photos[2].Vector = randomVector(rng, dim)
	second, err := s.Upsert(ctx, next)
	if err != nil {
		t.Fatal(err)
	}
	if k := second.Photos; k[0].KeptBytes != 300 || k[1].KeptBytes != 7 || k[2].KeptBytes != 0 {
		t.Fatalf("KeptBytes %d %d %d after replace", k[0].KeptBytes, k[1].KeptBytes, k[2].KeptBytes)
	}
	roundTrip(key0, j0b)
	roundTrip(key1, j1)
	if _, err := s.KeptPhoto(key2); !errors.Is(err, ErrNotFound) {
		t.Fatalf("p2's kept photo after a new vector without one: %v", err)
	}
	wantStats(t, s, 1, 3, 2, 307)

	// Without vectors everything is kept.
	third, err := s.Upsert(ctx, keepAll(second))
	if err != nil {
		t.Fatal(err)
	}
	if k := third.Photos; k[0].KeptBytes != 300 || k[1].KeptBytes != 7 || k[2].KeptBytes != 0 {
		t.Fatalf("KeptBytes %d %d %d after a metadata change", k[0].KeptBytes, k[1].KeptBytes, k[2].KeptBytes)
	}
	roundTrip(key0, j0b)
	wantStats(t, s, 1, 3, 2, 307)

	// Removing p1 removes its kept photo; the counts survive a reopen.
	next = keepAll(third)
	next.Photos = slices.Delete(next.Photos, 1, 2)
	if _, err := s.Upsert(ctx, next); err != nil {
		t.Fatal(err)
	}
	if _, err := s.KeptPhoto(key1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a removed photo's kept photo: %v", err)
	}
	wantStats(t, s, 1, 2, 1, 300)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openFast(t, path, dim)
	wantStats(t, s, 1, 2, 1, 300)
	roundTrip(key0, j0b)
	if _, err := s.Delete(ctx, "sku"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.KeptPhoto(key0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a deleted product's kept photo: %v", err)
	}
	wantStats(t, s, 0, 0, 0, 0)
}

// An empty (non-nil) kept photo stores none, like nil, so the kept-photo counts stay right
// through replace and delete (they once counted a record that KeptBytes 0 hid).
func TestEmptyKeptPhotoStoresNone(t *testing.T) {
	const dim = 4
	ctx := context.Background()
	s := openFast(t, filepath.Join(t.TempDir(), "c.db"), dim)
	rng := rand.New(rand.NewPCG(43, 44))
	p := testProduct(rng, "sku", "c", dim)
	p.Photos[0].Kept = []byte{}
	stored, err := s.Upsert(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	key := stored.Photos[0].Key
	if _, err := s.KeptPhoto(key); !errors.Is(err, ErrNotFound) || stored.Photos[0].KeptBytes != 0 {
		t.Fatalf("an empty kept photo: KeptPhoto %v, KeptBytes %d", err, stored.Photos[0].KeptBytes)
	}
	wantStats(t, s, 1, 1, 0, 0)
	p.Photos[0].Vector = randomVector(rng, dim)
	p.Photos[0].Kept = []byte("now a real one")
	if _, err := s.Upsert(ctx, p); err != nil {
		t.Fatal(err)
	}
	wantStats(t, s, 1, 1, 1, int64(len("now a real one")))
	p.Photos[0].Kept = []byte{}
	if _, err := s.Upsert(ctx, p); err != nil {
		t.Fatal(err)
	}
	if _, err := s.KeptPhoto(key); !errors.Is(err, ErrNotFound) {
		t.Fatalf("replaced by an empty kept photo: %v", err)
	}
	wantStats(t, s, 1, 1, 0, 0)
	p.Photos[0].Kept = []byte{}
	if _, err := s.Upsert(ctx, p); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Delete(ctx, "sku"); err != nil {
		t.Fatal(err)
	}
	wantStats(t, s, 0, 0, 0, 0)
}
