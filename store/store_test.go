package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

const testModel = "mobilenetv2-test@sha256:0123"

// mainPhoto is the photo id of every one-photo test product.
const mainPhoto = "front"

// quietLogger keeps "store opened" lines out of the test output.
var quietLogger = slog.New(slog.DiscardHandler)

func openTest(t testing.TB, path string, dim int) *Store {
	t.Helper()
	s, err := Open(path, Options{ModelIdentity: testModel, Dim: dim, Logger: quietLogger})
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// openFast is openTest without fsync, for tests whose point is not durability.
func openFast(t testing.TB, path string, dim int) *Store {
	t.Helper()
	s, err := Open(path, Options{ModelIdentity: testModel, Dim: dim, NoSync: true, Logger: quietLogger})
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func randomVector(rng *rand.Rand, dim int) []float32 {
	v := make([]float32, dim)
	for i := range v {
		v[i] = float32(rng.NormFloat64())
	}
	return v
}

// testPhoto is a photo with a fresh random vector (and no kept photo).
func testPhoto(rng *rand.Rand, productID, photoID string, dim int) Photo {
	return Photo{
		ID:       photoID,
		ImageURL: "https://example.test/" + productID + "/" + photoID + ".jpg",
		SHA256:   strings.Repeat("ab", 32),
		PHash:    rng.Uint64(),
		HasPHash: true,
		Vector:   randomVector(rng, dim),
	}
}

// testProduct is a product with one photo (mainPhoto), the shape of the old release's item.
func testProduct(rng *rand.Rand, id, category string, dim int) Product {
	return Product{
		ID:       id,
		Category: category,
		Title:    "title of " + id,
		Attributes: map[string]string{
			"colour": []string{"red", "blue", "green"}[rng.IntN(3)],
			"size":   fmt.Sprint(rng.IntN(50)),
		},
		Photos: []Photo{testPhoto(rng, id, mainPhoto, dim)},
	}
}

// withPhotos is testProduct with photos p0..p(n-1).
func withPhotos(rng *rand.Rand, id, category string, dim, n int) Product {
	p := testProduct(rng, id, category, dim)
	p.Photos = nil
	for i := range n {
		p.Photos = append(p.Photos, testPhoto(rng, id, fmt.Sprint("p", i), dim))
	}
	return p
}

// sameVector compares bit patterns, so -0 and NaN payloads would count as differences.
func sameVector(a, b []float32) bool {
	return slices.EqualFunc(a, b, func(x, y float32) bool { return math.Float32bits(x) == math.Float32bits(y) })
}

// productDiff describes how got's metadata differs from want's ("" if it does not). Vectors
// and kept bytes are not compared: most reads do not return them.
func productDiff(got, want Product) string {
	if got.ID != want.ID || got.Category != want.Category || got.Title != want.Title ||
		!got.Created.Equal(want.Created) || !got.Updated.Equal(want.Updated) || !maps.Equal(got.Attributes, want.Attributes) {
		return fmt.Sprintf("product differs:\n got %+v\nwant %+v", got, want)
	}
	if len(got.Photos) != len(want.Photos) {
		return fmt.Sprintf("product %q: %d photos, want %d", got.ID, len(got.Photos), len(want.Photos))
	}
	for i, g := range got.Photos {
		w := want.Photos[i]
		if g.ID != w.ID || g.Key != w.Key || g.ImageURL != w.ImageURL || g.SHA256 != w.SHA256 ||
			g.PHash != w.PHash || g.HasPHash != w.HasPHash || g.KeptBytes != w.KeptBytes ||
			!g.Created.Equal(w.Created) || !g.Updated.Equal(w.Updated) {
			return fmt.Sprintf("product %q photo %d differs:\n got %+v\nwant %+v", got.ID, i, withoutVector(g), withoutVector(w))
		}
	}
	return ""
}

func withoutVector(ph Photo) Photo {
	ph.Vector, ph.Kept = nil, nil
	return ph
}

func sameProduct(t testing.TB, got, want Product) {
	t.Helper()
	if d := productDiff(got, want); d != "" {
		t.Fatal(d)
	}
}

// keys lists a product's photo keys in photo order.
func keysOf(p Product) []uint32 {
	var keys []uint32
	for _, ph := range p.Photos {
		keys = append(keys, ph.Key)
	}
	return keys
}

// changesSince collects ChangesSince(seq).
func changesSince(t testing.TB, s *Store, seq uint64) []Change {
	t.Helper()
	var changes []Change
	if err := s.ChangesSince(seq, func(c Change) error { changes = append(changes, c); return nil }); err != nil {
		t.Fatalf("ChangesSince(%d): %v", seq, err)
	}
	return changes
}

func mustCheck(t testing.TB, s *Store) {
	t.Helper()
	if err := s.Check(); err != nil {
		t.Fatalf("Check: %v", err)
	}
}

func TestOpenCreatesAndReopens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.db")
	s, err := Open(path, Options{ModelIdentity: testModel, Dim: 8})
	if err != nil {
		t.Fatal(err)
	}
	if s.Seq() != 0 || s.Count() != 0 || s.Photos() != 0 || s.Dim() != 8 || s.ModelIdentity() != testModel || s.Generation() == "" {
		t.Fatalf("new store: seq %d count %d photos %d dim %d model %q generation %q",
			s.Seq(), s.Count(), s.Photos(), s.Dim(), s.ModelIdentity(), s.Generation())
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 5 {
		if _, err := s.Upsert(context.Background(), withPhotos(rng, fmt.Sprint("id-", i), "shoes", 8, 1+i%2)); err != nil {
			t.Fatal(err)
		}
	}
	generation := s.Generation()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get("id-1"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Get after Close: %v, want ErrClosed", err)
	}
	if _, err := s.Vector(1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Vector after Close: %v, want ErrClosed", err)
	}

	// A tool that does not know the model may open an existing store and learns it.
	s, err = Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// 5 products with 1, 2, 1, 2, 1 photos: 7 photos, one change each.
	if s.Seq() != 7 || s.Count() != 5 || s.Photos() != 7 || s.Dim() != 8 || s.ModelIdentity() != testModel || s.Generation() != generation {
		t.Fatalf("reopened: seq %d count %d photos %d dim %d model %q generation %q",
			s.Seq(), s.Count(), s.Photos(), s.Dim(), s.ModelIdentity(), s.Generation())
	}
	if _, err := s.Upsert(context.Background(), testProduct(rng, "x", "", 8)); err == nil {
		t.Fatal("Upsert on a read-only store succeeded")
	}
	mustCheck(t, s)
}

func TestOpenRefuses(t *testing.T) {
	dir := t.TempDir()
	existing := filepath.Join(dir, "existing.db")
	s := openTest(t, existing, 16)
	if _, err := s.Upsert(context.Background(), testProduct(rand.New(rand.NewPCG(1, 1)), "a", "c", 16)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	foreign := filepath.Join(dir, "foreign.db")
	db, err := bolt.Open(foreign, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("other")); return err }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, []byte(strings.Repeat("not a database ", 2000)), 0o600); err != nil {
		t.Fatal(err)
	}

	truncated := filepath.Join(dir, "truncated.db")
	whole, err := os.ReadFile(existing)
	if err != nil {
		t.Fatal(err)
	}
	// Cut inside the pages the meta page claims (the file itself is preallocated beyond them).
	if err := os.WriteFile(truncated, whole[:usedBytes(t, existing)*2/3], 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		path     string
		opt      Options
		want     error
		contains []string
	}{
		{"other model", existing, Options{ModelIdentity: "clip-vit@sha256:ffff", Dim: 16}, ErrModelMismatch,
			[]string{testModel, "clip-vit@sha256:ffff"}},
		{"other dimension", existing, Options{ModelIdentity: testModel, Dim: 1280}, ErrModelMismatch, []string{"16", "1280"}},
		{"negative dimension", existing, Options{ModelIdentity: testModel, Dim: -1}, ErrInvalidOptions, nil},
		{"new store without model", filepath.Join(dir, "new1.db"), Options{Dim: 16}, ErrInvalidOptions, nil},
		{"new store without dimension", filepath.Join(dir, "new2.db"), Options{ModelIdentity: testModel}, ErrInvalidOptions, nil},
		{"bbolt file of something else", foreign, Options{ModelIdentity: testModel, Dim: 16}, ErrCorrupt, []string{"other"}},
		{"not a bbolt file", garbage, Options{ModelIdentity: testModel, Dim: 16}, nil, nil},
		{"truncated file", truncated, Options{ModelIdentity: testModel, Dim: 16}, ErrCorrupt, []string{"truncated"}},
		{"missing file read-only", filepath.Join(dir, "absent.db"), Options{ReadOnly: true}, os.ErrNotExist, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(tc.path, tc.opt)
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Open: %v, want %v", err, tc.want)
			}
			for _, c := range tc.contains {
				if !strings.Contains(err.Error(), c) {
					t.Errorf("error %q does not name %q", err, c)
				}
			}
		})
	}

	t.Run("locked by an open store", func(t *testing.T) {
		s := openTest(t, existing, 16)
		defer s.Close()
		_, err := Open(existing, Options{ModelIdentity: testModel, Dim: 16, LockTimeout: 50 * time.Millisecond})
		if !errors.Is(err, ErrInUse) {
			t.Fatalf("second Open: %v, want ErrInUse", err)
		}
	})
}

func TestUpsertRejectsInvalidProducts(t *testing.T) {
	const dim = 4
	s := openFast(t, filepath.Join(t.TempDir(), "c.db"), dim)
	good := func() Product {
		return Product{ID: "ok", Category: "c", Photos: []Photo{
			{ID: "a", Vector: []float32{1, 0, 0, 0}},
			{ID: "b", Vector: []float32{0, 1, 0, 0}},
		}}
	}
	with := func(change func(*Product)) Product { p := good(); change(&p); return p }
	photo := func(change func(*Photo)) Product { return with(func(p *Product) { change(&p.Photos[1]) }) }
	many := func(n int) []Photo {
		photos := make([]Photo, n)
		for i := range photos {
			photos[i] = Photo{ID: fmt.Sprint("p", i), Vector: []float32{1, 2, 3, 4}}
		}
		return photos
	}
	tests := []struct {
		name    string
		product Product
		want    error
	}{
		{"empty id", with(func(p *Product) { p.ID = "" }), ErrInvalidID},
		{"id too long", with(func(p *Product) { p.ID = strings.Repeat("x", MaxIDBytes+1) }), ErrInvalidID},
		{"id not UTF-8", with(func(p *Product) { p.ID = "bad\xff" }), ErrInvalidID},
		{"id with newline", with(func(p *Product) { p.ID = "a\nb" }), ErrInvalidID},
		{"no photos", with(func(p *Product) { p.Photos = nil }), ErrInvalidMetadata},
		{"MaxPhotos+1 photos", with(func(p *Product) { p.Photos = many(MaxPhotos + 1) }), ErrInvalidMetadata},
		{"empty photo id", photo(func(ph *Photo) { ph.ID = "" }), ErrInvalidPhotoID},
		{"photo id with '/'", photo(func(ph *Photo) { ph.ID = "front/left" }), ErrInvalidPhotoID},
		{"photo id '/'", photo(func(ph *Photo) { ph.ID = "/" }), ErrInvalidPhotoID},
		{"photo id with a control character", photo(func(ph *Photo) { ph.ID = "a\x00b" }), ErrInvalidPhotoID},
		{"photo id with DEL", photo(func(ph *Photo) { ph.ID = "a\x7f" }), ErrInvalidPhotoID},
		{"photo id too long", photo(func(ph *Photo) { ph.ID = strings.Repeat("p", MaxPhotoIDBytes+1) }), ErrInvalidPhotoID},
		{"photo id not UTF-8", photo(func(ph *Photo) { ph.ID = "\xc3\x28" }), ErrInvalidPhotoID},
		{"duplicate photo id", photo(func(ph *Photo) { ph.ID = "a" }), ErrInvalidPhotoID},
		{"short vector", photo(func(ph *Photo) { ph.Vector = []float32{1, 2, 3} }), ErrInvalidVector},
		{"long vector", photo(func(ph *Photo) { ph.Vector = make([]float32, dim+1) }), ErrInvalidVector},
		{"empty vector", photo(func(ph *Photo) { ph.Vector = []float32{} }), ErrInvalidVector},
		{"new photo without vector", photo(func(ph *Photo) { ph.Vector = nil }), ErrInvalidVector},
		{"NaN", photo(func(ph *Photo) { ph.Vector[2] = float32(math.NaN()) }), ErrInvalidVector},
		{"+Inf", photo(func(ph *Photo) { ph.Vector[0] = float32(math.Inf(1)) }), ErrInvalidVector},
		{"-Inf", photo(func(ph *Photo) { ph.Vector[3] = float32(math.Inf(-1)) }), ErrInvalidVector},
		{"kept photo without vector", photo(func(ph *Photo) { ph.Vector, ph.Kept = nil, []byte("jpeg") }), ErrInvalidMetadata},
		{"kept photo too large", photo(func(ph *Photo) { ph.Kept = make([]byte, MaxKeptBytes+1) }), ErrInvalidMetadata},
		{"category too long", with(func(p *Product) { p.Category = strings.Repeat("c", MaxCategoryBytes+1) }), ErrInvalidMetadata},
		{"title not UTF-8", with(func(p *Product) { p.Title = "\xc3\x28" }), ErrInvalidMetadata},
		{"too many attributes", with(func(p *Product) {
			p.Attributes = map[string]string{}
			for i := range MaxAttributes + 1 {
				p.Attributes[fmt.Sprint(i)] = "v"
			}
		}), ErrInvalidMetadata},
		{"empty attribute name", with(func(p *Product) { p.Attributes = map[string]string{"": "v"} }), ErrInvalidMetadata},
		{"attribute value too long", with(func(p *Product) {
			p.Attributes = map[string]string{"k": strings.Repeat("v", MaxAttributeValueBytes+1)}
		}), ErrInvalidMetadata},
		{"image URL too long", photo(func(ph *Photo) { ph.ImageURL = strings.Repeat("u", MaxImageURLBytes+1) }), ErrInvalidMetadata},
		{"sha256 too short", photo(func(ph *Photo) { ph.SHA256 = "abcd" }), ErrInvalidMetadata},
		{"sha256 not hex", photo(func(ph *Photo) { ph.SHA256 = strings.Repeat("zz", 32) }), ErrInvalidMetadata},
		{"created before 1700", with(func(p *Product) { p.Created = time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC) }), ErrInvalidMetadata},
		{"photo updated after 2200", photo(func(ph *Photo) { ph.Updated = time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC) }), ErrInvalidMetadata},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Upsert(context.Background(), tc.product)
			if !errors.Is(err, tc.want) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("Upsert: %v, want %v (and ErrInvalid)", err, tc.want)
			}
			if s.Seq() != 0 || s.Count() != 0 || s.Photos() != 0 {
				t.Fatalf("a rejected upsert wrote: seq %d count %d photos %d", s.Seq(), s.Count(), s.Photos())
			}
		})
	}
	if _, err := s.Upsert(context.Background(), good()); err != nil {
		t.Fatalf("the valid product: %v", err)
	}
	if _, err := s.Upsert(context.Background(), with(func(p *Product) { p.ID = "max"; p.Photos = many(MaxPhotos) })); err != nil {
		t.Fatalf("MaxPhotos photos: %v", err)
	}
	if _, err := s.Delete(context.Background(), ""); !errors.Is(err, ErrInvalidID) {
		t.Fatalf("Delete(\"\"): %v, want ErrInvalidID", err)
	}
	mustCheck(t, s)
}

func TestValidatePhotoID(t *testing.T) {
	for _, id := range []string{"", "/", "a/b", "/front", "front/", "a\nb", "\x00", "tab\there", "a\u0085b",
		strings.Repeat("x", MaxPhotoIDBytes+1), "\xff", strings.Repeat("é", MaxPhotoIDBytes/2) + "x"} {
		if err := ValidatePhotoID(id); !errors.Is(err, ErrInvalidPhotoID) || !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidatePhotoID(%q) = %v, want ErrInvalidPhotoID", id, err)
		}
	}
	for _, id := range []string{"front", "0", "ab12cd34ef56ab78", "side view.jpg", "ß✓", strings.Repeat("x", MaxPhotoIDBytes),
		strings.Repeat("é", MaxPhotoIDBytes/2), `back\left`, "a:b?c#d"} {
		if err := ValidatePhotoID(id); err != nil {
			t.Errorf("ValidatePhotoID(%q) = %v, want nil", id, err)
		}
	}
}

func TestUpsertGetRoundTrip(t *testing.T) {
	const dim = 32
	s := openFast(t, filepath.Join(t.TempDir(), "c.db"), dim)
	rng := rand.New(rand.NewPCG(3, 4))
	in := testProduct(rng, "sku-42/ß", "dresses", dim)
	ph := &in.Photos[0]
	ph.SHA256 = strings.ToUpper(strings.Repeat("0f", 32))
	ph.PHash, ph.HasPHash = math.MaxUint64, true
	ph.Vector[0] = float32(math.Copysign(0, -1))
	ph.Vector[1] = math.SmallestNonzeroFloat32
	ph.Vector[2] = math.MaxFloat32
	want := slices.Clone(ph.Vector)
	created := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.FixedZone("X", 3600))
	in.Created = created
	photoUpdated := time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)
	ph.Updated = photoUpdated
	before := time.Now()
	stored, err := s.Upsert(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	sp := stored.Photos[0]
	if sp.Key == 0 || !stored.Created.Equal(created) || stored.Created.Location() != time.UTC ||
		stored.Updated.Before(before.Add(-time.Second)) || sp.SHA256 != strings.Repeat("0f", 32) ||
		!sp.Updated.Equal(photoUpdated) || sp.Created.Before(before.Add(-time.Second)) || !sameVector(sp.Vector, want) {
		t.Fatalf("stored product: %+v", stored)
	}
	// The store must hold its own copies: changing the caller's slices changes nothing stored,
	// nor the product Upsert returned.
	ph.Vector[5] = 999
	in.Attributes["colour"] = "changed"
	in.Photos[0].ImageURL = "changed"
	if stored.Photos[0].Vector[5] == 999 || stored.Attributes["colour"] == "changed" || stored.Photos[0].ImageURL == "changed" {
		t.Fatal("Upsert's result aliases the caller's product")
	}

	got, err := s.Get(in.ID)
	if err != nil {
		t.Fatal(err)
	}
	sameProduct(t, got, stored)
	if got.Photos[0].Vector != nil {
		t.Fatal("Get returned a vector")
	}
	if p, ok := got.Photo(mainPhoto); !ok || p.Key != sp.Key {
		t.Fatalf("Photo(%q) = %+v, %v", mainPhoto, p, ok)
	}
	if _, ok := got.Photo("absent"); ok {
		t.Fatal("Photo(absent) found one")
	}
	full, err := s.GetWithVectors(in.ID)
	if err != nil {
		t.Fatal(err)
	}
	sameProduct(t, full, stored)
	if !sameVector(full.Photos[0].Vector, want) {
		t.Fatalf("GetWithVectors vector %v, want %v", full.Photos[0].Vector, want)
	}
	vec, err := s.Vector(sp.Key)
	if err != nil || !sameVector(vec, want) {
		t.Fatalf("Vector(%d) = %v, %v", sp.Key, vec, err)
	}
	vec[0] = 42 // the caller's to keep
	if again, _ := s.Vector(sp.Key); !sameVector(again, want) {
		t.Fatal("changing a returned vector changed the store")
	}
	if _, err := s.Get("absent"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(absent): %v", err)
	}
	if _, err := s.GetWithVectors("absent"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetWithVectors(absent): %v", err)
	}
	if _, err := s.Vector(sp.Key + 1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Vector(unknown): %v", err)
	}
	if _, err := s.KeptPhoto(sp.Key); !errors.Is(err, ErrNotFound) {
		t.Fatalf("KeptPhoto of a photo without one: %v", err)
	}
	mustCheck(t, s)
}

func TestUpsertReplaceKeepsKeyAndCreated(t *testing.T) {
	const dim = 8
	ctx := context.Background()
	s := openTest(t, filepath.Join(t.TempDir(), "c.db"), dim)
	rng := rand.New(rand.NewPCG(5, 6))
	first, err := s.Upsert(ctx, testProduct(rng, "p1", "shoes", dim))
	if err != nil {
		t.Fatal(err)
	}
	other, err := s.Upsert(ctx, testProduct(rng, "p2", "shoes", dim))
	if err != nil {
		t.Fatal(err)
	}
	// A new vector for the same photo id: a replace, under the same key.
	replacement := testProduct(rng, "p1", "bags", dim)
	replacement.Attributes = nil
	second, err := s.Upsert(ctx, replacement)
	if err != nil {
		t.Fatal(err)
	}
	f, sc := first.Photos[0], second.Photos[0]
	if sc.Key != f.Key || !second.Created.Equal(first.Created) || second.Updated.Before(first.Updated) ||
		!sc.Created.Equal(f.Created) || sc.Updated.Before(f.Updated) {
		t.Fatalf("replace: key %d->%d created %v->%v photo created %v->%v", f.Key, sc.Key, first.Created, second.Created, f.Created, sc.Created)
	}
	got, err := s.Get("p1")
	if err != nil {
		t.Fatal(err)
	}
	sameProduct(t, got, second)
	if vec, err := s.Vector(f.Key); err != nil || !sameVector(vec, replacement.Photos[0].Vector) {
		t.Fatalf("Vector after replace: %v", err)
	}
	if s.Count() != 2 || s.Photos() != 2 || s.Seq() != 3 {
		t.Fatalf("count %d photos %d seq %d, want 2, 2 and 3", s.Count(), s.Photos(), s.Seq())
	}
	counts, err := s.CountByCategory()
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]int{"shoes": 1, "bags": 1}; !maps.Equal(counts, want) {
		t.Fatalf("CountByCategory %v, want %v", counts, want)
	}
	want := []Change{{1, f.Key, false}, {2, other.Photos[0].Key, false}, {3, f.Key, false}}
	if changes := changesSince(t, s, 0); !slices.Equal(changes, want) {
		t.Fatalf("changes %v, want %v", changes, want)
	}
	mustCheck(t, s)
}

func TestDeleteNeverReusesKeys(t *testing.T) {
	const dim = 4
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "c.db")
	s := openFast(t, path, dim)
	rng := rand.New(rand.NewPCG(7, 8))
	seen := map[uint32]bool{}
	var lastKey uint32
	for round := range 3 {
		var ids []string
		for i := range 20 {
			p, err := s.Upsert(ctx, withPhotos(rng, fmt.Sprintf("id-%d", i), fmt.Sprint("cat-", i%3), dim, 1+i%3))
			if err != nil {
				t.Fatal(err)
			}
			for _, key := range keysOf(p) {
				if seen[key] || key <= lastKey {
					t.Fatalf("round %d: key %d reused or not increasing (last %d)", round, key, lastKey)
				}
				seen[key] = true
				lastKey = key
			}
			ids = append(ids, p.ID)
		}
		// Delete everything; the next round adds the same ids (and photo ids) again.
		for i, id := range ids {
			before, err := s.Get(id)
			if err != nil {
				t.Fatal(err)
			}
			seq := s.Seq()
			gone, err := s.Delete(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			sameProduct(t, gone, before)
			if len(gone.Photos) != 1+i%3 {
				t.Fatalf("Delete returned %d photos", len(gone.Photos))
			}
			// One delete change per photo.
			var want []Change
			for j, key := range keysOf(gone) {
				want = append(want, Change{Seq: seq + uint64(j) + 1, Key: key, Deleted: true})
			}
			if got := changesSince(t, s, seq); !slices.Equal(got, want) {
				t.Fatalf("Delete logged %v, want %v", got, want)
			}
			if _, err := s.Get(id); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Get after Delete: %v", err)
			}
			for _, key := range keysOf(gone) {
				if _, err := s.Vector(key); !errors.Is(err, ErrNotFound) {
					t.Fatalf("Vector after Delete: %v", err)
				}
			}
		}
		if _, err := s.Delete(ctx, ids[0]); !errors.Is(err, ErrNotFound) {
			t.Fatalf("second Delete: %v", err)
		}
		counts, err := s.CountByCategory()
		if err != nil {
			t.Fatal(err)
		}
		if s.Count() != 0 || s.Photos() != 0 || len(counts) != 0 {
			t.Fatalf("after deleting everything: count %d photos %d categories %v", s.Count(), s.Photos(), counts)
		}
		mustCheck(t, s)
	}
	// The key counter survives a reopen.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, path, dim)
	p, err := s.Upsert(ctx, testProduct(rng, "after-reopen", "", dim))
	if err != nil {
		t.Fatal(err)
	}
	if p.Photos[0].Key != lastKey+1 {
		t.Fatalf("key %d after reopen, last was %d", p.Photos[0].Key, lastKey)
	}
}

func TestUpsertBatchIsAllOrNothing(t *testing.T) {
	const dim = 8
	ctx := context.Background()
	s := openTest(t, filepath.Join(t.TempDir(), "c.db"), dim)
	rng := rand.New(rand.NewPCG(9, 10))
	batch := make([]Product, 50)
	for i := range batch {
		batch[i] = withPhotos(rng, fmt.Sprint("b-", i), "c", dim, 1+i%2)
	}
	// withPhoto returns batch with product i's photo 0 changed (the others shared, unchanged).
	withPhoto := func(i int, change func(*Photo)) []Product {
		out := slices.Clone(batch)
		out[i].Photos = slices.Clone(out[i].Photos)
		change(&out[i].Photos[0])
		return out
	}

	bad := withPhoto(37, func(ph *Photo) { ph.Vector = ph.Vector[:3] })
	if _, err := s.UpsertBatch(ctx, bad); !errors.Is(err, ErrInvalidVector) || !strings.Contains(err.Error(), "product 37") {
		t.Fatalf("batch with a bad product: %v", err)
	}
	// Refused inside the transaction, after 37 products were written there: a new photo
	// without a vector.
	bad = withPhoto(37, func(ph *Photo) { ph.Vector = nil })
	if _, err := s.UpsertBatch(ctx, bad); !errors.Is(err, ErrInvalidVector) {
		t.Fatalf("batch with a photo without vector: %v", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.UpsertBatch(cancelled, batch); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled batch: %v", err)
	}
	if s.Seq() != 0 || s.Count() != 0 || s.Photos() != 0 {
		t.Fatalf("failed batches wrote: seq %d count %d photos %d", s.Seq(), s.Count(), s.Photos())
	}
	if out, err := s.UpsertBatch(ctx, nil); err != nil || len(out) != 0 || s.Seq() != 0 {
		t.Fatalf("empty batch: %v, %v, seq %d", out, err, s.Seq())
	}
	mustCheck(t, s)

	// The same id twice in one batch: the later one wins and keeps the first one's key for
	// the same photo id.
	dup := testProduct(rng, "b-3", "other", dim)
	dup.Photos[0].ID = batch[3].Photos[0].ID
	out, err := s.UpsertBatch(ctx, append(slices.Clone(batch), dup))
	if err != nil {
		t.Fatal(err)
	}
	photos := 0
	for _, p := range batch {
		photos += len(p.Photos)
	}
	if len(out) != len(batch)+1 || out[len(out)-1].Photos[0].Key != out[3].Photos[0].Key {
		t.Fatalf("batch result: %d products, duplicate key %d vs %d", len(out), out[len(out)-1].Photos[0].Key, out[3].Photos[0].Key)
	}
	// b-3 had 2 photos; the later state has 1: p1 is deleted in the same batch.
	if s.Seq() != uint64(photos+2) || s.Count() != len(batch) || s.Photos() != photos-1 {
		t.Fatalf("after batch: seq %d count %d photos %d", s.Seq(), s.Count(), s.Photos())
	}
	got, err := s.GetWithVectors("b-3")
	if err != nil {
		t.Fatal(err)
	}
	if got.Category != "other" || len(got.Photos) != 1 || !sameVector(got.Photos[0].Vector, dup.Photos[0].Vector) {
		t.Fatalf("b-3 holds %+v", got)
	}
	if _, err := s.Vector(out[3].Photos[1].Key); !errors.Is(err, ErrNotFound) {
		t.Fatalf("b-3's dropped photo: %v", err)
	}
	mustCheck(t, s)
}

func TestChangesSinceAndTruncateLog(t *testing.T) {
	const dim = 4
	ctx := context.Background()
	s := openFast(t, filepath.Join(t.TempDir(), "c.db"), dim)
	rng := rand.New(rand.NewPCG(11, 12))
	var want []Change
	for i := range 30 {
		p, err := s.Upsert(ctx, testProduct(rng, fmt.Sprint("id-", i%10), "", dim))
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, Change{Seq: s.Seq(), Key: p.Photos[0].Key})
		if i%4 == 3 {
			gone, err := s.Delete(ctx, p.ID)
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, Change{Seq: s.Seq(), Key: gone.Photos[0].Key, Deleted: true})
		}
		if i%6 == 5 && i%4 != 3 {
			// Metadata only: the stored vector is kept.
			p.Title = fmt.Sprint("retitled ", i)
			p.Photos[0].Vector = nil
			if _, err := s.Upsert(ctx, p); err != nil {
				t.Fatal(err)
			}
			want = append(want, Change{Seq: s.Seq()})
		}
	}
	collect := func(since uint64) ([]Change, error) {
		var got []Change
		err := s.ChangesSince(since, func(c Change) error {
			// fn runs outside the read transaction, so it may read the store.
			if !c.Metadata() {
				if _, err := s.Vector(c.Key); err != nil && !errors.Is(err, ErrNotFound) {
					return err
				}
			}
			got = append(got, c)
			return nil
		})
		return got, err
	}
	if uint64(len(want)) != s.Seq() {
		t.Fatalf("%d changes made, Seq %d", len(want), s.Seq())
	}
	for _, since := range []uint64{0, 1, 17, s.Seq() - 1, s.Seq()} {
		got, err := collect(since)
		if err != nil {
			t.Fatalf("ChangesSince(%d): %v", since, err)
		}
		if !slices.Equal(got, want[since:]) {
			t.Fatalf("ChangesSince(%d) = %v, want %v", since, got, want[since:])
		}
	}
	if _, err := collect(s.Seq() + 1); !errors.Is(err, ErrChangesUnavailable) {
		t.Fatalf("ChangesSince(ahead): %v", err)
	}
	stop := errors.New("stop")
	if err := s.ChangesSince(0, func(Change) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("fn error not returned: %v", err)
	}

	seq := s.Seq()
	if err := s.TruncateLog(20); err != nil {
		t.Fatal(err)
	}
	if s.Seq() != seq {
		t.Fatalf("TruncateLog moved Seq %d -> %d", seq, s.Seq())
	}
	if _, err := collect(19); !errors.Is(err, ErrChangesUnavailable) {
		t.Fatalf("ChangesSince below the truncation: %v", err)
	}
	got, err := collect(20)
	if err != nil || !slices.Equal(got, want[20:]) {
		t.Fatalf("ChangesSince(20) after truncation = %v, %v", got, err)
	}
	mustCheck(t, s)
	// Truncating below the floor is a no-op; beyond Seq clamps to Seq.
	if err := s.TruncateLog(5); err != nil {
		t.Fatal(err)
	}
	if err := s.TruncateLog(seq + 100); err != nil {
		t.Fatal(err)
	}
	if got, err := collect(seq); err != nil || len(got) != 0 {
		t.Fatalf("ChangesSince(seq) after full truncation = %v, %v", got, err)
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.LogEntries != 0 || st.Seq != seq || st.Products != s.Count() || st.Photos != s.Photos() || st.FileBytes <= 0 ||
		st.Dim != dim || st.ModelIdentity != testModel || st.Generation != s.Generation() || st.Path != s.Path() {
		t.Fatalf("stats %+v", st)
	}
	mustCheck(t, s)
}

// A long log is truncated in transactions of truncateChunk entries, and a write made between
// two of them commits then (bbolt's one writer is free) and stays in the log.
func TestTruncateLogInChunksLetsWritesIn(t *testing.T) {
	const dim = 4
	ctx := context.Background()
	s := openFast(t, filepath.Join(t.TempDir(), "c.db"), dim)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 10 {
		if _, err := s.Upsert(ctx, testProduct(rng, fmt.Sprint("id-", i), "", dim)); err != nil {
			t.Fatal(err)
		}
	}
	upto := s.Seq() // 10
	s.truncateChunk = 3
	var floors []uint64
	var between uint64
	s.afterTruncateChunk = func(floor uint64) {
		floors = append(floors, floor)
		if len(floors) == 1 {
			if _, err := s.Upsert(ctx, testProduct(rng, "between", "", dim)); err != nil {
				t.Errorf("a write between two truncation transactions: %v", err)
			}
			between = s.Seq()
		}
	}
	if err := s.TruncateLog(upto); err != nil {
		t.Fatal(err)
	}
	if want := []uint64{3, 6, 9}; !slices.Equal(floors, want) {
		t.Fatalf("floors between the transactions %v, want %v", floors, want)
	}
	if got := changesSince(t, s, upto); len(got) != 1 || got[0].Seq != between || between != upto+1 {
		t.Fatalf("after the truncation the log holds %v; the write between was seq %d", got, between)
	}
	if err := s.ChangesSince(upto-1, func(Change) error { return nil }); !errors.Is(err, ErrChangesUnavailable) {
		t.Fatalf("ChangesSince below the truncation: %v", err)
	}
	mustCheck(t, s)
}

func TestForEachVisitsEveryProductInIDOrder(t *testing.T) {
	const dim = 16
	ctx := context.Background()
	s := openFast(t, filepath.Join(t.TempDir(), "c.db"), dim)
	rng := rand.New(rand.NewPCG(13, 14))
	want := map[string]Product{}
	vectors := map[uint32][]float32{}
	for i := range 300 {
		in := withPhotos(rng, fmt.Sprintf("%05d", rng.IntN(200)), fmt.Sprint(i%7), dim, 1+rng.IntN(3))
		if old, ok := want[in.ID]; ok {
			for _, key := range keysOf(old) {
				delete(vectors, key)
			}
		}
		p, err := s.Upsert(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		want[p.ID] = p
		for _, ph := range p.Photos {
			vectors[ph.Key] = ph.Vector
		}
		if rng.IntN(5) == 0 {
			gone, err := s.Delete(ctx, p.ID)
			if err != nil {
				t.Fatal(err)
			}
			delete(want, gone.ID)
			for _, key := range keysOf(gone) {
				delete(vectors, key)
			}
		}
	}
	var ids []string
	err := s.ForEach(func(p Product) error {
		w, ok := want[p.ID]
		if !ok {
			return fmt.Errorf("ForEach returned %q which is not stored", p.ID)
		}
		if d := productDiff(p, w); d != "" {
			return errors.New(d)
		}
		for _, ph := range p.Photos {
			if ph.Vector != nil {
				return fmt.Errorf("ForEach returned a vector for %q", p.ID)
			}
		}
		ids = append(ids, p.ID)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != len(want) || !slices.IsSorted(ids) || len(want) != s.Count() {
		t.Fatalf("ForEach visited %d products (sorted %v), %d stored, Count %d", len(ids), slices.IsSorted(ids), len(want), s.Count())
	}
	var keys []uint32
	err = s.ForEachVector(func(key uint32, vec []float32) error {
		if !sameVector(vec, vectors[key]) {
			return fmt.Errorf("vector of key %d differs", key)
		}
		keys = append(keys, key)
		return nil
	})
	if err != nil || len(keys) != len(vectors) || len(keys) != s.Photos() || !slices.IsSorted(keys) {
		t.Fatalf("ForEachVector: %v, visited %d (sorted %v) of %d, Photos %d", err, len(keys), slices.IsSorted(keys), len(vectors), s.Photos())
	}
	stop := errors.New("stop")
	calls := 0
	if err := s.ForEach(func(Product) error { calls++; return stop }); !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("ForEach with a failing fn: %v after %d calls", err, calls)
	}
	calls = 0
	if err := s.ForEachVector(func(uint32, []float32) error { calls++; return stop }); !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("ForEachVector with a failing fn: %v after %d calls", err, calls)
	}
	mustCheck(t, s)
}

func TestCountByCategoryFollowsRandomWrites(t *testing.T) {
	const dim = 4
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "c.db")
	s := openFast(t, path, dim)
	rng := rand.New(rand.NewPCG(15, 16))
	categoryOf := map[string]string{}
	for range 500 {
		id := fmt.Sprint("id-", rng.IntN(80))
		if rng.IntN(3) == 0 {
			_, err := s.Delete(ctx, id)
			if _, present := categoryOf[id]; present != (err == nil) {
				t.Fatalf("Delete(%s): %v, present %v", id, err, present)
			}
			delete(categoryOf, id)
			continue
		}
		category := []string{"", "shoes", "bags", "hats"}[rng.IntN(4)]
		p := testProduct(rng, id, category, dim)
		if _, present := categoryOf[id]; present && rng.IntN(2) == 0 {
			p.Photos[0].Vector = nil // a metadata-only move to another category
		}
		if _, err := s.Upsert(ctx, p); err != nil {
			t.Fatal(err)
		}
		categoryOf[id] = category
	}
	want := map[string]int{}
	for _, c := range categoryOf {
		want[c]++
	}
	got, err := s.CountByCategory()
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(got, want) || s.Count() != len(categoryOf) {
		t.Fatalf("CountByCategory %v count %d, want %v count %d", got, s.Count(), want, len(categoryOf))
	}
	mustCheck(t, s)
}

func TestCheckFindsBrokenInvariants(t *testing.T) {
	const dim = 4
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(17, 18))
	// id-0 holds keys 1 and 2 (key 2 with a kept photo), id-1 key 3, id-2 keys 4 and 5.
	tests := []struct {
		name   string
		break_ func(tx *bolt.Tx) error
	}{
		{"key mapping removed", func(tx *bolt.Tx) error { return tx.Bucket(bucketKeys).Delete(keyBytes(3)) }},
		{"key mapped to another product", func(tx *bolt.Tx) error { return tx.Bucket(bucketKeys).Put(keyBytes(3), []byte("id-2")) }},
		{"stray key mapping", func(tx *bolt.Tx) error { return tx.Bucket(bucketKeys).Put(keyBytes(99), []byte("id-2")) }},
		{"vector removed", func(tx *bolt.Tx) error { return tx.Bucket(bucketVectors).Delete(keyBytes(1)) }},
		{"vector truncated", func(tx *bolt.Tx) error { return tx.Bucket(bucketVectors).Put(keyBytes(1), []byte{1, 2, 3}) }},
		{"stray vector", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketVectors).Put(keyBytes(99), encodeVector([]float32{1, 2, 3, 4}))
		}},
		{"vector holds NaN under a valid checksum", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketVectors).Put(keyBytes(4), encodeVector([]float32{1, float32(math.NaN()), 3, 4}))
		}},
		{"vector of another dimension", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketVectors).Put(keyBytes(4), encodeVector([]float32{1, 2, 3}))
		}},
		{"kept photo removed", func(tx *bolt.Tx) error { return tx.Bucket(bucketKept).Delete(keyBytes(2)) }},
		{"kept photo of another size", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketKept).Put(keyBytes(2), encodeKept([]byte("short")))
		}},
		{"stray kept photo", func(tx *bolt.Tx) error { return tx.Bucket(bucketKept).Put(keyBytes(3), encodeKept(nil)) }},
		{"product record garbled", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketProducts).Put([]byte("id-0"), []byte{productFormatV2, 0})
		}},
		{"product removed", func(tx *bolt.Tx) error { return tx.Bucket(bucketProducts).Delete([]byte("id-1")) }},
		{"category count wrong", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketCategories).Put(categoryKey("c"), seqBytes(99))
		}},
		{"stray category", func(tx *bolt.Tx) error { return tx.Bucket(bucketCategories).Put(categoryKey("x"), seqBytes(1)) }},
		{"log entry lost", func(tx *bolt.Tx) error { return tx.Bucket(bucketLog).Delete(seqBytes(2)) }},
		{"photo count in meta wrong", func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(metaPhotos, seqBytes(4)) }},
		{"kept bytes in meta wrong", func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(metaKeptBytes, seqBytes(1)) }},
		{"next key below a used key", func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(metaNextKey, keyBytes(3)) }},
		{"bucket dropped", func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketKept) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "c.db")
			s := openFast(t, path, dim)
			for i := range 3 {
				p := withPhotos(rng, fmt.Sprint("id-", i), "c", dim, 1+(i+1)%2)
				if i == 0 {
					p.Photos[1].Kept = []byte("a kept jpeg")
				}
				if _, err := s.Upsert(ctx, p); err != nil {
					t.Fatal(err)
				}
			}
			mustCheck(t, s)
			if err := s.db.Update(tc.break_); err != nil {
				t.Fatal(err)
			}
			if err := s.Check(); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Check after damage: %v, want ErrCorrupt", err)
			}
		})
	}
}

// usedBytes is the size bbolt's meta page claims for the file at path.
func usedBytes(t testing.TB, path string) int64 {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int64
	if err := db.View(func(tx *bolt.Tx) error { n = tx.Size(); return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}
