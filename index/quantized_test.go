package index

import (
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"sync"
	"testing"
)

// vectorTable is a Config.Vectors source over a test's vectors, counting its calls.
type vectorTable struct {
	mu    sync.Mutex
	vecs  map[Key][]float32
	calls int
}

func newVectorTable() *vectorTable { return &vectorTable{vecs: map[Key][]float32{}} }

func (t *vectorTable) put(k Key, v []float32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.vecs[k] = v
}

func (t *vectorTable) get(k Key) []float32 {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.calls++
	return t.vecs[k]
}

// TestQuantizedRecallMatchesFloat builds the same graph with float32 and with int8 vectors
// (with the full vectors inside the index and from a source) and checks that, at the same
// ef, recall after re-ranking is within 0.005 of float32's, that scores are exact, and that
// the source variant holds no full vectors.
func TestQuantizedRecallMatchesFloat(t *testing.T) {
	mnist, mnistQ := fashionMNIST(t, 5000, 200)
	blobs, blobsQ := clustered(1, 12000, 200, 128, 200, true)
	cases := []struct {
		name    string
		metric  Metric
		base    [][]float32
		queries [][]float32
	}{
		{"clustered-12k-128d-ip", InnerProduct, blobs, blobsQ},
		{"fashion-mnist-5k-l2", L2, mnist, mnistQ},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Metric = tc.metric
			flt, exact := buildBoth(t, tc.base, cfg)
			cfg.Quantize = QuantizeInt8
			q8, _ := buildBoth(t, tc.base, cfg)
			table := newVectorTable()
			for i, v := range tc.base {
				table.put(Key(i), v)
			}
			cfg.Vectors = table.get
			q8src, _ := buildBoth(t, tc.base, cfg)

			if st := q8.Stats(); !st.Quantized || st.FullVectorBytes == 0 {
				t.Fatalf("int8 stats %+v: want quantised with full vectors held", st)
			}
			st, fst := q8src.Stats(), flt.Stats()
			if !st.Quantized || st.FullVectorBytes != 0 {
				t.Fatalf("int8 with a source: stats %+v, want quantised and no full vectors", st)
			}
			t.Logf("bytes per vector: float32 %d, int8 %d, int8 with a source %d",
				fst.Bytes/int64(fst.Nodes), q8.Stats().Bytes/int64(fst.Nodes), st.Bytes/int64(st.Nodes))
			// Three of every four vector bytes are saved, whatever the links cost.
			if saved, want := fst.Bytes-st.Bytes, int64(3*len(tc.base[0])*st.Nodes)*9/10; saved < want {
				t.Errorf("int8 with a source holds %d bytes, float32 %d: saved %d, want >= %d", st.Bytes, fst.Bytes, saved, want)
			}

			for _, ef := range []int{16, 64} {
				opt := SearchOptions{EF: ef}
				want := searchAll(exact, tc.queries, 10, SearchOptions{})
				rf := RecallAtK(searchAll(flt, tc.queries, 10, opt), want, 10)
				got8 := searchAll(q8, tc.queries, 10, opt)
				r8 := RecallAtK(got8, want, 10)
				r8src := RecallAtK(searchAll(q8src, tc.queries, 10, opt), want, 10)
				t.Logf("ef %d: recall@10 float32 %.4f, int8 %.4f, int8 with a source %.4f", ef, rf, r8, r8src)
				if r8 < rf-0.005 || r8src < rf-0.005 {
					t.Errorf("ef %d: int8 recall %.4f / %.4f, float32 %.4f: more than 0.005 lower", ef, r8, r8src, rf)
				}
				for qi, res := range got8 {
					if len(res) != 10 {
						t.Fatalf("query %d: %d results", qi, len(res))
					}
					for i, n := range res {
						v, _ := exact.Vector(n.Key)
						if s := -distance(tc.metric == L2, tc.queries[qi], v); s != n.Score {
							t.Fatalf("key %d score %v, exact %v", n.Key, n.Score, s)
						}
						if i > 0 && n.Score > res[i-1].Score {
							t.Fatalf("query %d not best first: %v", qi, res)
						}
					}
				}
			}
			// Rerank bounds the full-vector reads.
			table.calls = 0
			limited := NewHNSW(len(tc.base[0]), Config{Metric: tc.metric, Quantize: QuantizeInt8, Rerank: 12, Vectors: table.get})
			limited.g = q8src.g
			limited.Search(tc.queries[0], 10, SearchOptions{EF: 64})
			if table.calls != 12 {
				t.Errorf("Rerank 12 read %d full vectors", table.calls)
			}
		})
	}
}

// TestPrefetchDoesNotChangeResults runs the same searches with the software prefetches off
// and on, for both element kinds.
func TestPrefetchDoesNotChangeResults(t *testing.T) {
	base, queries := clustered(17, 5000, 100, 96, 50, true)
	for _, qz := range []Quantization{QuantizeNone, QuantizeInt8} {
		t.Run(qz.String(), func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Quantize = qz
			h, _ := buildBoth(t, base, cfg)
			with := searchAll(h, queries, 10, SearchOptions{EF: 40})
			h.g.noPrefetch = true
			without := searchAll(h, queries, 10, SearchOptions{EF: 40})
			h.g.noPrefetch = false
			for i := range with {
				if !slices.Equal(with[i], without[i]) {
					t.Fatalf("query %d: %v with prefetch, %v without", i, with[i], without[i])
				}
			}
		})
	}
}

// TestQuantizedBeforeTraining checks that a small int8 index (fewer vectors than the
// quantiser is fitted to) searches exactly on full vectors, and trains when it grows.
func TestQuantizedBeforeTraining(t *testing.T) {
	base, queries := clustered(19, quantTrainSize+10, 20, 32, 10, true)
	cfg := DefaultConfig()
	cfg.Quantize = QuantizeInt8
	h := NewHNSW(32, cfg)
	e := NewExact(32, InnerProduct)
	for i, v := range base[:quantTrainSize-1] {
		_ = h.Add(Key(i), v)
		_ = e.Add(Key(i), v)
	}
	if h.Stats().Quantized {
		t.Fatal("trained before it had quantTrainSize vectors")
	}
	if r := RecallAtK(searchAll(h, queries, 10, SearchOptions{}), searchAll(e, queries, 10, SearchOptions{}), 10); r < 0.95 {
		t.Fatalf("untrained recall %.4f", r)
	}
	for i, v := range base[quantTrainSize-1:] {
		_ = h.Add(Key(quantTrainSize-1+i), v)
	}
	if !h.Stats().Quantized {
		t.Fatal("not trained after quantTrainSize vectors")
	}
	if v, ok := h.Vector(3); !ok || !slices.Equal(v, base[3]) {
		t.Fatal("Vector does not return the full vector")
	}
}

func TestQuantizedSnapshotRoundTrip(t *testing.T) {
	base, queries := clustered(23, 4000, 40, 48, 30, false)
	table := newVectorTable()
	for i, v := range base {
		table.put(Key(i), v)
	}
	cases := []struct {
		name    string
		n       int
		vectors func(Key) []float32
	}{
		{"trained", len(base), nil},
		{"untrained", 500, nil},
		{"trained with a source", len(base), table.get},
		{"untrained with a source", 500, table.get},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := NewHNSW(48, Config{Metric: L2, Quantize: QuantizeInt8, Rerank: 30, Vectors: tc.vectors})
			for i, v := range base[:tc.n] {
				_ = h.Add(Key(i), v)
			}
			for k := Key(0); k < 40; k += 2 {
				h.Delete(k)
			}
			path := filepath.Join(t.TempDir(), "q.hnsw")
			if err := h.SaveSnapshot(path, SnapshotInfo{Seq: 8, Tag: "t"}); err != nil {
				t.Fatal(err)
			}
			loaded, info, err := LoadSnapshotWith(path, LoadOptions{Vectors: tc.vectors})
			if err != nil {
				t.Fatal(err)
			}
			if info.Seq != 8 || info.Tag != "t" {
				t.Fatalf("info %+v", info)
			}
			if c := loaded.Config(); c.Quantize != QuantizeInt8 || c.Rerank != 30 || c.Metric != L2 {
				t.Fatalf("loaded config %+v", c)
			}
			ls, hs := loaded.Stats(), h.Stats()
			if (ls.FullVectorBytes == 0) != (hs.FullVectorBytes == 0) {
				t.Fatalf("loaded %+v, saved %+v: full vectors kept by one only", ls, hs)
			}
			ls.Bytes, hs.Bytes, ls.FullVectorBytes, hs.FullVectorBytes = 0, 0, 0, 0 // capacities differ
			if ls != hs {
				t.Fatalf("loaded %+v, saved %+v", ls, hs)
			}
			for _, q := range queries {
				if got, want := loaded.Search(q, 10, SearchOptions{}), h.Search(q, 10, SearchOptions{}); !slices.Equal(got, want) {
					t.Fatalf("loaded index answers %v, original %v", got, want)
				}
			}
			if v, ok := loaded.Vector(41); !ok || !slices.Equal(v, base[41]) {
				t.Fatal("loaded index lost a full vector")
			}
			if err := loaded.Add(100000, queries[0]); err != nil {
				t.Fatal(err)
			}
			if tc.vectors != nil {
				_, _, err := LoadSnapshot(path)
				if tc.n >= quantTrainSize && !errors.Is(err, ErrNoVectors) {
					t.Fatalf("loading a source index's snapshot without the source: err = %v, want ErrNoVectors", err)
				}
			}
		})
	}
}

// TestQuantizedChurn is the churn test's model check for int8 vectors: deletes, replacements
// and compactions keep the deleted keys out and recall within reach of float32's.
func TestQuantizedChurn(t *testing.T) {
	const dim = 48
	vecs, queries := clustered(29, 9000, 40, dim, 60, true)
	table := newVectorTable()
	for _, withSource := range []bool{false, true} {
		t.Run(fmt.Sprintf("source=%v", withSource), func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Quantize = QuantizeInt8
			if withSource {
				cfg.Vectors = table.get
			}
			h := NewHNSW(dim, cfg)
			e := NewExact(dim, cfg.Metric)
			live := map[Key]bool{}
			for i := range 6000 {
				table.put(Key(i), vecs[i])
				_ = h.Add(Key(i), vecs[i])
				_ = e.Add(Key(i), vecs[i])
				live[Key(i)] = true
			}
			// Delete enough to compact twice, replace some keys with other vectors.
			for i := range 3000 {
				k := Key(i * 2)
				h.Delete(k)
				e.Delete(k)
				delete(live, k)
			}
			for i := range 1500 {
				k := Key(i*4 + 1)
				v := vecs[6000+i]
				table.put(k, v)
				_ = h.Add(k, v)
				_ = e.Add(k, v)
			}
			got := searchAll(h, queries, 10, SearchOptions{})
			for _, res := range got {
				for _, n := range res {
					if !live[n.Key] {
						t.Fatalf("deleted key %d returned", n.Key)
					}
				}
			}
			r := RecallAtK(got, searchAll(e, queries, 10, SearchOptions{}), 10)
			t.Logf("after churn: %+v, recall@10 %.4f", h.Stats(), r)
			if r < 0.95 || math.IsNaN(r) {
				t.Fatalf("recall@10 %.4f after churn", r)
			}
		})
	}
}

// TestScanAfterWalkDropsSpill covers the fallback of a filtered search on codes whose walk
// ran out of matches: the exact scan that follows must not keep the walk's spilled nodes,
// which it finds again (they would come back twice).
func TestScanAfterWalkDropsSpill(t *testing.T) {
	base, queries := clustered(37, quantTrainSize+500, 5, 32, 10, true)
	cfg := DefaultConfig()
	cfg.Quantize = QuantizeInt8
	h, _ := buildBoth(t, base, cfg)
	g, s := h.g, h.getScratch()
	defer h.putScratch(s)
	p := &s.query
	g.prepare(p, queries[0])
	s.spillSize = 20
	ep, epDist := g.greedyDescend(s, p, 0)
	g.searchLayer(s, p, ep, epDist, 0, 20, false, nil)
	if s.spill.len() == 0 {
		t.Fatal("the walk spilled nothing; the test needs it to")
	}
	g.scan(s, p, 20, nil)
	if s.spill.len() != 0 {
		t.Fatalf("%d spilled nodes survived the scan", s.spill.len())
	}
}
