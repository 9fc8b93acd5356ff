package benchkit

import (
	"context"
	"errors"
	"math/rand"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	tests := []struct {
		name    string
		samples []time.Duration
		p       float64
		want    time.Duration
	}{
		{"empty", nil, 50, 0},
		{"single", ms(7), 99, 7 * time.Millisecond},
		{"median of unsorted", ms(5, 1, 3, 2, 4), 50, 3 * time.Millisecond},
		{"p99 of 100 is the 99th", ms(seq(100)...), 99, 99 * time.Millisecond},
		{"p100 is the max", ms(3, 9, 1), 100, 9 * time.Millisecond},
		{"p0 is the min", ms(3, 9, 1), 0, 1 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Percentile(tt.samples, tt.p); got != tt.want {
				t.Errorf("Percentile(%v) = %v, want %v", tt.p, got, tt.want)
			}
		})
	}
}

func seq(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i + 1
	}
	return out
}

func randomRows(rng *rand.Rand, n, dim int) [][]float32 {
	rows := make([][]float32, n)
	for i := range rows {
		rows[i] = make([]float32, dim)
		for j := range rows[i] {
			rows[i][j] = rng.Float32()*2 - 1
		}
	}
	return rows
}

// naiveTruth is the obviously correct float64 scan the fast path must agree with.
func naiveTruth(base, queries [][]float32, k int, m Metric) [][]int32 {
	out := make([][]int32, len(queries))
	for qi, q := range queries {
		ids := make([]int32, len(base))
		for i := range ids {
			ids[i] = int32(i)
		}
		sort.SliceStable(ids, func(a, b int) bool { return m.Distance(q, base[ids[a]]) < m.Distance(q, base[ids[b]]) })
		out[qi] = ids[:k]
	}
	return out
}

func TestExactTruthMatchesNaiveScan(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	base, queries := randomRows(rng, 700, 37), randomRows(rng, 25, 37)
	for _, m := range []Metric{L2, InnerProduct} {
		t.Run(m.String(), func(t *testing.T) {
			got, err := ExactTruth(context.Background(), base, queries, 10, m, 3)
			if err != nil {
				t.Fatal(err)
			}
			want := naiveTruth(base, queries, 10, m)
			for qi := range queries {
				if !slices.Equal(got.IDs[qi], want[qi]) {
					t.Fatalf("query %d: got %v, want %v", qi, got.IDs[qi], want[qi])
				}
				if !sort.Float64sAreSorted(got.Distances[qi]) {
					t.Fatalf("query %d: distances not ascending: %v", qi, got.Distances[qi])
				}
			}
		})
	}
}

func TestExactTruthRejectsBadK(t *testing.T) {
	base := [][]float32{{1}, {2}}
	for _, k := range []int{0, 3} {
		if _, err := ExactTruth(context.Background(), base, base, k, L2, 1); err == nil {
			t.Errorf("k=%d: want an error", k)
		}
	}
}

func TestRecall(t *testing.T) {
	// Points on a line; the query at 0 has true neighbours 0,1 (ids 0,1) and a tie at distance 2
	// (ids 2 and 3 both at +-2).
	base := [][]float32{{0}, {1}, {2}, {-2}, {5}}
	queries := [][]float32{{0}}
	truth, err := ExactTruth(context.Background(), base, queries, 3, L2, 1)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		got  []int32
		want float64
	}{
		{"exact", []int32{0, 1, 2}, 1},
		{"tie counts", []int32{0, 1, 3}, 1},
		{"one far", []int32{0, 1, 4}, 2.0 / 3},
		{"duplicates count once", []int32{0, 0, 0}, 1.0 / 3},
		{"short list", []int32{1}, 1.0 / 3},
		{"invalid ids", []int32{-1, 99, 0}, 1.0 / 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Recall(truth, base, queries, [][]int32{tt.got}, 3, L2)
			if diff := got - tt.want; diff > 1e-9 || diff < -1e-9 {
				t.Errorf("Recall = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestVecFilesRoundTrip(t *testing.T) {
	dir := t.TempDir()
	rows := randomRows(rand.New(rand.NewSource(1)), 9, 5)
	fpath := filepath.Join(dir, "x.fvecs")
	if err := WriteFvecs(fpath, rows); err != nil {
		t.Fatal(err)
	}
	back, err := ReadFvecs(fpath)
	if err != nil {
		t.Fatal(err)
	}
	if len(back) != len(rows) {
		t.Fatalf("read %d rows, wrote %d", len(back), len(rows))
	}
	for i := range rows {
		if !slices.Equal(back[i], rows[i]) {
			t.Fatalf("row %d: %v != %v", i, back[i], rows[i])
		}
	}
	ints := [][]int32{{1, 2, 3}, {-4, 5, 6}}
	ipath := filepath.Join(dir, "x.ivecs")
	if err := WriteIvecs(ipath, ints); err != nil {
		t.Fatal(err)
	}
	iback, err := ReadIvecs(ipath)
	if err != nil || len(iback) != 2 || !slices.Equal(iback[1], ints[1]) {
		t.Fatalf("ivecs round trip: %v, %v", iback, err)
	}
}

func TestTableMarkdown(t *testing.T) {
	tab := Table{Title: "T", Header: []string{"a", "b"}}
	tab.Add(1, 0.123456)
	tab.Add("x|y")
	got := tab.Markdown()
	for _, want := range []string{"### T", "| a | b |", "| --- | --- |", "| 1 | 0.1235 |", `| x\|y |  |`} {
		if !strings.Contains(got, want) {
			t.Errorf("markdown lacks %q:\n%s", want, got)
		}
	}
}

func TestTimeQueriesStopsSlowFirstPass(t *testing.T) {
	queries := make([][]float32, 1000)
	res := TimeQueries(queries, func([]float32) []int32 {
		time.Sleep(time.Millisecond)
		return []int32{1}
	}, 5*time.Millisecond, 20*time.Millisecond)
	if res.Answered == 0 || res.Answered >= len(queries) || len(res.IDs) != res.Answered {
		t.Fatalf("answered %d of %d (ids %d): want a partial first pass", res.Answered, len(queries), len(res.IDs))
	}
	if res.QPS <= 0 {
		t.Fatalf("QPS %v", res.QPS)
	}
}

func TestTimeQueriesRepeatsFastPasses(t *testing.T) {
	queries := make([][]float32, 3)
	calls := 0
	res := TimeQueries(queries, func([]float32) []int32 { calls++; return nil }, 2*time.Millisecond, time.Hour)
	if res.Answered != len(queries) || calls <= len(queries) {
		t.Fatalf("answered %d, calls %d: want every query kept once and several passes", res.Answered, calls)
	}
}

func TestWriteRecallQPSPlot(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.png")
	err := WriteRecallQPSPlot(path, "t", 0.8, []Curve{
		{Name: "a", Recall: []float64{0.5, 0.9}, QPS: []float64{1000, 100}},
		{Name: "all below", Recall: []float64{0.2}, QPS: []float64{5000}},
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestClosedLoop(t *testing.T) {
	// With no time to run, each client still makes its one call: 3 calls, 1 of them failing.
	var mu sync.Mutex
	seen := map[int64]bool{}
	res := ClosedLoop(context.Background(), 3, 0, 10, func(_ context.Context, rng *rand.Rand) error {
		mu.Lock()
		defer mu.Unlock()
		first := rng.Int63()
		seen[first] = true
		if len(seen) == 2 {
			return errors.New("refused")
		}
		return nil
	})
	if len(res.Latencies) != 2 || res.Errors != 1 {
		t.Errorf("ClosedLoop: %d latencies and %d errors, want 2 and 1", len(res.Latencies), res.Errors)
	}
	if len(seen) != 3 {
		t.Errorf("the 3 clients drew %d distinct first numbers, want 3 (one generator each)", len(seen))
	}
	var all Load
	all.Merge(res)
	all.Merge(Load{Latencies: []time.Duration{time.Millisecond}, Errors: 2, Elapsed: time.Second})
	if len(all.Latencies) != 3 || all.Errors != 3 || all.Elapsed != res.Elapsed+time.Second {
		t.Errorf("Merge: %+v", all)
	}
	if q := (Load{Latencies: make([]time.Duration, 10), Elapsed: 2 * time.Second}).QPS(); q != 5 {
		t.Errorf("QPS = %v, want 5", q)
	}
	if q := (Load{}).QPS(); q != 0 {
		t.Errorf("QPS of nothing = %v, want 0", q)
	}
}

func TestWatchHeapSeesAnAllocationHeldAtTheEnd(t *testing.T) {
	stop := WatchHeap(time.Hour) // no tick: only the first and the last reads count
	held := make([]byte, 64<<20)
	held[len(held)-1] = 1
	runtime.GC() // the live heap is what a collection found reachable
	peak := stop()
	if peak < 64<<20 {
		t.Errorf("peak %d bytes, want at least the 64 MiB held", peak)
	}
	runtime.KeepAlive(held)
}
