package benchmarks

import (
	"os"
	"strconv"
	"testing"

	"lookalike/index"
	"lookalike/internal/dataset"
)

// envInt reads a positive integer knob for the profile run, or def.
func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// BenchmarkHNSWQueryFashionMNIST is the query loop run.sh profiles with -cpuprofile: one
// goroutine answering Fashion-MNIST test images against an index of the train images, at the
// ef annbench needs for recall@10 >= 0.95. The build is outside the timer.
//
//	LOOKALIKE_BENCH_BASE=60000 LOOKALIKE_BENCH_EF=20 go test ./benchmarks -run '^$' \
//	  -bench HNSWQueryFashionMNIST -cpuprofile cpu.prof
func BenchmarkHNSWQueryFashionMNIST(b *testing.B) {
	base, err := dataset.FashionMNISTTrain(envInt("LOOKALIKE_BENCH_BASE", 20000))
	if err != nil {
		b.Fatalf("Fashion-MNIST (Debian dataset-fashion-mnist, installed by make setup): %v", err)
	}
	queries, err := dataset.FashionMNISTTest(1000)
	if err != nil {
		b.Fatal(err)
	}
	ef := envInt("LOOKALIKE_BENCH_EF", 20)
	h := index.NewHNSW(len(base[0]), index.Config{Metric: index.L2, M: 16, EFConstruction: 200, EFSearch: ef, Seed: 1})
	for i, v := range base {
		if err := h.Add(index.Key(i), v); err != nil {
			b.Fatal(err)
		}
	}
	opt := index.SearchOptions{EF: ef}
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		if len(h.Search(queries[i%len(queries)], 10, opt)) != 10 {
			b.Fatal("short result")
		}
		i++
	}
}
