package index

import (
	"fmt"
	"testing"
)

func TestFilteredSearchReturnsExactlyK(t *testing.T) {
	base, queries := clustered(11, 20000, 40, 64, 100, true)
	for _, qz := range []Quantization{QuantizeNone, QuantizeInt8} {
		t.Run(qz.String(), func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Quantize = qz
			h, e := buildBoth(t, base, cfg)
			testFilteredSearch(t, h, e, queries)
		})
	}
}

func testFilteredSearch(t *testing.T, h *HNSW, e *Exact, queries [][]float32) {
	const k = 10
	noDuplicates := func(res []Neighbor) {
		t.Helper()
		seen := map[Key]bool{}
		for _, n := range res {
			if seen[n.Key] {
				t.Fatalf("key %d returned twice: %v", n.Key, res)
			}
			seen[n.Key] = true
		}
	}
	for _, sel := range []struct {
		name  string
		every Key // keep one key in `every`
	}{
		{"50%", 2},
		{"5%", 20},
		{"0.5%", 200},
	} {
		t.Run(sel.name, func(t *testing.T) {
			calls := 0
			match := func(key Key) bool { return key%sel.every == 3%sel.every }
			filter := func(key Key) bool { calls++; return match(key) }
			var got, want [][]Neighbor
			for _, q := range queries {
				res := h.Search(q, k, SearchOptions{Filter: filter})
				if len(res) != k {
					t.Fatalf("got %d results, want exactly %d", len(res), k)
				}
				noDuplicates(res)
				for _, n := range res {
					if !match(n.Key) {
						t.Fatalf("key %d does not match the filter", n.Key)
					}
				}
				got = append(got, res)
				want = append(want, e.Search(q, k, SearchOptions{Filter: match}))
			}
			r := RecallAtK(got, want, k)
			t.Logf("filtered recall@%d = %.4f, %.0f filter calls per query", k, r, float64(calls)/float64(len(queries)))
			if r < 0.95 {
				t.Errorf("filtered recall@%d = %.4f, want >= 0.95", k, r)
			}
		})
	}
	t.Run("fewer matches than k", func(t *testing.T) {
		filter := func(key Key) bool { return key < 4 }
		res := h.Search(queries[0], k, SearchOptions{Filter: filter})
		if len(res) != 4 {
			t.Fatalf("got %d results, want the 4 that exist", len(res))
		}
		noDuplicates(res)
	})
	t.Run("no match", func(t *testing.T) {
		if res := h.Search(queries[0], k, SearchOptions{Filter: func(Key) bool { return false }}); len(res) != 0 {
			t.Fatalf("got %v, want nothing", res)
		}
	})
}

func TestSearchOptionsPerQuery(t *testing.T) {
	base, queries := clustered(5, 3000, 10, 32, 30, true)
	h, e := buildBoth(t, base, DefaultConfig())
	for _, tc := range []struct{ k, ef int }{{1, 0}, {5, 1}, {50, 10}, {100, 400}, {4000, 0}} {
		t.Run(fmt.Sprintf("k=%d,ef=%d", tc.k, tc.ef), func(t *testing.T) {
			for _, q := range queries {
				got := h.Search(q, tc.k, SearchOptions{EF: tc.ef})
				want := e.Search(q, tc.k, SearchOptions{})
				if len(got) != len(want) {
					t.Fatalf("got %d results, want %d", len(got), len(want))
				}
				// Scores are exact: every returned score equals the true one for its key.
				for _, n := range got {
					v, _ := e.Vector(n.Key)
					if s := -distance(false, q, v); s != n.Score {
						t.Fatalf("key %d score %v, exact %v", n.Key, n.Score, s)
					}
				}
			}
		})
	}
}
