package catalog

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"lookalike/embed"
	"lookalike/internal/dataset"
	"lookalike/store"
)

// sharedEmbedder is opened once per test binary: loading ONNX Runtime and the model costs
// more than most tests.
var sharedEmbedder = sync.OnceValues(func() (*embed.Embedder, error) {
	// The default model and ONNX Runtime, found as embed.FindModel and FindRuntime say;
	// their errors tell how to install them.
	return embed.Open(context.Background(), embed.Config{})
})

func testEmbedder(t testing.TB) *embed.Embedder {
	t.Helper()
	e, err := sharedEmbedder()
	if err != nil {
		t.Fatalf("open embedder: %v", err)
	}
	return e
}

// cachingEmbedder is the real embedder with a memo of its answers by photo bytes, shared by
// every test of the binary (cachedEmbedder): many tests load the same shared photos, and
// the model is what costs, several times more under -race, whose instrumented decoders run
// at a fraction of their speed. Only successes are remembered; every answer is a copy.
type cachingEmbedder struct {
	*embed.Embedder
	mu       sync.Mutex
	vectors  map[[32]byte][]float32
	analyses map[analysisKey]embed.Analysis
}

type analysisKey struct {
	sum  [32]byte
	keep bool
}

var sharedCache = sync.OnceValues(func() (*cachingEmbedder, error) {
	e, err := sharedEmbedder()
	if err != nil {
		return nil, err
	}
	return &cachingEmbedder{Embedder: e, vectors: make(map[[32]byte][]float32), analyses: make(map[analysisKey]embed.Analysis)}, nil
})

// cachedEmbedder returns the shared caching embedder.
func cachedEmbedder(t testing.TB) *cachingEmbedder {
	t.Helper()
	e, err := sharedCache()
	if err != nil {
		t.Fatalf("open embedder: %v", err)
	}
	return e
}

func (c *cachingEmbedder) Embed(ctx context.Context, image []byte) ([]float32, error) {
	sum := sha256.Sum256(image)
	c.mu.Lock()
	vec, ok := c.vectors[sum]
	c.mu.Unlock()
	if ok {
		return slices.Clone(vec), nil
	}
	vec, err := c.Embedder.Embed(ctx, image)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.vectors[sum] = slices.Clone(vec)
	c.mu.Unlock()
	return vec, nil
}

func (c *cachingEmbedder) Analyze(ctx context.Context, image []byte, opt embed.AnalyzeOptions) (embed.Analysis, error) {
	k := analysisKey{sha256.Sum256(image), opt.Keep}
	c.mu.Lock()
	a, ok := c.analyses[k]
	c.mu.Unlock()
	if !ok {
		var err error
		if a, err = c.Embedder.Analyze(ctx, image, opt); err != nil {
			return embed.Analysis{}, err
		}
		c.mu.Lock()
		c.analyses[k] = a
		c.mu.Unlock()
	}
	a.Vector, a.Kept = slices.Clone(a.Vector), slices.Clone(a.Kept)
	return a, nil
}

// warm runs the photos through the model, a few at a time (a catalogue write starts one
// goroutine per new photo, which could overflow the embedder's queue with hundreds), so
// that the writes and queries that follow find them in the memo: Analyze for photos to
// store, Embed for queries.
func (c *cachingEmbedder) warm(t testing.TB, images [][]byte, analyze bool) {
	t.Helper()
	ctx := context.Background()
	next := make(chan []byte)
	errs := make(chan error, len(images))
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for img := range next {
				var err error
				if analyze {
					_, err = c.Analyze(ctx, img, embed.AnalyzeOptions{})
				} else {
					_, err = c.Embed(ctx, img)
				}
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	for _, img := range images {
		next <- img
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("embed: %v", err)
	}
}

// countingEmbedder counts the model calls a catalogue makes, passing them on.
type countingEmbedder struct {
	Embedder
	analyzed, embedded atomic.Int64
}

func (c *countingEmbedder) Analyze(ctx context.Context, image []byte, opt embed.AnalyzeOptions) (embed.Analysis, error) {
	c.analyzed.Add(1)
	return c.Embedder.Analyze(ctx, image, opt)
}

func (c *countingEmbedder) Embed(ctx context.Context, image []byte) ([]float32, error) {
	c.embedded.Add(1)
	return c.Embedder.Embed(ctx, image)
}

func TestMain(m *testing.M) {
	code := m.Run()
	if e, err := sharedEmbedder(); err == nil {
		_ = e.Close()
	}
	os.Exit(code)
}

func openCatalog(t testing.TB, dir string) *Catalog {
	t.Helper()
	c, err := Open(context.Background(), Config{DataDir: dir, Embedder: testEmbedder(t), Index: IndexParams{EFSearch: 200}})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return c
}

// single is w with one photo: the tiny helper for the one-photo products most tests use.
func single(w Write, ph PhotoWrite) Write {
	w.Photos = []PhotoWrite{ph}
	return w
}

// groceryItems returns every step-th grocery catalogue photo as a one-photo product.
func groceryItems(t testing.TB, step int) []Write {
	t.Helper()
	photos, err := dataset.LoadPhotos(dataset.PhotosGrocery)
	if err != nil {
		t.Fatalf("load grocery photos: %v", err)
	}
	var items []Write
	for i, p := range photos {
		if i%step != 0 || p.Fields["split"] == "val" {
			continue
		}
		b, err := os.ReadFile(p.Path)
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, single(Write{
			ID: filepath.Base(p.Path), Category: p.Fields["coarse_label"], Title: p.Label,
			Attributes: map[string]string{"label": p.Label, "split": p.Fields["split"]},
		}, PhotoWrite{Image: b}))
	}
	return items
}

func ids(rs []Result) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Product.ID
	}
	return out
}

func TestCatalogLifecycle(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c := openCatalog(t, dir)
	items := groceryItems(t, 25)
	if len(items) < 20 {
		t.Fatalf("only %d grocery items", len(items))
	}

	for i, r := range c.UpsertBatch(ctx, items) {
		if r.Err != nil || r.Outcome != Created {
			t.Fatalf("item %d: outcome %v err %v, want created", i, r.Outcome, r.Err)
		}
	}
	// The same photos and metadata again: nothing to embed or write.
	seq := c.emb().store.Seq()
	for i, r := range c.UpsertBatch(ctx, items) {
		if r.Err != nil || r.Outcome != Unchanged {
			t.Fatalf("re-upsert %d: outcome %v err %v, want unchanged", i, r.Outcome, r.Err)
		}
	}
	if c.emb().store.Seq() != seq {
		t.Fatalf("unchanged re-upsert wrote to the store: seq %d -> %d", seq, c.emb().store.Seq())
	}
	changed := items[0]
	changed.Title = "renamed"
	if r, err := c.Upsert(ctx, changed); err != nil || r.Outcome != Updated {
		t.Fatalf("metadata change: outcome %v err %v, want updated", r.Outcome, err)
	}
	got, err := c.Get(ctx, changed.ID, true)
	if err != nil || got.Title != "renamed" || len(got.Photos) != 1 || len(got.Photos[0].Vector) != c.Dim() || got.Photos[0].SHA256 == "" {
		t.Fatalf("Get after update: %+v, %v", got, err)
	}

	probe := items[3].ID
	res, err := c.SearchByID(ctx, probe, SearchOptions{K: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 10 || slices.Contains(ids(res), probe) {
		t.Fatalf("SearchByID(%s) = %v: want 10 results without the probe", probe, ids(res))
	}
	cat := items[3].Category
	res, err = c.SearchByID(ctx, probe, SearchOptions{K: 50, Filter: Filter{Categories: []string{cat}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Product.Category != cat {
			t.Fatalf("category filter %q returned %s in %q", cat, r.Product.ID, r.Product.Category)
		}
	}

	if _, err := c.Delete(ctx, probe); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, probe, false); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after delete: %v, want ErrNotFound", err)
	}
	before, err := c.SearchByID(ctx, items[5].ID, SearchOptions{K: 10})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, items[5].ID, false); !errors.Is(err, ErrClosed) {
		t.Fatalf("Get after Close: %v, want ErrClosed", err)
	}

	// Reopen from the snapshot, then from a damaged snapshot (forcing a rebuild): the same
	// answers both times.
	for _, damage := range []bool{false, true} {
		if damage {
			path := filepath.Join(dir, SnapshotFileName)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			b[len(b)/2] ^= 0xff
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		c2 := openCatalog(t, dir)
		after, err := c2.SearchByID(ctx, items[5].ID, SearchOptions{K: 10})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ids(before), ids(after)) {
			t.Fatalf("damaged=%v: results changed across reopen:\n%v\n%v", damage, ids(before), ids(after))
		}
		if c2.Len() != len(items)-1 {
			t.Fatalf("damaged=%v: %d items after reopen, want %d", damage, c2.Len(), len(items)-1)
		}
		if err := c2.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCatalogReplaysChangesAfterSnapshot saves a snapshot, writes more, and reopens without
// a final save (as after a crash): the change log must bring the graph up to date.
func TestCatalogReplaysChangesAfterSnapshot(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c := openCatalog(t, dir)
	vecs := randomVectors(40, c.Dim(), 1)
	for i := range 30 {
		if _, err := c.Upsert(ctx, single(Write{ID: fmt.Sprint("v", i)}, PhotoWrite{Vector: vecs[i]})); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.SaveSnapshot(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 30; i < 40; i++ {
		if _, err := c.Upsert(ctx, single(Write{ID: fmt.Sprint("v", i)}, PhotoWrite{Vector: vecs[i]})); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Delete(ctx, "v0"); err != nil {
		t.Fatal(err)
	}
	// Simulate a crash: close the store without saving the graph.
	c.life.Lock()
	c.closed = true
	c.life.Unlock()
	if err := c.emb().store.Close(); err != nil {
		t.Fatal(err)
	}

	c2 := openCatalog(t, dir)
	defer c2.Close()
	if c2.Len() != 39 || c2.emb().graph.Len() != 39 {
		t.Fatalf("after replay: %d products, %d in graph, want 39", c2.Len(), c2.emb().graph.Len())
	}
	res, err := c2.SearchByVector(ctx, vecs[35], SearchOptions{K: 1})
	if err != nil || len(res) != 1 || res[0].Product.ID != "v35" || res[0].Score < 0.999 {
		t.Fatalf("search for a vector written after the snapshot: %+v, %v", res, err)
	}
}

func randomVectors(n, dim int, seed uint64) [][]float32 {
	rng := rand.New(rand.NewPCG(seed, 7))
	out := make([][]float32, n)
	for i := range out {
		v := make([]float32, dim)
		for j := range v {
			v[j] = float32(rng.NormFloat64())
		}
		out[i] = v
	}
	return out
}

// near returns v plus a little noise of the given size.
func near(v []float32, noise float64, rng *rand.Rand) []float32 {
	out := make([]float32, len(v))
	var norm float64
	for _, x := range v {
		norm += float64(x) * float64(x)
	}
	scale := math.Sqrt(norm / float64(len(v)))
	for i, x := range v {
		out[i] = x + float32(rng.NormFloat64()*noise*scale)
	}
	return out
}

type vetoPair struct{ a, b string }

func (v vetoPair) SameProduct(_ context.Context, a, b Product, _ float32) (bool, error) {
	return !((a.ID == v.a && b.ID == v.b) || (a.ID == v.b && b.ID == v.a)), nil
}

func TestFindDuplicatesClusters(t *testing.T) {
	ctx := context.Background()
	c := openCatalog(t, t.TempDir())
	defer c.Close()
	rng := rand.New(rand.NewPCG(3, 4))
	base := randomVectors(20, c.Dim(), 2)
	// a0-a1-a2 near base[0] (a chain of near copies), b0-b1 near base[1], the rest apart.
	items := []Write{
		single(Write{ID: "a0", Category: "x"}, PhotoWrite{Vector: base[0]}),
		single(Write{ID: "a1", Category: "x"}, PhotoWrite{Vector: near(base[0], 0.1, rng)}),
		single(Write{ID: "a2", Category: "y"}, PhotoWrite{Vector: near(base[0], 0.1, rng)}),
		single(Write{ID: "b0", Category: "x"}, PhotoWrite{Vector: base[1]}),
		single(Write{ID: "b1", Category: "x"}, PhotoWrite{Vector: near(base[1], 0.1, rng)}),
	}
	for i := 2; i < 20; i++ {
		items = append(items, single(Write{ID: fmt.Sprint("lone", i), Category: "x"}, PhotoWrite{Vector: base[i]}))
	}
	for _, r := range c.UpsertBatch(ctx, items) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	collect := func(opt DuplicateOptions) [][]string {
		var out [][]string
		err := c.FindDuplicates(ctx, opt, func(cl Cluster) error {
			for _, e := range cl.Edges {
				if e.Score < opt.Threshold || e.A >= e.B {
					t.Errorf("edge %+v below threshold %v or unordered", e, opt.Threshold)
				}
			}
			out = append(out, cl.IDs)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	tests := []struct {
		name string
		opt  DuplicateOptions
		want [][]string
	}{
		{"all", DuplicateOptions{Threshold: 0.9}, [][]string{{"a0", "a1", "a2"}, {"b0", "b1"}}},
		{"category filter", DuplicateOptions{Threshold: 0.9, Filter: Filter{Categories: []string{"x"}}},
			[][]string{{"a0", "a1"}, {"b0", "b1"}}},
		{"extra check vetoes a pair", DuplicateOptions{Threshold: 0.9, Checks: []PairCheck{vetoPair{"b0", "b1"}}},
			[][]string{{"a0", "a1", "a2"}}},
		{"threshold above every pair", DuplicateOptions{Threshold: 0.9999}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := collect(tt.opt)
			if !slices.EqualFunc(got, tt.want, slices.Equal) {
				t.Fatalf("clusters %v, want %v", got, tt.want)
			}
		})
	}
	if err := c.FindDuplicates(ctx, DuplicateOptions{Threshold: 1.5}, func(Cluster) error { return nil }); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("threshold 1.5: %v, want ErrInvalidArgument", err)
	}
}

func TestCatalogValidation(t *testing.T) {
	ctx := context.Background()
	c := openCatalog(t, t.TempDir())
	defer c.Close()
	good := randomVectors(1, c.Dim(), 9)[0]
	nan := slices.Clone(good)
	nan[3] = float32(math.NaN())
	tests := []struct {
		name string
		item Write
	}{
		{"empty id", single(Write{}, PhotoWrite{Vector: good})},
		{"no photo", Write{ID: "x"}},
		{"photo with no content and no id", single(Write{ID: "x"}, PhotoWrite{})},
		{"both contents", single(Write{ID: "x"}, PhotoWrite{Vector: good, Image: []byte{1}})},
		{"short vector", single(Write{ID: "x"}, PhotoWrite{Vector: good[:10]})},
		{"NaN vector", single(Write{ID: "x"}, PhotoWrite{Vector: nan})},
		{"zero vector", single(Write{ID: "x"}, PhotoWrite{Vector: make([]float32, c.Dim())})},
		{"bad UTF-8 id", single(Write{ID: "\xff"}, PhotoWrite{Vector: good})},
		{"photo id with a slash", single(Write{ID: "x"}, PhotoWrite{ID: "a/b", Vector: good})},
		{"bad UTF-8 photo id", single(Write{ID: "x"}, PhotoWrite{ID: "\xff", Vector: good})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := c.Upsert(ctx, tt.item); !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("got %v, want ErrInvalidArgument", err)
			}
		})
	}
	if _, err := c.Upsert(ctx, single(Write{ID: "garbage"}, PhotoWrite{Image: []byte("not an image")})); !errors.Is(err, embed.ErrUnsupportedFormat) {
		t.Fatalf("garbage image: %v, want embed.ErrUnsupportedFormat", err)
	}
	badSearches := []SearchOptions{
		{K: 0}, {K: -1}, {K: MaxK + 1},
		{K: 1, EF: -1}, {K: 1, EF: MaxEF + 1},
		{K: 1, MinScore: float32(math.NaN())},
		{K: 1, Diversity: -0.1}, {K: 1, Diversity: 1.1}, {K: 1, Diversity: float32(math.NaN())},
		{K: 1, NotLike: make([]string, MaxNotLike+1)},
		{K: 1, Expand: -1}, {K: 1, Expand: MaxExpand + 1},
		{K: 1, Expand: 3, ExpandAlpha: -1}, {K: 1, Expand: 3, ExpandAlpha: float32(math.NaN())},
	}
	for _, opt := range badSearches {
		if _, err := c.SearchByVector(ctx, good, opt); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("search options %+v: %v, want ErrInvalidArgument", opt, err)
		}
	}
	if _, err := c.SearchByID(ctx, "missing", SearchOptions{K: 1}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown id: %v, want ErrNotFound", err)
	}
	if c.Len() != 0 {
		t.Fatalf("rejected items were stored: %d", c.Len())
	}
}

// TestCatalogConcurrentUpsertSearchDelete runs writers of products with one to three
// photos beside searches of every kind, photo removals, deletes and snapshot saves: the
// table, the graph and the store must agree at the end, and after a reopen.
func TestCatalogConcurrentUpsertSearchDelete(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c := openCatalog(t, dir)
	const products = 160
	vecs := randomVectors(3*products, c.Dim(), 5)
	photosOf := func(i int) []PhotoWrite {
		var out []PhotoWrite
		for j := range 1 + i%3 {
			out = append(out, PhotoWrite{ID: fmt.Sprint("ph", j), Vector: vecs[3*i+j]})
		}
		return out
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < products; i += 4 {
				id := fmt.Sprint("w", i)
				if _, err := c.Upsert(ctx, Write{ID: id, Category: fmt.Sprint(i % 3), Attributes: map[string]string{"g": fmt.Sprint(i % 7)}, Photos: photosOf(i)}); err != nil {
					t.Error(err)
					return
				}
				if _, err := c.SearchByVector(ctx, vecs[3*i], SearchOptions{K: 5, Filter: Filter{Categories: []string{"1"}}}); err != nil {
					t.Error(err)
					return
				}
				rs, err := c.SearchByID(ctx, id, SearchOptions{K: 5, GroupBy: "g", NotLike: []string{fmt.Sprint("w", i-1)}, Diversity: 0.3})
				if err != nil && !errors.Is(err, ErrNotFound) {
					t.Error(err)
					return
				}
				if slices.Contains(ids(rs), id) {
					t.Errorf("SearchByID(%s) returned itself", id)
				}
				if i%3 == 2 && i%5 == 0 {
					// Drop one of its three photos, keeping the others.
					if _, err := c.Upsert(ctx, Write{ID: id, Category: fmt.Sprint(i % 3), Attributes: map[string]string{"g": fmt.Sprint(i % 7)}, KeepOtherPhotos: true, RemovePhotos: []string{"ph1"}}); err != nil {
						t.Error(err)
						return
					}
				}
				if p, err := c.Get(ctx, id, true); err != nil || len(p.Photos) == 0 {
					t.Errorf("Get %s: %v", id, err)
					return
				}
				if i%10 == 0 {
					if _, err := c.Delete(ctx, id); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 5 {
			if err := c.SaveSnapshot(ctx); err != nil {
				t.Error(err)
			}
			if _, err := c.Stats(ctx); err != nil {
				t.Error(err)
			}
			if err := c.FindDuplicates(ctx, DuplicateOptions{}, func(Cluster) error { return nil }); err != nil {
				t.Error(err)
			}
		}
	}()
	wg.Wait()
	wantProducts, wantPhotos := 0, map[string]int{}
	for i := range products {
		if i%10 == 0 {
			continue
		}
		wantProducts++
		n := 1 + i%3
		if i%3 == 2 && i%5 == 0 {
			n--
		}
		wantPhotos[fmt.Sprint("w", i)] = n
	}
	total := 0
	for _, n := range wantPhotos {
		total += n
	}
	for round, cat := range []*Catalog{c, nil} {
		if cat == nil {
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			cat = openCatalog(t, dir)
			defer cat.Close()
		}
		st, err := cat.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if cat.Len() != wantProducts || st.Photos != total || cat.emb().graph.Len() != total || cat.emb().store.Photos() != total {
			t.Fatalf("round %d: %d products, %d photos (graph %d, store %d), want %d and %d",
				round, cat.Len(), st.Photos, cat.emb().graph.Len(), cat.emb().store.Photos(), wantProducts, total)
		}
		for id, n := range wantPhotos {
			p, err := cat.Get(ctx, id, true)
			if err != nil || len(p.Photos) != n {
				t.Fatalf("round %d: %s has %d photos (%v), want %d", round, id, len(p.Photos), err, n)
			}
		}
	}
}

// TestCatalogRebuildsSnapshotOfAnotherHistory puts a store from another history, with the
// same sequence number and the same keys, under a saved graph: the snapshot's generation
// tag differs from the store's, so the catalogue must rebuild instead of serving the old
// graph's vectors.
func TestCatalogRebuildsSnapshotOfAnotherHistory(t *testing.T) {
	ctx := context.Background()
	const n = 30
	upsertAll := func(c *Catalog, vecs [][]float32) {
		t.Helper()
		for i, v := range vecs {
			if _, err := c.Upsert(ctx, single(Write{ID: fmt.Sprint("p", i)}, PhotoWrite{Vector: v})); err != nil {
				t.Fatal(err)
			}
		}
	}
	openLogged := func(dir string) (*Catalog, *lockedLog) {
		t.Helper()
		logs := &lockedLog{}
		c, err := Open(ctx, Config{DataDir: dir, Embedder: testEmbedder(t), Logger: slog.New(slog.NewTextHandler(logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		return c, logs
	}

	dirA, dirB := t.TempDir(), t.TempDir()
	a, _ := openLogged(dirA)
	vecsA := randomVectors(n, a.Dim(), 11)
	upsertAll(a, vecsA)
	if err := a.Close(); err != nil { // saves A's snapshot at seq n
		t.Fatal(err)
	}
	b, _ := openLogged(dirB)
	vecsB := randomVectors(n, b.Dim(), 12)
	upsertAll(b, vecsB)
	backup := filepath.Join(t.TempDir(), "b.db")
	if _, err := b.emb().store.BackupFile(backup); err != nil {
		t.Fatal(err)
	}
	seqB := b.emb().store.Seq()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	// Same generation: the snapshot is used.
	a, logs := openLogged(dirA)
	if !strings.Contains(logs.String(), "graph loaded from snapshot") {
		t.Fatalf("reopen of the same history did not use its snapshot:\n%s", logs)
	}
	if a.emb().store.Seq() != seqB {
		t.Fatalf("the two histories should reach the same seq: %d and %d", a.emb().store.Seq(), seqB)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}

	// B's store under A's snapshot: same seq, same keys, another generation.
	if err := store.Restore(backup, filepath.Join(dirA, StoreFileName), store.RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	a, logs = openLogged(dirA)
	defer a.Close()
	if !strings.Contains(logs.String(), "another store history") || strings.Contains(logs.String(), "graph loaded from snapshot") {
		t.Fatalf("the snapshot of another history was not refused:\n%s", logs)
	}
	for i, v := range vecsB {
		res, err := a.SearchByVector(ctx, v, SearchOptions{K: 1})
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprint("p", i); len(res) != 1 || res[0].Product.ID != want || res[0].Score < 0.999 {
			t.Fatalf("search for %s's restored vector found %+v", want, res)
		}
	}
}

// lockedLog collects log output written from any goroutine.
type lockedLog struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// TestFindDuplicatesConcurrentDeterministic scans a catalogue of many small groups of near
// copies on one and on many goroutines: the clusters must equal the connected components of
// the exact pairs above the threshold, identically (edges, scores, order) every time.
func TestFindDuplicatesConcurrentDeterministic(t *testing.T) {
	ctx := context.Background()
	c := openCatalog(t, t.TempDir())
	defer c.Close()
	const groups = 120
	rng := rand.New(rand.NewPCG(5, 6))
	base := randomVectors(groups, c.Dim(), 9)
	var items []Write
	for g, b := range base {
		for m := range 1 + g%4 { // groups of 1 to 4 near copies
			items = append(items, single(Write{ID: fmt.Sprintf("g%03d-%d", g, m)}, PhotoWrite{Vector: near(b, 0.15, rng)}))
		}
	}
	for _, r := range c.UpsertBatch(ctx, items) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	const threshold = 0.9

	// The exact answer: components of every pair at or above the threshold.
	norm := func(v []float32) []float32 {
		var s float64
		for _, x := range v {
			s += float64(x) * float64(x)
		}
		out := make([]float32, len(v))
		for i, x := range v {
			out[i] = float32(float64(x) / math.Sqrt(s))
		}
		return out
	}
	parent := make(map[string]string)
	var find func(string) string
	find = func(x string) string {
		if p, ok := parent[x]; ok && p != x {
			r := find(p)
			parent[x] = r
			return r
		}
		return x
	}
	for i := range items {
		for j := i + 1; j < len(items); j++ {
			var dot float64
			a, b := norm(items[i].Photos[0].Vector), norm(items[j].Photos[0].Vector)
			for d := range a {
				dot += float64(a[d]) * float64(b[d])
			}
			if dot >= threshold {
				ra, rb := find(items[i].ID), find(items[j].ID)
				if ra != rb {
					parent[max(ra, rb)] = min(ra, rb)
				}
			}
		}
	}
	members := make(map[string][]string)
	for _, it := range items {
		members[find(it.ID)] = append(members[find(it.ID)], it.ID)
	}
	want := make(map[string][]string)
	for _, ids := range members {
		if len(ids) > 1 {
			slices.Sort(ids)
			want[ids[0]] = ids
		}
	}
	if len(want) < groups/2 {
		t.Fatalf("only %d exact clusters; the test data is not what it claims", len(want))
	}

	scan := func(procs int) []Cluster {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
		var out []Cluster
		if err := c.FindDuplicates(ctx, DuplicateOptions{Threshold: threshold}, func(cl Cluster) error {
			out = append(out, cl)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	first := scan(1)
	if len(first) != len(want) {
		t.Fatalf("%d clusters, want %d", len(first), len(want))
	}
	for i, cl := range first {
		if !slices.Equal(cl.IDs, want[cl.IDs[0]]) {
			t.Fatalf("cluster %v, the exact component is %v", cl.IDs, want[cl.IDs[0]])
		}
		if i > 0 && len(cl.IDs) > len(first[i-1].IDs) {
			t.Fatalf("cluster %d (%d ids) after a smaller one", i, len(cl.IDs))
		}
	}
	for _, procs := range []int{8, 3, 8} {
		if got := scan(procs); !reflect.DeepEqual(got, first) {
			t.Fatalf("GOMAXPROCS=%d: the clusters differ from the single-core scan", procs)
		}
	}
}

// cancelOnCheck cancels the scan's context from inside the first pair check.
type cancelOnCheck struct{ cancel context.CancelFunc }

func (c cancelOnCheck) SameProduct(context.Context, Product, Product, float32) (bool, error) {
	c.cancel()
	return true, nil
}

func TestFindDuplicatesCancelled(t *testing.T) {
	c := openCatalog(t, t.TempDir())
	defer c.Close()
	base := randomVectors(40, c.Dim(), 13)
	rng := rand.New(rand.NewPCG(1, 2))
	var items []Write
	for i, b := range base {
		items = append(items, single(Write{ID: fmt.Sprint("a", i)}, PhotoWrite{Vector: b}), single(Write{ID: fmt.Sprint("b", i)}, PhotoWrite{Vector: near(b, 0.05, rng)}))
	}
	for _, r := range c.UpsertBatch(context.Background(), items) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	done, cancel := context.WithCancel(context.Background())
	cancel()
	ctx, cancelLater := context.WithCancel(context.Background())
	defer cancelLater()
	tests := []struct {
		name string
		ctx  context.Context
		opt  DuplicateOptions
	}{
		{"cancelled before", done, DuplicateOptions{}},
		{"cancelled during the checks", ctx, DuplicateOptions{Checks: []PairCheck{cancelOnCheck{cancelLater}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			emitted := 0
			err := c.FindDuplicates(tt.ctx, tt.opt, func(Cluster) error { emitted++; return nil })
			if !errors.Is(err, context.Canceled) || emitted != 0 {
				t.Fatalf("err %v after %d clusters, want context.Canceled and none", err, emitted)
			}
		})
	}
}
