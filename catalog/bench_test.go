package catalog

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
)

// BenchmarkFindDuplicates scans 3000 products in groups of near copies; run with -cpu 1,2,...
// to see the scan spread over cores.
func BenchmarkFindDuplicates(b *testing.B) {
	ctx := context.Background()
	c := openCatalog(b, b.TempDir())
	defer c.Close()
	base := randomVectors(1000, c.Dim(), 21)
	rng := rand.New(rand.NewPCG(8, 9))
	var items []Write
	for g, v := range base {
		for m := range 3 {
			items = append(items, single(Write{ID: fmt.Sprintf("g%04d-%d", g, m)}, PhotoWrite{Vector: near(v, 0.15, rng)}))
		}
	}
	for _, r := range c.UpsertBatch(ctx, items) {
		if r.Err != nil {
			b.Fatal(r.Err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		clusters := 0
		if err := c.FindDuplicates(ctx, DuplicateOptions{Threshold: 0.9}, func(Cluster) error { clusters++; return nil }); err != nil {
			b.Fatal(err)
		}
		if clusters != len(base) {
			b.Fatalf("%d clusters, want %d", clusters, len(base))
		}
	}
	b.ReportMetric(float64(len(items))*float64(b.N)/b.Elapsed().Seconds(), "products/s")
}
