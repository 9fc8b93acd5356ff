package store

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
)

// benchDim is the default model's embedding size.
const benchDim = 1280

// benchProducts are one-photo products, the shape of the first release's items.
func benchProducts(n, dim int, seed uint64) []Product {
	rng := rand.New(rand.NewPCG(seed, 0))
	products := make([]Product, n)
	for i := range products {
		products[i] = testProduct(rng, fmt.Sprintf("sku-%08d", i), fmt.Sprint("cat-", i%20), dim)
	}
	return products
}

// BenchmarkUpsert is one acknowledged (fsynced) write of a new one-photo product per op.
func BenchmarkUpsert(b *testing.B) {
	s := openTest(b, filepath.Join(b.TempDir(), "c.db"), benchDim)
	products := benchProducts(256, benchDim, 1)
	ctx := context.Background()
	for i := 0; b.Loop(); i++ {
		p := products[i%len(products)]
		p.ID = fmt.Sprint("id-", i)
		if _, err := s.Upsert(ctx, p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUpsertBatch reports per-product cost of 1,000-product batches (one fsync each).
func BenchmarkUpsertBatch(b *testing.B) {
	s := openTest(b, filepath.Join(b.TempDir(), "c.db"), benchDim)
	products := benchProducts(1000, benchDim, 2)
	ctx := context.Background()
	for round := 0; b.Loop(); round++ {
		for i := range products {
			products[i].ID = fmt.Sprintf("r%d-%d", round, i)
		}
		if _, err := s.UpsertBatch(ctx, products); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(products)), "ns/product")
}

// benchStore is a store of n one-photo products of dimension 1280.
func benchStore(b *testing.B, n int) *Store {
	b.Helper()
	s := openFast(b, filepath.Join(b.TempDir(), "c.db"), benchDim)
	products := benchProducts(1000, benchDim, 3)
	for round := range n / len(products) {
		for i := range products {
			products[i].ID = fmt.Sprintf("r%d-%d", round, i)
		}
		if _, err := s.UpsertBatch(context.Background(), products); err != nil {
			b.Fatal(err)
		}
	}
	return s
}

// BenchmarkForEach walks the metadata of 10,000 products, as the catalogue's start-up does.
func BenchmarkForEach(b *testing.B) {
	const n = 10_000
	s := benchStore(b, n)
	for b.Loop() {
		seen := 0
		if err := s.ForEach(func(Product) error { seen++; return nil }); err != nil || seen != n {
			b.Fatalf("ForEach: %v, %d products", err, seen)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/product")
}

// BenchmarkForEachVector reads 10,000 vectors of dimension 1280 (checksums verified), as an
// index rebuild does.
func BenchmarkForEachVector(b *testing.B) {
	const n = 10_000
	s := benchStore(b, n)
	for b.Loop() {
		seen := 0
		if err := s.ForEachVector(func(uint32, []float32) error { seen++; return nil }); err != nil || seen != n {
			b.Fatalf("ForEachVector: %v, %d vectors", err, seen)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/vector")
}
