package catalog

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"lookalike/index"
)

// TestQuantizedCatalog runs a catalogue whose graph holds int8 codes and re-scores on the
// store's vectors: its results match a float32 catalogue's on the same data (recall within
// 0.005, exact scores), survive a reopen from the snapshot, and a reopen with the other
// setting rebuilds the graph instead of serving the wrong one.
func TestQuantizedCatalog(t *testing.T) {
	ctx := context.Background()
	emb := testEmbedder(t)
	// More vectors than the index fits its quantiser to, in clusters so that neighbours
	// are close, as photos of one kind are.
	const clusters, perCluster = 240, 10
	rng := rand.New(rand.NewPCG(3, 4))
	centres := randomVectors(clusters, emb.Dim(), 11)
	var vecs [][]float32
	for _, c := range centres {
		for range perCluster {
			vecs = append(vecs, near(c, 3, rng))
		}
	}
	params := func(q index.Quantization) IndexParams {
		return IndexParams{EFConstruction: 64, EFSearch: 16, Quantize: q}
	}
	open := func(dir string, q index.Quantization) *Catalog {
		t.Helper()
		c, err := Open(ctx, Config{DataDir: dir, Embedder: emb, Index: params(q)})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return c
	}
	fill := func(c *Catalog) {
		t.Helper()
		var batch []Write
		for i, v := range vecs {
			batch = append(batch, single(Write{ID: fmt.Sprint("p", i)}, PhotoWrite{Vector: v}))
			if len(batch) == 200 || i == len(vecs)-1 {
				for _, r := range c.UpsertBatch(ctx, batch) {
					if r.Err != nil {
						t.Fatalf("upsert %s: %v", r.ID, r.Err)
					}
				}
				batch = batch[:0]
			}
		}
	}

	exact := index.NewExact(emb.Dim(), index.InnerProduct)
	for i, v := range vecs {
		if err := exact.Add(index.Key(i), unit(v)); err != nil {
			t.Fatal(err)
		}
	}
	queries := make([][]float32, 200)
	for i := range queries {
		queries[i] = unit(near(centres[rng.IntN(clusters)], 3, rng))
	}
	const k = 10
	recall := func(c *Catalog) float64 {
		t.Helper()
		var got, want [][]index.Neighbor
		for _, q := range queries {
			rs, err := c.SearchByVector(ctx, q, SearchOptions{K: k})
			if err != nil {
				t.Fatalf("SearchByVector: %v", err)
			}
			ns := make([]index.Neighbor, len(rs))
			for i, r := range rs {
				var n int
				fmt.Sscanf(r.Product.ID, "p%d", &n)
				ns[i] = index.Neighbor{Key: index.Key(n), Score: r.Score}
				if want := dot(q, unit(vecs[n])); abs32(r.Score-want) > 1e-4 {
					t.Fatalf("score of %s = %v, the exact inner product is %v", r.Product.ID, r.Score, want)
				}
			}
			got = append(got, ns)
			want = append(want, exact.Search(q, k, index.SearchOptions{}))
		}
		return index.RecallAtK(got, want, k)
	}

	floatDir, int8Dir := t.TempDir(), t.TempDir()
	fc := open(floatDir, index.QuantizeNone)
	fill(fc)
	floatRecall := recall(fc)
	if err := fc.Close(); err != nil {
		t.Fatal(err)
	}

	qc := open(int8Dir, index.QuantizeInt8)
	fill(qc)
	if got := qc.emb().graph.Config().Quantize; got != index.QuantizeInt8 {
		t.Fatalf("graph quantisation %v, want int8", got)
	}
	int8Recall := recall(qc)
	t.Logf("recall@%d at ef 16: float32 %.4f, int8 with store re-rank %.4f", k, floatRecall, int8Recall)
	if int8Recall < floatRecall-0.005 {
		t.Errorf("int8 recall %.4f is more than 0.005 below float32's %.4f", int8Recall, floatRecall)
	}
	if _, err := qc.Delete(ctx, "p0"); err != nil {
		t.Fatal(err)
	}
	if err := qc.Close(); err != nil { // saves the snapshot, which holds codes only
		t.Fatal(err)
	}

	// Reopened from its snapshot: the same graph, searched with the store's vectors.
	qc = open(int8Dir, index.QuantizeInt8)
	if qc.emb().snapshotSeq == 0 || qc.emb().graph.Config().Quantize != index.QuantizeInt8 || qc.emb().graph.Len() != len(vecs)-1 {
		t.Fatalf("reopened: snapshot seq %d, quantisation %v, %d photos; want a loaded int8 graph of %d",
			qc.emb().snapshotSeq, qc.emb().graph.Config().Quantize, qc.emb().graph.Len(), len(vecs)-1)
	}
	rs, err := qc.SearchByVector(ctx, vecs[0], SearchOptions{K: 3})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if r.Product.ID == "p0" {
			t.Fatalf("deleted p0 returned after reopen: %+v", rs)
		}
	}
	if r := recall(qc); r < int8Recall-0.01 { // p0 is gone, so at most a query or two differ
		t.Errorf("recall after reopen %.4f, before %.4f", r, int8Recall)
	}
	if err := qc.Close(); err != nil {
		t.Fatal(err)
	}

	// The same data directory opened for float32 vectors rebuilds rather than loading codes.
	fc = open(int8Dir, index.QuantizeNone)
	defer fc.Close()
	fc.emb().waitCatchUp() // more photos than a start brings in before it serves
	if fc.emb().graph.Config().Quantize != index.QuantizeNone || fc.emb().graph.Len() != len(vecs)-1 {
		t.Fatalf("reopened as float32: quantisation %v, %d photos", fc.emb().graph.Config().Quantize, fc.emb().graph.Len())
	}
}

// unit returns v scaled to length 1, as the catalogue stores vectors.
func unit(v []float32) []float32 {
	out := append([]float32(nil), v...)
	n := float32(math.Sqrt(float64(dot(v, v))))
	for i := range out {
		out[i] /= n
	}
	return out
}

func abs32(x float32) float32 {
	if x < 0 {
		return -x
	}
	return x
}
