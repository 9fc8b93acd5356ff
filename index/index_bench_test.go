package index

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/viterin/vek/vek32"
)

// Benchmarks behind the figures of issue 3. Run single-threaded, as hnswlib is measured:
//
//	go test ./index -run '^$' -bench 'FashionMNIST' -benchtime 1x -cpu 1 -timeout 30m
//
// LOOKALIKE_BENCH_N overrides the 60,000 base vectors (e.g. 10000 for a quick look).

func benchN(def int) int {
	if s := os.Getenv("LOOKALIKE_BENCH_N"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n > 0 {
			return n
		}
	}
	return def
}

func BenchmarkDistance(b *testing.B) {
	for _, dim := range []int{128, 784, 1280} {
		rng := rand.New(rand.NewPCG(1, 2))
		x, y := make([]float32, dim), make([]float32, dim)
		for i := range x {
			x[i], y[i] = rng.Float32(), rng.Float32()
		}
		kernels := []struct {
			name string
			fn   func(a, b []float32) float32
		}{
			{"dot", dot},
			{"l2sq", l2sq},
			{"vek32.Dot", vek32.Dot},
			{"dotGeneric", dotGeneric},
			{"l2sqGeneric", l2sqGeneric},
		}
		for _, k := range kernels {
			b.Run(fmt.Sprintf("%s/dim=%d", k.name, dim), func(b *testing.B) {
				var sink float32
				for b.Loop() {
					sink += k.fn(x, y)
				}
				_ = sink
			})
		}
	}
}

// BenchmarkFashionMNIST builds the graph once (M=16, efConstruction=200, L2) and reports, per
// ef, recall@10 against the exact index and queries per second.
func BenchmarkFashionMNIST(b *testing.B) {
	base, queries := fashionMNIST(b, benchN(60000), 2000)
	cfg := Config{Metric: L2, M: 16, EFConstruction: 200, Seed: 1}
	h := NewHNSW(len(base[0]), cfg)
	e := NewExact(len(base[0]), L2)
	start := time.Now()
	for i, v := range base {
		_ = h.Add(Key(i), v)
	}
	build := time.Since(start)
	for i, v := range base {
		_ = e.Add(Key(i), v)
	}
	truth := searchAll(e, queries, 10, SearchOptions{})
	b.Logf("built %d x %d in %v (GOMAXPROCS %d)", len(base), len(base[0]), build, runtime.GOMAXPROCS(0))
	b.Run("build", func(b *testing.B) {
		for b.Loop() {
		}
		b.ReportMetric(build.Seconds(), "build-s")
		b.ReportMetric(0, "ns/op")
	})
	for _, ef := range []int{10, 20, 40, 80, 160} {
		b.Run(fmt.Sprintf("ef=%d", ef), func(b *testing.B) {
			got := make([][]Neighbor, len(queries))
			var elapsed time.Duration
			for b.Loop() {
				t0 := time.Now()
				for i, q := range queries {
					got[i] = h.SearchAppend(got[i][:0], q, 10, SearchOptions{EF: ef})
				}
				elapsed += time.Since(t0)
			}
			b.ReportMetric(RecallAtK(got, truth, 10), "recall@10")
			b.ReportMetric(float64(len(queries)*b.N)/elapsed.Seconds(), "qps")
			b.ReportMetric(0, "ns/op")
		})
	}
	b.Run("snapshot", func(b *testing.B) {
		path := filepath.Join(b.TempDir(), "fmnist.hnsw")
		t0 := time.Now()
		if err := h.Save(path, 1); err != nil {
			b.Fatal(err)
		}
		save := time.Since(t0)
		var load time.Duration
		for b.Loop() {
			t0 := time.Now()
			if _, _, err := LoadHNSW(path); err != nil {
				b.Fatal(err)
			}
			load += time.Since(t0)
		}
		st, _ := os.Stat(path)
		b.ReportMetric(save.Seconds(), "save-s")
		b.ReportMetric(load.Seconds()/float64(b.N), "load-s")
		b.ReportMetric(build.Seconds(), "rebuild-s")
		b.ReportMetric(float64(st.Size()), "file-bytes")
	})
}

// BenchmarkMemoryPerItem measures the Go heap held by an index of 100,000 random 1280-d
// vectors (the embedding size), per item. efConstruction only changes the build time, not the
// memory, so it is lowered to keep the run short.
func BenchmarkMemoryPerItem(b *testing.B) {
	n, dim := benchN(100000), 1280
	for b.Loop() {
		rng := rand.New(rand.NewPCG(5, 6))
		vec := make([]float32, dim)
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		h := NewHNSW(dim, Config{M: 16, EFConstruction: 40})
		for i := range n {
			for j := range vec {
				vec[j] = float32(rng.NormFloat64())
			}
			normaliseInPlace(vec)
			_ = h.Add(Key(i), vec)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(n), "heap-bytes/item")
		b.ReportMetric(float64(h.Stats().Bytes)/float64(n), "est-bytes/item")
		b.ReportMetric(float64(dim*4), "vector-bytes/item")
		runtime.KeepAlive(h)
	}
}

// BenchmarkSearchClustered is a quick, dataset-free query benchmark for profiling:
//
//	go test ./index -run '^$' -bench SearchClustered -cpu 1 -cpuprofile cpu.out
func BenchmarkSearchClustered(b *testing.B) {
	base, queries := clustered(1, 20000, 1000, 128, 200, true)
	h := NewHNSW(128, DefaultConfig())
	for i, v := range base {
		_ = h.Add(Key(i), v)
	}
	var dst []Neighbor
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		dst = h.SearchAppend(dst[:0], queries[i%len(queries)], 10, SearchOptions{})
		i++
	}
}

// readFvecs reads a .fvecs file (annbench writes its sets' base.fvecs and queries.fvecs into
// its work folder), so the benchmarks below can run on any of annbench's sets.
func readFvecs(tb testing.TB, path string) [][]float32 {
	tb.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	var rows [][]float32
	for len(raw) >= 4 {
		dim := int(binary.LittleEndian.Uint32(raw))
		if dim <= 0 || len(raw) < 4+4*dim {
			tb.Fatalf("%s: bad row", path)
		}
		row := make([]float32, dim)
		for i := range row {
			row[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4+4*i:]))
		}
		rows = append(rows, row)
		raw = raw[4+4*dim:]
	}
	return rows
}

// benchSet is Fashion-MNIST's pixels (L2), or with LOOKALIKE_BENCH_FVECS_DIR the base.fvecs
// and queries.fvecs in that folder (inner product, as annbench's embedding sets).
func benchSet(tb testing.TB, n, queries int) ([][]float32, [][]float32, Metric) {
	if dir := os.Getenv("LOOKALIKE_BENCH_FVECS_DIR"); dir != "" {
		base := readFvecs(tb, filepath.Join(dir, "base.fvecs"))
		q := readFvecs(tb, filepath.Join(dir, "queries.fvecs"))
		return base[:min(n, len(base))], q[:min(queries, len(q))], InnerProduct
	}
	base, q := fashionMNIST(tb, n, queries)
	return base, q, L2
}

// codeOnlySearch is Search without the re-rank: the k best by code distance, to judge a
// quantiser on its own.
func codeOnlySearch(h *HNSW, q []float32, k, ef int) []Neighbor {
	s := h.getScratch()
	defer h.putScratch(s)
	g := h.g
	p := &s.query
	g.prepare(p, q)
	ep, epDist := g.greedyDescend(s, p, 0)
	g.searchLayer(s, p, ep, epDist, 0, max(ef, k), false, nil)
	s.sorted = s.res.drainAscending(s.sorted[:0])
	var out []Neighbor
	for _, c := range s.sorted[:min(k, len(s.sorted))] {
		out = append(out, Neighbor{Key: g.keys[c.node], Score: -c.dist})
	}
	return out
}

// BenchmarkQuantizers compares the quantisers the int8 mode could use, by recall@10 at equal
// ef against float32 vectors, before re-ranking (the codes' own ranking) and after:
//
//	go test ./index -run '^$' -bench Quantizers -benchtime 1x -timeout 60m
//	LOOKALIKE_BENCH_FVECS_DIR=benchmarks/results/tmp/ann-fashion-mnist-1280 go test ./index ...
func BenchmarkQuantizers(b *testing.B) {
	base, queries, metric := benchSet(b, benchN(20000), 1000)
	dim := len(base[0])
	cfg := Config{Metric: metric, M: 16, EFConstruction: 200, Seed: 1}
	flt, exact := buildBoth(b, base, cfg)
	truth := searchAll(exact, queries, 10, SearchOptions{})
	variants := []struct {
		name  string
		train func([][]float32, int) *quantizer
	}{
		{"per-dim-margin-0", func(s [][]float32, d int) *quantizer { return trainQuantizer(s, d, 0) }},
		{"per-dim-margin-0.02", func(s [][]float32, d int) *quantizer { return trainQuantizer(s, d, 0.02) }},
		{"per-dim-margin-0.1", func(s [][]float32, d int) *quantizer { return trainQuantizer(s, d, 0.1) }},
		{"global-margin-0", func(s [][]float32, d int) *quantizer { return trainGlobalQuantizer(s, d, 0) }},
		{"per-dim-clipped-mse", trainClippedQuantizer},
	}
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) {
			for b.Loop() {
				cfg.Quantize = QuantizeInt8
				h := NewHNSW(dim, cfg)
				h.g.trainer = v.train
				start := time.Now()
				for i, x := range base {
					_ = h.Add(Key(i), x)
				}
				b.ReportMetric(time.Since(start).Seconds(), "build-s")
				for _, ef := range []int{10, 20, 40} {
					opt := SearchOptions{EF: ef}
					rf := RecallAtK(searchAll(flt, queries, 10, opt), truth, 10)
					r8 := RecallAtK(searchAll(h, queries, 10, opt), truth, 10)
					codes := make([][]Neighbor, len(queries))
					for i, q := range queries {
						codes[i] = codeOnlySearch(h, q, 10, ef)
					}
					rc := RecallAtK(codes, truth, 10)
					b.ReportMetric(r8-rf, fmt.Sprintf("ef%d-reranked-minus-float", ef))
					b.ReportMetric(rc, fmt.Sprintf("ef%d-codes-only-recall", ef))
				}
			}
		})
	}
}
