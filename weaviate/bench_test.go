package weaviate

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"lookalike/catalog"
	"lookalike/index"
	"lookalike/internal/weaviatetest"
	"lookalike/store"
)

// BenchmarkBackend times the backend's two calls behind a "more like this" on one node
// holding 2,000 random 1280-d photos: reading a photo's vector and a nearVector search.
func BenchmarkBackend(b *testing.B) {
	ctx := context.Background()
	cluster := weaviatetest.Start(b, 1)
	const dim, n = 1280, 2000
	be, err := Open(ctx, Config{URLs: cluster.URLs(), ModelIdentity: "bench@1", Dim: dim, Prefix: "Bench"})
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 1))
	vec := func() []float32 {
		v := make([]float32, dim)
		var s float64
		for i := range v {
			v[i] = float32(rng.NormFloat64())
			s += float64(v[i]) * float64(v[i])
		}
		for i := range v {
			v[i] /= float32(math.Sqrt(s))
		}
		return v
	}
	var ps []store.Product
	for i := range n {
		ps = append(ps, store.Product{ID: fmt.Sprint(i), Photos: []store.Photo{{ID: "a", Vector: vec()}}})
	}
	for i := 0; i < n; i += 500 {
		if _, err := be.Put(ctx, ps[i:i+500]); err != nil {
			b.Fatal(err)
		}
	}
	q := vec()
	b.Run("Vectors1", func(b *testing.B) {
		for i := range b.N {
			if _, err := be.Vectors(ctx, []index.Key{index.Key(i%n + 1)}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Search10", func(b *testing.B) {
		for range b.N {
			if _, err := be.Search(ctx, q, 10, catalog.PhotoQuery{}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
