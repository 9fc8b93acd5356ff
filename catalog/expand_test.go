package catalog

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestQueryExpansionIsTheFormula checks SearchByVector with Expand against a brute-force
// reading of its documentation: the first Expand admitted photos, weighted score^alpha,
// summed with the query, normalised, and every admitted photo ranked by that vector.
func TestQueryExpansionIsTheFormula(t *testing.T) {
	ctx := context.Background()
	c := openCatalog(t, t.TempDir())
	defer c.Close()
	const n = 200
	// Clusters of five, so the first photos found are informative about the rest.
	centres := randomVectors(n/5, c.Dim(), 11)
	vecs := make(map[string][]float32, n)
	for i := range n {
		v, err := normalise(near(centres[i/5], 0.7, rngFor(uint64(i))), c.Dim())
		if err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("p%03d", i)
		vecs[id] = v
		cat := "even"
		if i%2 == 1 {
			cat = "odd"
		}
		if _, err := c.Upsert(ctx, single(Write{ID: id, Category: cat}, PhotoWrite{Vector: v})); err != nil {
			t.Fatal(err)
		}
	}
	query, err := normalise(near(centres[3], 1.2, rngFor(999)), c.Dim())
	if err != nil {
		t.Fatal(err)
	}
	ranked := func(q []float32, admit func(string) bool) []string {
		var ids []string
		for id := range vecs {
			if admit(id) {
				ids = append(ids, id)
			}
		}
		slices.SortFunc(ids, func(a, b string) int {
			sa, sb := dot(q, vecs[a]), dot(q, vecs[b])
			if sa != sb {
				if sa > sb {
					return -1
				}
				return 1
			}
			return 0
		})
		return ids
	}
	all := func(string) bool { return true }
	odd := func(id string) bool { return id[len(id)-1]%2 == 1 }
	for _, tc := range []struct {
		expand int
		alpha  float32
		filter Filter
		admit  func(string) bool
	}{
		{1, 0, Filter{}, all},
		{4, 0, Filter{}, all},
		{4, 3, Filter{}, all},
		{4, 3, Filter{Categories: []string{"odd"}}, odd},
	} {
		t.Run(fmt.Sprintf("expand %d alpha %v %v", tc.expand, tc.alpha, tc.filter.Categories), func(t *testing.T) {
			first := ranked(query, tc.admit)[:tc.expand]
			sum := make([]float64, len(query))
			for d, x := range query {
				sum[d] = float64(x)
			}
			for _, id := range first {
				w := math.Pow(math.Max(float64(dot(query, vecs[id])), 0), float64(tc.alpha))
				for d, x := range vecs[id] {
					sum[d] += w * float64(x)
				}
			}
			expanded := make([]float32, len(sum))
			for d, x := range sum {
				expanded[d] = float32(x)
			}
			expanded, err := normalise(expanded, c.Dim())
			if err != nil {
				t.Fatal(err)
			}
			want := ranked(expanded, tc.admit)[:10]
			plain, err := c.SearchByVector(ctx, query, SearchOptions{K: 10, EF: 1000, Filter: tc.filter})
			if err != nil {
				t.Fatal(err)
			}
			rs, err := c.SearchByVector(ctx, query, SearchOptions{K: 10, EF: 1000, Filter: tc.filter, Expand: tc.expand, ExpandAlpha: tc.alpha})
			if err != nil {
				t.Fatal(err)
			}
			if got := ids(rs); !slices.Equal(got, want) {
				t.Fatalf("expanded results %v, want %v", got, want)
			}
			if slices.Equal(ids(plain), want) {
				t.Errorf("expansion changed nothing: the case does not test it")
			}
			for _, r := range rs {
				if d := math.Abs(float64(r.Score - dot(expanded, vecs[r.Product.ID]))); d > 1e-5 {
					t.Errorf("%s scores %v, %v off its similarity to the expanded query", r.Product.ID, r.Score, d)
				}
			}
		})
	}
}

func rngFor(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 1)) }
