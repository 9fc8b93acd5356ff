package catalog

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"lookalike/internal/dataset"
)

// groceryPhoto is one photo of the shared grocery collection: 31 packaged products, each
// with one "iconic" catalogue shot, 19-42 in-store "train" photos and a few "val" street
// photos that serve as shoppers' queries.
type groceryPhoto struct {
	name  string // file name without folder and extension: iconic__X_Iconic, train__X_001
	label string // the product
	kind  string // the coarse label: Milk, Juice, Yoghurt...
	split string // iconic, train or val
	image []byte
}

var loadGrocery = sync.OnceValues(func() ([]groceryPhoto, error) {
	rows, err := dataset.LoadPhotos(dataset.PhotosGrocery)
	if err != nil {
		return nil, err
	}
	out := make([]groceryPhoto, 0, len(rows))
	for _, r := range rows {
		b, err := os.ReadFile(r.Path)
		if err != nil {
			return nil, err
		}
		out = append(out, groceryPhoto{
			name: strings.TrimSuffix(filepath.Base(r.Path), filepath.Ext(r.Path)), label: r.Label,
			kind: r.Fields["coarse_label"], split: r.Fields["split"], image: b,
		})
	}
	// File order: iconic__, train__, val__, each by product then number.
	slices.SortFunc(out, func(a, b groceryPhoto) int { return strings.Compare(a.name, b.name) })
	return out, nil
})

func groceryPhotos(t testing.TB) []groceryPhoto {
	t.Helper()
	photos, err := loadGrocery()
	if err != nil {
		t.Fatalf("load grocery photos: %v", err)
	}
	return photos
}

// groceryCatalogue is a choice of grocery photos: each product's catalogue photos (its
// iconic shot first, then its train photos in file order) and the street photos.
type groceryCatalogue struct {
	labels  []string                  // sorted
	photos  map[string][]groceryPhoto // by label: iconic, then train
	kind    map[string]string         // label -> coarse label
	queries []groceryPhoto            // val photos of the chosen products
}

// groceryChoice takes every product with at most perProduct train photos each (0: all).
func groceryChoice(t testing.TB, perProduct int) groceryCatalogue {
	t.Helper()
	g := groceryCatalogue{photos: make(map[string][]groceryPhoto), kind: make(map[string]string)}
	train := make(map[string]int)
	for _, p := range groceryPhotos(t) {
		switch p.split {
		case "iconic":
			g.photos[p.label] = slices.Insert(g.photos[p.label], 0, p)
		case "train":
			if perProduct == 0 || train[p.label] < perProduct {
				train[p.label]++
				g.photos[p.label] = append(g.photos[p.label], p)
			}
		case "val":
			g.queries = append(g.queries, p)
		}
		g.kind[p.label] = p.kind
	}
	for label := range g.photos {
		g.labels = append(g.labels, label)
	}
	slices.Sort(g.labels)
	return g
}

// catalogueImages returns every catalogue photo's bytes.
func (g groceryCatalogue) catalogueImages() [][]byte {
	var out [][]byte
	for _, label := range g.labels {
		for _, p := range g.photos[label] {
			out = append(out, p.image)
		}
	}
	return out
}

func queryImages(qs []groceryPhoto) [][]byte {
	out := make([][]byte, len(qs))
	for i, q := range qs {
		out[i] = q.image
	}
	return out
}

// multiPhotoWrites makes each product one catalogue product whose photos are its iconic
// shot and its train photos, each photo named by its file.
func (g groceryCatalogue) multiPhotoWrites() []Write {
	var out []Write
	for _, label := range g.labels {
		w := Write{ID: label, Category: g.kind[label], Title: label, Attributes: map[string]string{"kind": g.kind[label]}}
		for _, p := range g.photos[label] {
			w.Photos = append(w.Photos, PhotoWrite{ID: p.name, Image: p.image, ImageURL: "file:" + p.name})
		}
		out = append(out, w)
	}
	return out
}

// onePhotoWrites makes every catalogue photo a product of its own, as the catalogue was
// before products had several photos.
func (g groceryCatalogue) onePhotoWrites() []Write {
	var out []Write
	for _, label := range g.labels {
		for _, p := range g.photos[label] {
			out = append(out, single(Write{
				ID: p.name, Category: g.kind[label], Title: label,
				Attributes: map[string]string{"label": label, "kind": g.kind[label]},
			}, PhotoWrite{Image: p.image}))
		}
	}
	return out
}

// upsertAll writes products a few at a time and fails the test on any error.
func upsertAll(t testing.TB, c *Catalog, writes []Write) []UpsertResult {
	t.Helper()
	var out []UpsertResult
	for start := 0; start < len(writes); start += 16 {
		for _, r := range c.UpsertBatch(context.Background(), writes[start:min(start+16, len(writes))]) {
			if r.Err != nil {
				t.Fatalf("upsert %s: %v", r.ID, r.Err)
			}
			out = append(out, r)
		}
	}
	return out
}

// openWith opens a catalogue in dir on the given embedder.
func openWith(t testing.TB, dir string, emb Embedder) *Catalog {
	t.Helper()
	c, err := Open(context.Background(), Config{DataDir: dir, Embedder: emb, Index: IndexParams{EFSearch: 200}})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestGroceryMultiPhotoRecall measures street-to-shop retrieval on the grocery photos two
// ways. Multi-photo: each of the 31 products is one catalogue product holding its iconic
// shot and its in-store photos, and a val photo's query is a hit at k when its product is
// among the k results. One-photo-per-item (the catalogue before issue 9): every photo is a
// product of its own, and a hit is any product of the same label among the k. Since a
// product ranks by its best photo, the multi-photo top 1 is the one-photo top 1's label,
// and its top 10 are 10 distinct products where the one-photo top 10 often repeats one.
func TestGroceryMultiPhotoRecall(t *testing.T) {
	if raceEnabled {
		t.Skip("embeds every grocery photo: minutes under -race, and the plain run measures it")
	}
	ctx := context.Background()
	emb := cachedEmbedder(t)
	g := groceryChoice(t, 0)
	if len(g.labels) != 31 || len(g.queries) < 90 {
		t.Fatalf("%d products and %d street photos; the grocery collection is not what this test expects", len(g.labels), len(g.queries))
	}
	emb.warm(t, g.catalogueImages(), true)
	emb.warm(t, queryImages(g.queries), false)

	multi := openWith(t, t.TempDir(), emb)
	upsertAll(t, multi, g.multiPhotoWrites())
	one := openWith(t, t.TempDir(), emb)
	upsertAll(t, one, g.onePhotoWrites())
	ms, err := multi.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ss, err := one.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ms.Count != 31 || ms.Photos != ss.Photos || ss.Count != ss.Photos || ms.Index.Size != ms.Photos {
		t.Fatalf("multi-photo %d products %d photos (graph %d); one-photo %d products %d photos",
			ms.Count, ms.Photos, ms.Index.Size, ss.Count, ss.Photos)
	}

	const k = 10
	var m1, m10, o1, o10 int
	for _, q := range g.queries {
		rm, err := multi.SearchByImage(ctx, q.image, SearchOptions{K: k})
		if err != nil {
			t.Fatal(err)
		}
		got := ids(rm)
		if len(got) != k || len(slices.Compact(slices.Sorted(slices.Values(got)))) != k {
			t.Fatalf("%s: multi-photo results %v: want %d distinct products", q.name, got, k)
		}
		for i, r := range rm {
			if _, ok := r.Product.Photo(r.PhotoID); !ok || (i > 0 && r.Score > rm[i-1].Score) {
				t.Fatalf("%s: result %d %s names photo %q (score %v after %v)", q.name, i, r.Product.ID, r.PhotoID, r.Score, rm[max(i-1, 0)].Score)
			}
		}
		if got[0] == q.label {
			m1++
		}
		if slices.Contains(got, q.label) {
			m10++
		}

		ro, err := one.SearchByImage(ctx, q.image, SearchOptions{K: k})
		if err != nil {
			t.Fatal(err)
		}
		if len(ro) != k {
			t.Fatalf("%s: one-photo search returned %d results, want %d", q.name, len(ro), k)
		}
		if ro[0].Product.Attributes["label"] == q.label {
			o1++
		}
		if slices.ContainsFunc(ro, func(r Result) bool { return r.Product.Attributes["label"] == q.label }) {
			o10++
		}
	}
	n := float64(len(g.queries))
	mr1, mr10, or1, or10 := float64(m1)/n, float64(m10)/n, float64(o1)/n, float64(o10)/n
	t.Logf("%d street photos against %d products (%d photos): multi-photo R@1 %.3f R@10 %.3f; one-photo-per-item R@1 %.3f R@10 %.3f",
		len(g.queries), ms.Count, ms.Photos, mr1, mr10, or1, or10)
	// Measured 0.490/0.920 and 0.490/0.900 (int8 MobileNetV2, 2026-12); the floors leave room
	// for CPUs whose int8 kernels round differently.
	if mr1 < 0.35 || mr10 < 0.8 {
		t.Errorf("multi-photo R@1 %.3f R@10 %.3f, want at least 0.35 and 0.8", mr1, mr10)
	}
	if mr1 < or1-0.02 || mr10 < or10-0.02 {
		t.Errorf("multi-photo recall below one-photo-per-item: R@1 %.3f vs %.3f, R@10 %.3f vs %.3f", mr1, or1, mr10, or10)
	}
}

// smallGrocery is every grocery product with its iconic shot and its first 8 train photos
// (279 photos), warmed in the shared embedder with the street photos: enough for the
// ranking options to meet near-identical shots, small enough for -race.
func smallGrocery(t testing.TB) groceryCatalogue {
	t.Helper()
	g := groceryChoice(t, 8)
	emb := cachedEmbedder(t)
	emb.warm(t, g.catalogueImages(), true)
	emb.warm(t, queryImages(g.queries), false)
	return g
}

// matchVectors returns the vector of each result's matching photo.
func matchVectors(t testing.TB, c *Catalog, rs []Result) [][]float32 {
	t.Helper()
	out := make([][]float32, len(rs))
	for i, r := range rs {
		p, err := c.Get(context.Background(), r.Product.ID, true)
		if err != nil {
			t.Fatal(err)
		}
		ph, ok := p.Photo(r.PhotoID)
		if !ok {
			t.Fatalf("result %s names photo %q it does not have", r.Product.ID, r.PhotoID)
		}
		out[i] = ph.Vector
	}
	return out
}

func meanPairwise(vecs [][]float32) float64 {
	var sum float64
	n := 0
	for i := range vecs {
		for j := i + 1; j < len(vecs); j++ {
			sum += float64(dot(vecs[i], vecs[j]))
			n++
		}
	}
	return sum / float64(max(n, 1))
}

// TestRankingOptionsOnGrocery checks GroupBy, NotLike and Diversity against what
// SearchOptions documents, on real photos: street photos searched against the small
// grocery catalogue as multi-photo products and as one product per photo (where many
// train photos of one package are near-identical shots).
func TestRankingOptionsOnGrocery(t *testing.T) {
	ctx := context.Background()
	g := smallGrocery(t)
	emb := cachedEmbedder(t)
	multi := openWith(t, t.TempDir(), emb)
	upsertAll(t, multi, g.multiPhotoWrites())
	one := openWith(t, t.TempDir(), emb)
	upsertAll(t, one, g.onePhotoWrites())
	catalogues := []struct {
		name string
		c    *Catalog
	}{{"multi-photo", multi}, {"one-photo", one}}
	queries := g.queries
	if len(queries) < 50 {
		t.Fatalf("%d street photos", len(queries))
	}

	// all ranks every product for a query: the reference the options are checked against.
	all := func(c *Catalog, q groceryPhoto) []Result {
		t.Helper()
		rs, err := c.SearchByImage(ctx, q.image, SearchOptions{K: c.Len()})
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) != c.Len() {
			t.Fatalf("K=%d returned %d of %d products", c.Len(), len(rs), c.Len())
		}
		return rs
	}

	t.Run("group_by", func(t *testing.T) {
		tests := []struct {
			c    *Catalog
			attr string
			k    int
		}{
			{multi, "kind", 5}, // 9 kinds over 31 products
			{one, "kind", 5},
			{one, "label", 10}, // 31 labels over 279 near-identical photos
		}
		for _, tt := range tests {
			shortfall := 0
			for _, q := range queries {
				ranked := all(tt.c, q)
				var want []string
				seen := map[string]bool{}
				for _, r := range ranked {
					if v := r.Product.Attributes[tt.attr]; !seen[v] && len(want) < tt.k {
						seen[v] = true
						want = append(want, r.Product.ID)
					}
				}
				if !slices.Contains(ids(ranked[:tt.k]), want[len(want)-1]) {
					shortfall++ // the plain top k would not have held k groups
				}
				rs, err := tt.c.SearchByImage(ctx, q.image, SearchOptions{K: tt.k, GroupBy: tt.attr})
				if err != nil {
					t.Fatal(err)
				}
				if len(rs) != tt.k {
					t.Fatalf("%d products, group_by %s, k=%d, query %s: %d results, want %d", tt.c.Len(), tt.attr, tt.k, q.name, len(rs), tt.k)
				}
				if got := ids(rs); !slices.Equal(got, want) {
					t.Fatalf("%d products, group_by %s, k=%d, query %s:\n got %v\nwant %v (the best product of each value, best first)",
						tt.c.Len(), tt.attr, tt.k, q.name, got, want)
				}
			}
			if tt.attr == "label" && shortfall == 0 {
				t.Errorf("group_by %s never had to look past the plain top %d: the test proves nothing", tt.attr, tt.k)
			}
		}
	})

	t.Run("not_like", func(t *testing.T) {
		const k = 10
		for _, cat := range catalogues {
			bit := 0
			for _, q := range queries {
				ranked := all(cat.c, q)
				rejected := ranked[0].Product.ID
				rp, err := cat.c.Get(ctx, rejected, true)
				if err != nil {
					t.Fatal(err)
				}
				vecs := matchVectors(t, cat.c, ranked)
				// The rule: a product goes when its matching photo is at least as similar to
				// some photo of the rejected product as to the query.
				closer := func(v []float32, score float32) bool {
					for _, ph := range rp.Photos {
						if dot(v, ph.Vector) >= score {
							return true
						}
					}
					return false
				}
				var want []string
				for i, r := range ranked[1:] {
					if closer(vecs[i+1], r.Score) {
						if i+1 < k {
							bit++ // a product of the plain top k dropped by the rule
						}
						continue
					}
					if len(want) < k {
						want = append(want, r.Product.ID)
					}
				}
				rs, err := cat.c.SearchByImage(ctx, q.image, SearchOptions{K: k, NotLike: []string{rejected}})
				if err != nil {
					t.Fatal(err)
				}
				for i, v := range matchVectors(t, cat.c, rs) {
					if rs[i].Product.ID == rejected || closer(v, rs[i].Score) {
						t.Fatalf("%s, query %s, not_like %s: result %s (score %v) is the rejected product or closer to it than to the query",
							cat.name, q.name, rejected, rs[i].Product.ID, rs[i].Score)
					}
				}
				if got := ids(rs); !slices.Equal(got, want) {
					t.Fatalf("%s, query %s, not_like %s:\n got %v\nwant %v (every product the rule keeps, best first)", cat.name, q.name, rejected, got, want)
				}
			}
			t.Logf("%s: not_like dropped %d products of the plain top %d beside the rejected one, over %d queries", cat.name, bit, k, len(queries))
			if bit == 0 {
				t.Errorf("%s: not_like never dropped a product beside the rejected one: the test proves nothing", cat.name)
			}
		}
	})

	t.Run("diversity", func(t *testing.T) {
		const k, lambda = 10, 0.5
		for _, cat := range catalogues {
			var plainSim, divSim float64
			lower, changed := 0, 0
			for _, q := range queries {
				plain, err := cat.c.SearchByImage(ctx, q.image, SearchOptions{K: k})
				if err != nil {
					t.Fatal(err)
				}
				zero, err := cat.c.SearchByImage(ctx, q.image, SearchOptions{K: k, Diversity: 0})
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(zero, plain) {
					t.Fatalf("%s: diversity 0 changed the ranking:\n%v\n%v", cat.name, ids(zero), ids(plain))
				}
				div, err := cat.c.SearchByImage(ctx, q.image, SearchOptions{K: k, Diversity: lambda})
				if err != nil {
					t.Fatal(err)
				}
				if len(div) != k || div[0].Product.ID != plain[0].Product.ID {
					t.Fatalf("%s, query %s: diversity returned %v; want %d starting with the best match %s", cat.name, q.name, ids(div), k, plain[0].Product.ID)
				}
				// Maximal marginal relevance, checked on what came back: at each step the
				// chosen result's value is at least that of every result chosen later.
				vecs := matchVectors(t, cat.c, div)
				for i := 1; i < k; i++ {
					value := func(j int) float32 {
						closest := float32(math.Inf(-1))
						for c := range i {
							closest = max(closest, dot(vecs[j], vecs[c]))
						}
						return (1-lambda)*div[j].Score - lambda*closest
					}
					for j := i + 1; j < k; j++ {
						if value(j) > value(i)+1e-6 {
							t.Fatalf("%s, query %s: step %d chose %s (value %v) over %s (value %v)", cat.name, q.name, i, div[i].Product.ID, value(i), div[j].Product.ID, value(j))
						}
					}
				}
				p, d := meanPairwise(matchVectors(t, cat.c, plain)), meanPairwise(vecs)
				plainSim += p
				divSim += d
				if d < p {
					lower++
				}
				if !slices.Equal(ids(div), ids(plain)) {
					changed++
				}
			}
			n := float64(len(queries))
			t.Logf("%s: mean pairwise similarity of the top %d %.3f plain, %.3f with diversity %.1f; lower for %d of %d queries, order or contents changed for %d",
				cat.name, k, plainSim/n, divSim/n, lambda, lower, len(queries), changed)
			if divSim >= plainSim || changed < len(queries)/2 {
				t.Errorf("%s: diversity did not move the results toward dissimilar photos", cat.name)
			}
		}
	})
}
