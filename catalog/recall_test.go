package catalog

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"lookalike/index"
	"lookalike/internal/dataset"
)

// TestGraphRecallOnRealEmbeddings checks that the catalogue's graph, with its default
// parameters, finds what brute force finds on real 1280-d embeddings of the shared photos
// (clothing and grocery), through the same search path the service uses.
func TestGraphRecallOnRealEmbeddings(t *testing.T) {
	if raceEnabled {
		t.Skip("embeds every shared photo: minutes under -race, and the plain run measures it")
	}
	ctx := context.Background()
	emb := cachedEmbedder(t)
	c, err := Open(ctx, Config{DataDir: t.TempDir(), Embedder: emb})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer c.Close()

	var photos []dataset.Photo
	for _, name := range []string{dataset.PhotosClothing, dataset.PhotosGrocery} {
		ps, err := dataset.LoadPhotos(name)
		if err != nil {
			t.Fatalf("load %s photos: %v", name, err)
		}
		photos = append(photos, ps...)
	}

	// Every tenth photo is held out as a query; the rest are the catalogue.
	var queries [][]byte
	var batch []Write
	flush := func() {
		for _, r := range c.UpsertBatch(ctx, batch) {
			if r.Err != nil {
				t.Fatalf("upsert %s: %v", r.ID, r.Err)
			}
		}
		batch = batch[:0]
	}
	for i, p := range photos {
		b, err := os.ReadFile(p.Path)
		if err != nil {
			t.Fatal(err)
		}
		if i%10 == 0 {
			queries = append(queries, b)
			continue
		}
		batch = append(batch, single(Write{ID: filepath.Base(p.Path), Category: p.Label}, PhotoWrite{Image: b}))
		if len(batch) == 64 {
			flush()
		}
	}
	flush()

	// Ground truth from the stored vectors, by exact search.
	exact := index.NewExact(emb.Dim(), index.InnerProduct)
	keyOf := map[string]index.Key{}
	var next index.Key
	for i, p := range photos {
		if i%10 == 0 {
			continue
		}
		id := filepath.Base(p.Path)
		prod, err := c.Get(ctx, id, true)
		if err != nil {
			t.Fatalf("Get %s: %v", id, err)
		}
		next++
		keyOf[id] = next
		if err := exact.Add(next, prod.Photos[0].Vector); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("catalogue %d photos, %d held-out queries", exact.Len(), len(queries))

	for _, k := range []int{10, 1} {
		var got, want [][]index.Neighbor
		for _, img := range queries {
			q, err := emb.Embed(ctx, img)
			if err != nil {
				t.Fatal(err)
			}
			rs, err := c.SearchByVector(ctx, q, SearchOptions{K: k})
			if err != nil {
				t.Fatalf("SearchByVector: %v", err)
			}
			ns := make([]index.Neighbor, len(rs))
			for i, r := range rs {
				ns[i] = index.Neighbor{Key: keyOf[r.Product.ID], Score: r.Score}
			}
			got = append(got, ns)
			want = append(want, exact.Search(q, k, index.SearchOptions{}))
		}
		r := index.RecallAtK(got, want, k)
		t.Logf("recall@%d with default parameters = %.4f", k, r)
		if r < 0.95 {
			t.Errorf("recall@%d = %.4f, want >= 0.95", k, r)
		}
	}
}
