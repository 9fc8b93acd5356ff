package weaviate

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"testing"

	"lookalike/catalog"
	"lookalike/catalog/backendtest"
	"lookalike/index"
	"lookalike/internal/dataset"
	"lookalike/internal/weaviatetest"
	"lookalike/store"
)

// TestRecallMatchesEmbedded puts one catalogue into the embedded backend and into Weaviate and
// measures recall@10 of the catalogue's search against exact search on both: Weaviate's must
// be within 0.01 of the embedded backend's. The catalogue is 8,000 vectors made from real
// embeddings of the shared grocery and clothing photos (each a random convex mix of two real
// vectors plus a little noise, re-normalised, as the benchmarks' large sets are made); the
// queries are real embeddings of held-out photos.
func TestRecallMatchesEmbedded(t *testing.T) {
	if testing.Short() {
		t.Skip("embeds a thousand photos and builds two indexes")
	}
	if raceEnabled {
		t.Skip("minutes under -race; the plain run measures it")
	}
	ctx := context.Background()
	e, err := backendtest.Embedder()
	if err != nil {
		t.Fatal(err)
	}
	var real [][]float32
	for _, name := range []string{dataset.PhotosGrocery, dataset.PhotosClothing} {
		ps, err := dataset.LoadPhotos(name)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < len(ps); i += 2 {
			b, err := os.ReadFile(ps[i].Path)
			if err != nil {
				t.Fatal(err)
			}
			v, err := e.Embed(ctx, b)
			if err != nil {
				t.Fatal(err)
			}
			real = append(real, v)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	rng.Shuffle(len(real), func(i, j int) { real[i], real[j] = real[j], real[i] })
	queries, base := real[:200], real[200:]
	const n = 8000
	vecs := make([][]float32, n)
	for i := range vecs {
		a, b := base[rng.IntN(len(base))], base[rng.IntN(len(base))]
		w := float32(rng.Float64() * 0.5)
		v := make([]float32, len(a))
		var norm float64
		for j := range v {
			v[j] = (1-w)*a[j] + w*b[j] + float32(rng.NormFloat64()*0.05/math.Sqrt(float64(len(a))))
			norm += float64(v[j]) * float64(v[j])
		}
		for j := range v {
			v[j] /= float32(math.Sqrt(norm))
		}
		vecs[i] = v
	}
	exact := index.NewExact(e.Dim(), index.InnerProduct)
	for i, v := range vecs {
		if err := exact.Add(index.Key(i), v); err != nil {
			t.Fatal(err)
		}
	}
	const k = 10
	var want [][]index.Neighbor
	for _, q := range queries {
		want = append(want, exact.Search(q, k, index.SearchOptions{}))
	}

	recall := func(b catalog.Backend) float64 {
		t.Helper()
		c, err := catalog.Open(ctx, catalog.Config{Backend: b, Embedder: e})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		var batch []catalog.Write
		for i, v := range vecs {
			batch = append(batch, catalog.Write{ID: fmt.Sprint(i), Photos: []catalog.PhotoWrite{{Vector: v}}})
			if len(batch) == 500 || i == len(vecs)-1 {
				for _, r := range c.UpsertBatch(ctx, batch) {
					if r.Err != nil {
						t.Fatalf("upsert %s: %v", r.ID, r.Err)
					}
				}
				batch = batch[:0]
			}
		}
		var got [][]index.Neighbor
		for _, q := range queries {
			rs, err := c.SearchByVector(ctx, q, catalog.SearchOptions{K: k})
			if err != nil {
				t.Fatal(err)
			}
			ns := make([]index.Neighbor, len(rs))
			for i, r := range rs {
				var id int
				fmt.Sscan(r.Product.ID, &id)
				ns[i] = index.Neighbor{Key: index.Key(id), Score: r.Score}
			}
			got = append(got, ns)
		}
		return index.RecallAtK(got, want, k)
	}

	emb, err := catalog.OpenEmbedded(ctx, catalog.EmbeddedConfig{DataDir: t.TempDir(), ModelIdentity: e.Identity(), Dim: e.Dim()})
	if err != nil {
		t.Fatal(err)
	}
	embedded := recall(emb)
	cluster := weaviatetest.Start(t, 1)
	wv, err := Open(ctx, Config{URLs: cluster.URLs(), ModelIdentity: e.Identity(), Dim: e.Dim(), Prefix: "Recall"})
	if err != nil {
		t.Fatal(err)
	}
	weaviate := recall(wv)
	// Reopened, the backend pages through all of them (a thousand objects per page).
	again, err := Open(ctx, Config{URLs: cluster.URLs(), ModelIdentity: e.Identity(), Dim: e.Dim(), Prefix: "Recall"})
	if err != nil {
		t.Fatal(err)
	}
	listed := 0
	if err := again.Products(ctx, func(p store.Product) error { listed++; return nil }); err != nil {
		t.Fatal(err)
	}
	if listed != n || len(again.products) != n {
		t.Fatalf("reopened: %d products listed, %d known, want %d", listed, len(again.products), n)
	}
	t.Logf("recall@%d over %d vectors, %d real queries: embedded %.4f, weaviate %.4f", k, n, len(queries), embedded, weaviate)
	if weaviate < embedded-0.01 {
		t.Errorf("weaviate recall@%d %.4f is more than 0.01 below the embedded backend's %.4f", k, weaviate, embedded)
	}
}
