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

func randomVector(rng *rand.Rand, dim int) []float32 {
	v := make([]float32, dim)
	for i := range v {
		v[i] = float32(rng.NormFloat64())
	}
	return v
}

func testItem(rng *rand.Rand, id, category string, dim int) Item {
	return Item{
		ID:       id,
		Category: category,
		Title:    "title of " + id,
		ImageURL: "https://example.test/" + id + ".jpg",
		Attributes: map[string]string{
			"colour": []string{"red", "blue", "green"}[rng.IntN(3)],
			"size":   fmt.Sprint(rng.IntN(50)),
		},
		ImageSHA256: strings.Repeat("ab", 32),
		Vector:      randomVector(rng, dim),
	}
}

// sameVector compares bit patterns, so -0 and NaN payloads would count as differences.
func sameVector(a, b []float32) bool {
	return slices.EqualFunc(a, b, func(x, y float32) bool { return math.Float32bits(x) == math.Float32bits(y) })
}

func sameItem(t *testing.T, got, want Item) {
	t.Helper()
	if got.ID != want.ID || got.Key != want.Key || got.Category != want.Category || got.Title != want.Title ||
		got.ImageURL != want.ImageURL || got.ImageSHA256 != want.ImageSHA256 ||
		!got.Created.Equal(want.Created) || !got.Updated.Equal(want.Updated) ||
		!maps.Equal(got.Attributes, want.Attributes) || !sameVector(got.Vector, want.Vector) {
		t.Fatalf("item differs:\n got %+v\nwant %+v", got, want)
	}
}

func TestOpenCreatesAndReopens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.db")
	s, err := Open(path, Options{ModelIdentity: testModel, Dim: 8})
	if err != nil {
		t.Fatal(err)
	}
	if s.Seq() != 0 || s.Count() != 0 || s.Dim() != 8 || s.ModelIdentity() != testModel || s.Generation() == "" {
		t.Fatalf("new store: seq %d count %d dim %d model %q generation %q", s.Seq(), s.Count(), s.Dim(), s.ModelIdentity(), s.Generation())
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 5 {
		if _, err := s.Upsert(context.Background(), testItem(rng, fmt.Sprint("id-", i), "shoes", 8)); err != nil {
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

	// A tool that does not know the model may open an existing store and learns it.
	s, err = Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Seq() != 5 || s.Count() != 5 || s.Dim() != 8 || s.ModelIdentity() != testModel || s.Generation() != generation {
		t.Fatalf("reopened: seq %d count %d dim %d model %q generation %q", s.Seq(), s.Count(), s.Dim(), s.ModelIdentity(), s.Generation())
	}
	if _, err := s.Upsert(context.Background(), testItem(rng, "x", "", 8)); err == nil {
		t.Fatal("Upsert on a read-only store succeeded")
	}
}

func TestOpenRefuses(t *testing.T) {
	dir := t.TempDir()
	existing := filepath.Join(dir, "existing.db")
	s := openTest(t, existing, 16)
	if _, err := s.Upsert(context.Background(), testItem(rand.New(rand.NewPCG(1, 1)), "a", "c", 16)); err != nil {
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

func TestUpsertRejectsInvalidItems(t *testing.T) {
	const dim = 4
	s := openTest(t, filepath.Join(t.TempDir(), "c.db"), dim)
	good := func() Item { return Item{ID: "ok", Category: "c", Vector: []float32{1, 0, 0, 0}} }
	with := func(change func(*Item)) Item { it := good(); change(&it); return it }
	tests := []struct {
		name string
		item Item
		want error
	}{
		{"empty id", with(func(it *Item) { it.ID = "" }), ErrInvalidID},
		{"id too long", with(func(it *Item) { it.ID = strings.Repeat("x", MaxIDBytes+1) }), ErrInvalidID},
		{"id not UTF-8", with(func(it *Item) { it.ID = "bad\xff" }), ErrInvalidID},
		{"id with newline", with(func(it *Item) { it.ID = "a\nb" }), ErrInvalidID},
		{"short vector", with(func(it *Item) { it.Vector = []float32{1, 2, 3} }), ErrInvalidVector},
		{"long vector", with(func(it *Item) { it.Vector = make([]float32, dim+1) }), ErrInvalidVector},
		{"no vector", with(func(it *Item) { it.Vector = nil }), ErrInvalidVector},
		{"NaN", with(func(it *Item) { it.Vector[2] = float32(math.NaN()) }), ErrInvalidVector},
		{"+Inf", with(func(it *Item) { it.Vector[0] = float32(math.Inf(1)) }), ErrInvalidVector},
		{"-Inf", with(func(it *Item) { it.Vector[3] = float32(math.Inf(-1)) }), ErrInvalidVector},
		{"category too long", with(func(it *Item) { it.Category = strings.Repeat("c", MaxCategoryBytes+1) }), ErrInvalidMetadata},
		{"title not UTF-8", with(func(it *Item) { it.Title = "\xc3\x28" }), ErrInvalidMetadata},
		{"too many attributes", with(func(it *Item) {
			it.Attributes = map[string]string{}
			for i := range MaxAttributes + 1 {
				it.Attributes[fmt.Sprint(i)] = "v"
			}
		}), ErrInvalidMetadata},
		{"empty attribute name", with(func(it *Item) { it.Attributes = map[string]string{"": "v"} }), ErrInvalidMetadata},
		{"attribute value too long", with(func(it *Item) {
			it.Attributes = map[string]string{"k": strings.Repeat("v", MaxAttributeValueBytes+1)}
		}), ErrInvalidMetadata},
		{"sha256 too short", with(func(it *Item) { it.ImageSHA256 = "abcd" }), ErrInvalidMetadata},
		{"sha256 not hex", with(func(it *Item) { it.ImageSHA256 = strings.Repeat("zz", 32) }), ErrInvalidMetadata},
		{"created before 1700", with(func(it *Item) { it.Created = time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC) }), ErrInvalidMetadata},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Upsert(context.Background(), tc.item)
			if !errors.Is(err, tc.want) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("Upsert: %v, want %v (and ErrInvalid)", err, tc.want)
			}
			if s.Seq() != 0 || s.Count() != 0 {
				t.Fatalf("a rejected upsert wrote: seq %d count %d", s.Seq(), s.Count())
			}
		})
	}
	if _, err := s.Upsert(context.Background(), good()); err != nil {
		t.Fatalf("the valid item: %v", err)
	}
	if _, err := s.Delete(context.Background(), ""); !errors.Is(err, ErrInvalidID) {
		t.Fatalf("Delete(\"\"): %v, want ErrInvalidID", err)
	}
}

func TestUpsertGetRoundTrip(t *testing.T) {
	const dim = 32
	s := openTest(t, filepath.Join(t.TempDir(), "c.db"), dim)
	rng := rand.New(rand.NewPCG(3, 4))
	in := testItem(rng, "sku-42/ß", "dresses", dim)
	in.ImageSHA256 = strings.ToUpper(strings.Repeat("0f", 32))
	in.Vector[0] = float32(math.Copysign(0, -1))
	in.Vector[1] = math.SmallestNonzeroFloat32
	in.Vector[2] = math.MaxFloat32
	created := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.FixedZone("X", 3600))
	in.Created = created
	before := time.Now()
	stored, err := s.Upsert(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	if stored.Key == 0 || !stored.Created.Equal(created) || stored.Updated.Before(before.Add(-time.Second)) ||
		stored.ImageSHA256 != strings.Repeat("0f", 32) {
		t.Fatalf("stored item: key %d created %v updated %v sha %q", stored.Key, stored.Created, stored.Updated, stored.ImageSHA256)
	}
	// The store must hold its own copies: changing the caller's slices changes nothing stored.
	in.Vector[5] = 999
	in.Attributes["colour"] = "changed"

	byID, err := s.Get(in.ID)
	if err != nil {
		t.Fatal(err)
	}
	sameItem(t, byID, stored)
	byKey, err := s.GetByKey(stored.Key)
	if err != nil {
		t.Fatal(err)
	}
	sameItem(t, byKey, stored)
	if _, err := s.Get("absent"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(absent): %v", err)
	}
	if _, err := s.GetByKey(stored.Key + 1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetByKey(unknown): %v", err)
	}
}

func TestUpsertReplaceKeepsKeyAndCreated(t *testing.T) {
	const dim = 8
	ctx := context.Background()
	s := openTest(t, filepath.Join(t.TempDir(), "c.db"), dim)
	rng := rand.New(rand.NewPCG(5, 6))
	first, err := s.Upsert(ctx, testItem(rng, "p1", "shoes", dim))
	if err != nil {
		t.Fatal(err)
	}
	other, err := s.Upsert(ctx, testItem(rng, "p2", "shoes", dim))
	if err != nil {
		t.Fatal(err)
	}
	replacement := testItem(rng, "p1", "bags", dim)
	replacement.Attributes = nil
	second, err := s.Upsert(ctx, replacement)
	if err != nil {
		t.Fatal(err)
	}
	if second.Key != first.Key || !second.Created.Equal(first.Created) || second.Updated.Before(first.Updated) {
		t.Fatalf("replace: key %d->%d created %v->%v", first.Key, second.Key, first.Created, second.Created)
	}
	got, err := s.Get("p1")
	if err != nil {
		t.Fatal(err)
	}
	sameItem(t, got, second)
	if s.Count() != 2 || s.Seq() != 3 {
		t.Fatalf("count %d seq %d, want 2 and 3", s.Count(), s.Seq())
	}
	counts, err := s.CountByCategory()
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]int{"shoes": 1, "bags": 1}; !maps.Equal(counts, want) {
		t.Fatalf("CountByCategory %v, want %v", counts, want)
	}
	var changes []Change
	if err := s.ChangesSince(0, func(c Change) error { changes = append(changes, c); return nil }); err != nil {
		t.Fatal(err)
	}
	want := []Change{{1, first.Key, false}, {2, other.Key, false}, {3, first.Key, false}}
	if !slices.Equal(changes, want) {
		t.Fatalf("changes %v, want %v", changes, want)
	}
}

func TestDeleteNeverReusesKeys(t *testing.T) {
	const dim = 4
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "c.db")
	s := openTest(t, path, dim)
	rng := rand.New(rand.NewPCG(7, 8))
	seen := map[uint32]bool{}
	var lastKey uint32
	for round := range 3 {
		var ids []string
		for i := range 20 {
			it, err := s.Upsert(ctx, testItem(rng, fmt.Sprintf("id-%d", i), fmt.Sprint("cat-", i%3), dim))
			if err != nil {
				t.Fatal(err)
			}
			if seen[it.Key] || it.Key <= lastKey {
				t.Fatalf("round %d: key %d reused or not increasing (last %d)", round, it.Key, lastKey)
			}
			seen[it.Key] = true
			lastKey = it.Key
			ids = append(ids, it.ID)
		}
		// Delete everything; the next round adds the same ids again.
		for _, id := range ids {
			gone, err := s.Delete(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if gone.ID != id || len(gone.Vector) != dim {
				t.Fatalf("Delete returned %+v", gone)
			}
			if _, err := s.Get(id); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Get after Delete: %v", err)
			}
			if _, err := s.GetByKey(gone.Key); !errors.Is(err, ErrNotFound) {
				t.Fatalf("GetByKey after Delete: %v", err)
			}
		}
		if _, err := s.Delete(ctx, ids[0]); !errors.Is(err, ErrNotFound) {
			t.Fatalf("second Delete: %v", err)
		}
		counts, err := s.CountByCategory()
		if err != nil {
			t.Fatal(err)
		}
		if s.Count() != 0 || len(counts) != 0 {
			t.Fatalf("after deleting everything: count %d categories %v", s.Count(), counts)
		}
		if err := s.Check(); err != nil {
			t.Fatal(err)
		}
	}
	// The key counter survives a reopen.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, path, dim)
	it, err := s.Upsert(ctx, testItem(rng, "after-reopen", "", dim))
	if err != nil {
		t.Fatal(err)
	}
	if it.Key <= lastKey {
		t.Fatalf("key %d after reopen, last was %d", it.Key, lastKey)
	}
}

func TestUpsertBatchIsAllOrNothing(t *testing.T) {
	const dim = 8
	ctx := context.Background()
	s := openTest(t, filepath.Join(t.TempDir(), "c.db"), dim)
	rng := rand.New(rand.NewPCG(9, 10))
	batch := make([]Item, 50)
	for i := range batch {
		batch[i] = testItem(rng, fmt.Sprint("b-", i), "c", dim)
	}

	bad := slices.Clone(batch)
	bad[37].Vector = bad[37].Vector[:3]
	if _, err := s.UpsertBatch(ctx, bad); !errors.Is(err, ErrInvalidVector) || !strings.Contains(err.Error(), "item 37") {
		t.Fatalf("batch with a bad item: %v", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.UpsertBatch(cancelled, batch); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled batch: %v", err)
	}
	if s.Seq() != 0 || s.Count() != 0 {
		t.Fatalf("failed batches wrote: seq %d count %d", s.Seq(), s.Count())
	}

	// The same id twice in one batch: the later one wins and keeps the first one's key.
	dup := testItem(rng, "b-3", "other", dim)
	out, err := s.UpsertBatch(ctx, append(slices.Clone(batch), dup))
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != len(batch)+1 || out[len(out)-1].Key != out[3].Key {
		t.Fatalf("batch result: %d items, duplicate key %d vs %d", len(out), out[len(out)-1].Key, out[3].Key)
	}
	if s.Seq() != uint64(len(batch)+1) || s.Count() != len(batch) {
		t.Fatalf("after batch: seq %d count %d", s.Seq(), s.Count())
	}
	got, err := s.Get("b-3")
	if err != nil {
		t.Fatal(err)
	}
	if got.Category != "other" || !sameVector(got.Vector, dup.Vector) {
		t.Fatalf("b-3 holds %+v", got)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

func TestChangesSinceAndTruncateLog(t *testing.T) {
	const dim = 4
	ctx := context.Background()
	s := openTest(t, filepath.Join(t.TempDir(), "c.db"), dim)
	rng := rand.New(rand.NewPCG(11, 12))
	var want []Change
	for i := range 30 {
		it, err := s.Upsert(ctx, testItem(rng, fmt.Sprint("id-", i%10), "", dim))
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, Change{Seq: s.Seq(), Key: it.Key})
		if i%4 == 3 {
			gone, err := s.Delete(ctx, it.ID)
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, Change{Seq: s.Seq(), Key: gone.Key, Deleted: true})
		}
	}
	collect := func(since uint64) ([]Change, error) {
		var got []Change
		err := s.ChangesSince(since, func(c Change) error {
			// fn runs outside the read transaction, so it may read the store.
			if _, err := s.GetByKey(c.Key); err != nil && !errors.Is(err, ErrNotFound) {
				return err
			}
			got = append(got, c)
			return nil
		})
		return got, err
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
	if st.LogEntries != 0 || st.Seq != seq || st.Items != s.Count() || st.FileBytes <= 0 {
		t.Fatalf("stats %+v", st)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

func TestForEachVisitsEveryItemInKeyOrder(t *testing.T) {
	const dim = 16
	ctx := context.Background()
	s := openTest(t, filepath.Join(t.TempDir(), "c.db"), dim)
	rng := rand.New(rand.NewPCG(13, 14))
	want := map[uint32]Item{}
	for i := range 300 {
		it, err := s.Upsert(ctx, testItem(rng, fmt.Sprintf("%05d", rng.IntN(200)), fmt.Sprint(i%7), dim))
		if err != nil {
			t.Fatal(err)
		}
		want[it.Key] = it
		if rng.IntN(5) == 0 {
			gone, err := s.Delete(ctx, it.ID)
			if err != nil {
				t.Fatal(err)
			}
			delete(want, gone.Key)
		}
	}
	var keys []uint32
	err := s.ForEach(func(it Item) error {
		w, ok := want[it.Key]
		if !ok {
			return fmt.Errorf("ForEach returned key %d which is not stored", it.Key)
		}
		sameItem(t, it, w)
		keys = append(keys, it.Key)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != len(want) || !slices.IsSorted(keys) || len(want) != s.Count() {
		t.Fatalf("ForEach visited %d keys (sorted %v), %d stored, Count %d", len(keys), slices.IsSorted(keys), len(want), s.Count())
	}
	visited := 0
	err = s.ForEachVector(func(key uint32, vec []float32) error {
		if !sameVector(vec, want[key].Vector) {
			return fmt.Errorf("vector of key %d differs", key)
		}
		visited++
		return nil
	})
	if err != nil || visited != len(want) {
		t.Fatalf("ForEachVector: %v, visited %d of %d", err, visited, len(want))
	}
	var metaKeys []uint32
	err = s.ForEachMetadata(func(it Item) error {
		w := want[it.Key]
		if it.ID != w.ID || it.Category != w.Category || it.Vector != nil {
			return fmt.Errorf("ForEachMetadata key %d: id %q category %q vector %d values; want %q %q none",
				it.Key, it.ID, it.Category, len(it.Vector), w.ID, w.Category)
		}
		metaKeys = append(metaKeys, it.Key)
		return nil
	})
	if err != nil || !slices.Equal(metaKeys, keys) {
		t.Fatalf("ForEachMetadata: %v, visited %v, ForEach visited %v", err, metaKeys, keys)
	}
	stop := errors.New("stop")
	calls := 0
	if err := s.ForEach(func(Item) error { calls++; return stop }); !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("ForEach with a failing fn: %v after %d calls", err, calls)
	}
}

func TestCountByCategoryFollowsRandomWrites(t *testing.T) {
	const dim = 4
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "c.db")
	s := openTest(t, path, dim)
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
		if _, err := s.Upsert(ctx, testItem(rng, id, category, dim)); err != nil {
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
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

func TestCheckFindsBrokenInvariants(t *testing.T) {
	const dim = 4
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(17, 18))
	tests := []struct {
		name   string
		break_ func(tx *bolt.Tx) error
	}{
		{"key mapping removed", func(tx *bolt.Tx) error { return tx.Bucket(bucketKeys).Delete(keyBytes(2)) }},
		{"vector removed", func(tx *bolt.Tx) error { return tx.Bucket(bucketVectors).Delete(keyBytes(1)) }},
		{"vector truncated", func(tx *bolt.Tx) error { return tx.Bucket(bucketVectors).Put(keyBytes(1), []byte{1, 2, 3}) }},
		{"item record garbled", func(tx *bolt.Tx) error { return tx.Bucket(bucketItems).Put([]byte("id-0"), []byte{itemFormatV1, 0}) }},
		{"category count wrong", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketCategories).Put(categoryKey("c"), seqBytes(99))
		}},
		{"log entry lost", func(tx *bolt.Tx) error { return tx.Bucket(bucketLog).Delete(seqBytes(2)) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "c.db")
			s := openTest(t, path, dim)
			for i := range 3 {
				if _, err := s.Upsert(ctx, testItem(rng, fmt.Sprint("id-", i), "c", dim)); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Check(); err != nil {
				t.Fatalf("Check before damage: %v", err)
			}
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
