package index

import (
	"math"
	"math/rand/v2"
	"testing"

	"lookalike/internal/dataset"
)

// clustered returns n base vectors and q queries of dimension dim drawn around the same
// `clusters` random centres, the shape of real embeddings (dense regions with gaps between
// them). normalise maps them onto the unit sphere, as embed does.
func clustered(seed uint64, n, q, dim, clusters int, normalise bool) ([][]float32, [][]float32) {
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))
	centres := make([][]float32, clusters)
	for c := range centres {
		centres[c] = make([]float32, dim)
		for j := range centres[c] {
			centres[c][j] = float32(rng.NormFloat64())
		}
	}
	out := make([][]float32, n+q)
	for i := range out {
		c := centres[rng.IntN(clusters)]
		v := make([]float32, dim)
		for j := range v {
			v[j] = c[j] + 0.6*float32(rng.NormFloat64())
		}
		if normalise {
			normaliseInPlace(v)
		}
		out[i] = v
	}
	return out[:n], out[n:]
}

func normaliseInPlace(v []float32) {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	inv := float32(1 / math.Sqrt(s))
	for j := range v {
		v[j] *= inv
	}
}

// fashionMNIST loads train and test subsets, failing the test when the package is missing.
func fashionMNIST(tb testing.TB, train, queries int) ([][]float32, [][]float32) {
	tb.Helper()
	base, err := dataset.FashionMNISTTrain(train)
	if err != nil {
		tb.Fatalf("Fashion-MNIST is required: %v", err)
	}
	q, err := dataset.FashionMNISTTest(queries)
	if err != nil {
		tb.Fatalf("Fashion-MNIST is required: %v", err)
	}
	return base, q
}

func buildBoth(tb testing.TB, vecs [][]float32, cfg Config) (*HNSW, *Exact) {
	tb.Helper()
	h := NewHNSW(len(vecs[0]), cfg)
	e := NewExact(len(vecs[0]), cfg.Metric)
	for i, v := range vecs {
		if err := h.Add(Key(i), v); err != nil {
			tb.Fatal(err)
		}
		if err := e.Add(Key(i), v); err != nil {
			tb.Fatal(err)
		}
	}
	return h, e
}

func searchAll(idx Index, queries [][]float32, k int, opt SearchOptions) [][]Neighbor {
	out := make([][]Neighbor, len(queries))
	for i, q := range queries {
		out[i] = idx.Search(q, k, opt)
	}
	return out
}
