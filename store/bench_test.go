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

func benchItems(n, dim int, seed uint64) []Item {
	rng := rand.New(rand.NewPCG(seed, 0))
	items := make([]Item, n)
	for i := range items {
		items[i] = testItem(rng, fmt.Sprintf("sku-%08d", i), fmt.Sprint("cat-", i%20), dim)
	}
	return items
}

// BenchmarkUpsert is one acknowledged (fsynced) write per op.
func BenchmarkUpsert(b *testing.B) {
	s := openTest(b, filepath.Join(b.TempDir(), "c.db"), benchDim)
	items := benchItems(256, benchDim, 1)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		it := items[i%len(items)]
		it.ID = fmt.Sprint("id-", i)
		if _, err := s.Upsert(ctx, it); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUpsertBatch reports per-item cost of 1,000-item batches (one fsync each).
func BenchmarkUpsertBatch(b *testing.B) {
	s := openTest(b, filepath.Join(b.TempDir(), "c.db"), benchDim)
	items := benchItems(1000, benchDim, 2)
	ctx := context.Background()
	for round := 0; b.Loop(); round++ {
		for i := range items {
			items[i].ID = fmt.Sprintf("r%d-%d", round, i)
		}
		if _, err := s.UpsertBatch(ctx, items); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(items)), "ns/item")
}

// BenchmarkForEach walks 10,000 items of dimension 1280, as an index rebuild does.
func BenchmarkForEach(b *testing.B) {
	const n = 10_000
	s, err := Open(filepath.Join(b.TempDir(), "c.db"), Options{ModelIdentity: testModel, Dim: benchDim, NoSync: true, Logger: quietLogger})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	items := benchItems(1000, benchDim, 3)
	for round := range n / len(items) {
		for i := range items {
			items[i].ID = fmt.Sprintf("r%d-%d", round, i)
		}
		if _, err := s.UpsertBatch(context.Background(), items); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		seen := 0
		if err := s.ForEach(func(Item) error { seen++; return nil }); err != nil || seen != n {
			b.Fatalf("ForEach: %v, %d items", err, seen)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/item")
}
