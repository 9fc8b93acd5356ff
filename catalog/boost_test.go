package catalog

import (
	"context"
	"fmt"
	"math"
	"slices"
	"testing"
)

// TestBoostsRankBySimilarityPlusBoost checks Boosts against a brute-force reading of their
// documentation: score = similarity + the boosts a product's attributes match, ranked by
// it, MinScore applied to it.
func TestBoostsRankBySimilarityPlusBoost(t *testing.T) {
	ctx := context.Background()
	c := openCatalog(t, t.TempDir())
	defer c.Close()
	centre := randomVectors(1, c.Dim(), 5)[0]
	vecs := map[string][]float32{}
	attrs := map[string]map[string]string{}
	for i := range 60 {
		v, err := normalise(near(centre, 1.5, rngFor(uint64(100+i))), c.Dim())
		if err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("p%02d", i)
		vecs[id] = v
		attrs[id] = map[string]string{"kind": []string{"shot", "street", "street"}[i%3]}
		if i%5 == 0 {
			attrs[id]["stock"] = "out"
		}
		w := Write{ID: id, Attributes: attrs[id]}
		if _, err := c.Upsert(ctx, single(w, PhotoWrite{Vector: v})); err != nil {
			t.Fatal(err)
		}
	}
	query, err := normalise(near(centre, 1.5, rngFor(7)), c.Dim())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		boosts   []Boost
		minScore float32
	}{
		{"catalogue shots up", []Boost{{Attribute: "kind", Value: "shot", Add: 0.05}}, 0},
		{"and out of stock down", []Boost{{Attribute: "kind", Value: "shot", Add: 0.05}, {Attribute: "stock", Value: "out", Add: -0.1}}, 0},
		{"with a minimum", []Boost{{Attribute: "kind", Value: "shot", Add: 0.05}}, 0.3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			score := func(id string) float32 {
				s := dot(query, vecs[id])
				for _, b := range tc.boosts {
					if v, ok := attrs[id][b.Attribute]; ok && v == b.Value {
						s += b.Add
					}
				}
				return s
			}
			var want []string
			for id := range vecs {
				if tc.minScore == 0 || score(id) >= tc.minScore {
					want = append(want, id)
				}
			}
			slices.SortFunc(want, func(a, b string) int {
				if d := score(b) - score(a); d != 0 {
					return int(math.Copysign(1, float64(d)))
				}
				return 0
			})
			want = want[:min(10, len(want))]
			plain, err := c.SearchByVector(ctx, query, SearchOptions{K: 10, EF: 1000})
			if err != nil {
				t.Fatal(err)
			}
			rs, err := c.SearchByVector(ctx, query, SearchOptions{K: 10, EF: 1000, Boosts: tc.boosts, MinScore: tc.minScore})
			if err != nil {
				t.Fatal(err)
			}
			if got := ids(rs); !slices.Equal(got, want) {
				t.Fatalf("boosted results %v, want %v", got, want)
			}
			if slices.Equal(ids(plain), want) {
				t.Errorf("the boosts changed nothing: the case does not test them")
			}
			for _, r := range rs {
				if d := math.Abs(float64(r.Score - score(r.Product.ID))); d > 1e-5 {
					t.Errorf("%s scores %v, %v off its similarity plus boosts", r.Product.ID, r.Score, d)
				}
			}
		})
	}
}
