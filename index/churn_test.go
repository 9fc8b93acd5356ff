package index

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
)

// TestChurnKeepsRecallAndHidesDeleted interleaves upserts, replacements and deletes, deletes
// everything, adds again, and checks after each phase that no deleted key is returned and
// that recall against an exact index fed the same operations holds.
func TestChurnKeepsRecallAndHidesDeleted(t *testing.T) {
	const dim, pool = 48, 12000
	vecs, queries := clustered(21, pool, 60, dim, 60, true)
	cfg := DefaultConfig()
	h := NewHNSW(dim, cfg)
	e := NewExact(dim, cfg.Metric)
	rng := rand.New(rand.NewPCG(3, 4))
	live := map[Key]bool{}
	add := func(key Key, v []float32) {
		if err := h.Add(key, v); err != nil {
			t.Fatal(err)
		}
		if err := e.Add(key, v); err != nil {
			t.Fatal(err)
		}
		live[key] = true
	}
	del := func(key Key) {
		if h.Delete(key) != live[key] {
			t.Fatalf("Delete(%d) disagreed with the model", key)
		}
		e.Delete(key)
		delete(live, key)
	}
	check := func(phase string) {
		t.Helper()
		if h.Len() != len(live) || e.Len() != len(live) {
			t.Fatalf("%s: Len = %d (exact %d), want %d", phase, h.Len(), e.Len(), len(live))
		}
		k := min(10, len(live))
		got := searchAll(h, queries, 10, SearchOptions{})
		want := searchAll(e, queries, 10, SearchOptions{})
		for _, res := range got {
			if len(res) != k {
				t.Fatalf("%s: %d results, want %d", phase, len(res), k)
			}
			for _, n := range res {
				if !live[n.Key] {
					t.Fatalf("%s: deleted key %d returned", phase, n.Key)
				}
			}
		}
		r := RecallAtK(got, want, 10)
		st := h.Stats()
		t.Logf("%s: live %d, tombstones %d, recall@10 %.4f", phase, st.Live, st.Tombstones, r)
		if r < 0.95 {
			t.Fatalf("%s: recall@10 = %.4f, want >= 0.95", phase, r)
		}
	}

	// Keys 0..5999 first; then random operations where a replacement gives a key the vector
	// of another pool entry.
	for i := range 6000 {
		add(Key(i), vecs[i])
	}
	check("initial")
	for range 8000 {
		key := Key(rng.IntN(8000))
		switch op := rng.IntN(10); {
		case op < 4:
			del(key)
		default:
			add(key, vecs[rng.IntN(pool)])
		}
	}
	check("interleaved")
	for key := range live {
		del(key)
	}
	if res := h.Search(queries[0], 10, SearchOptions{}); len(res) != 0 {
		t.Fatalf("empty index returned %v", res)
	}
	check("deleted everything")
	for i := range 5000 {
		add(Key(100000+i), vecs[pool-1-i])
	}
	check("added again")
}

func TestReplaceKey(t *testing.T) {
	for _, idx := range []Index{NewHNSW(4, DefaultConfig()), NewExact(4, InnerProduct)} {
		a := []float32{1, 0, 0, 0}
		b := []float32{0, 1, 0, 0}
		_ = idx.Add(1, a)
		_ = idx.Add(2, []float32{0.9, 0.1, 0, 0})
		_ = idx.Add(1, b)
		if idx.Len() != 2 {
			t.Fatalf("%T: Len = %d after replacing, want 2", idx, idx.Len())
		}
		res := idx.Search(a, 2, SearchOptions{})
		if len(res) != 2 || res[0].Key != 2 || res[1].Key != 1 || res[1].Score != 0 {
			t.Fatalf("%T: search after replace = %v", idx, res)
		}
		if v, ok := idx.Vector(1); !ok || v[1] != 1 {
			t.Fatalf("%T: Vector(1) = %v, %v", idx, v, ok)
		}
		if err := idx.Add(3, []float32{1, 2}); err == nil {
			t.Fatalf("%T: accepted a vector of the wrong dimension", idx)
		}
		if idx.Delete(7) || !idx.Delete(2) || idx.Delete(2) {
			t.Fatalf("%T: Delete reports wrong presence", idx)
		}
	}
}

// TestConcurrentSearchWhileWriting runs readers against writers that insert, replace and
// delete (crossing the compaction threshold, and with int8 codes the quantiser's training),
// and checks that no key deleted before a search started comes back from it. Run under -race
// by `make test`.
func TestConcurrentSearchWhileWriting(t *testing.T) {
	for _, qz := range []Quantization{QuantizeNone, QuantizeInt8} {
		t.Run(qz.String(), func(t *testing.T) { testConcurrentSearchWhileWriting(t, qz) })
	}
}

func testConcurrentSearchWhileWriting(t *testing.T, qz Quantization) {
	const dim = 16
	vecs, queries := clustered(31, 3000, 50, dim, 20, true)
	cfg := DefaultConfig()
	cfg.EFConstruction = 64
	cfg.Quantize = qz
	h := NewHNSW(dim, cfg)
	h.g.trainAt = 1100 // trains while the readers run
	for i := range 1000 {
		if err := h.Add(Key(i), vecs[i]); err != nil {
			t.Fatal(err)
		}
	}
	// Keys 0..499 are deleted before the readers start and never come back.
	for i := range 500 {
		h.Delete(Key(i))
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	var searches atomic.Int64
	for r := range 4 {
		wg.Go(func() {
			var dst []Neighbor
			for i := 0; !stop.Load(); i++ {
				opt := SearchOptions{}
				if i%3 == 0 {
					opt.Filter = func(k Key) bool { return k%7 == 0 }
				}
				dst = h.SearchAppend(dst[:0], queries[(i+r)%len(queries)], 10, opt)
				for _, n := range dst {
					if n.Key < 500 {
						t.Errorf("deleted key %d returned", n.Key)
						return
					}
					if opt.Filter != nil && n.Key%7 != 0 {
						t.Errorf("filtered search returned key %d", n.Key)
						return
					}
				}
				searches.Add(1)
			}
		})
	}
	for w := range 2 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 9))
			for range 1500 {
				key := Key(500 + rng.IntN(2000))
				if rng.IntN(3) == 0 {
					h.Delete(key)
				} else if err := h.Add(key, vecs[rng.IntN(len(vecs))]); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for range 3 {
			if err := h.Save(t.TempDir()+"/g.hnsw", 1); err != nil {
				t.Error(err)
			}
		}
	})
	// Writers finish on their own; then stop the readers.
	for searches.Load() < 2000 && !t.Failed() {
		h.Len()
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("%d searches, final %+v", searches.Load(), h.Stats())
}
