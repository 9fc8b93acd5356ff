package quality

import (
	"context"
	"errors"
	"math"
	"testing"

	"lookalike/catalog"
	"lookalike/embed"
)

// oneHot embeds a "photo" of one byte b as the unit vector on axis b (so similarity is 1 for
// the same byte and 0 otherwise): enough to check the metrics' arithmetic exactly.
type oneHot struct{}

func (oneHot) Embed(_ context.Context, img []byte) ([]float32, error) {
	if len(img) != 1 {
		return nil, errors.New("not a one-byte photo")
	}
	v := make([]float32, 8)
	v[img[0]%8] = 1
	return v, nil
}
func (o oneHot) Analyze(ctx context.Context, img []byte, _ embed.AnalyzeOptions) (embed.Analysis, error) {
	v, err := o.Embed(ctx, img)
	return embed.Analysis{Vector: v}, err
}
func (oneHot) Dim() int         { return 8 }
func (oneHot) Identity() string { return "one-hot@8" }

func TestEvaluateMetrics(t *testing.T) {
	ctx := context.Background()
	c, err := catalog.Open(ctx, catalog.Config{DataDir: t.TempDir(), Embedder: oneHot{}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Products a and b (label x) look like axis 0; c (label y) like axis 1.
	for _, w := range []catalog.Write{
		{ID: "a", Title: "x", Photos: []catalog.PhotoWrite{{Image: []byte{0}}}},
		{ID: "b", Title: "x", Photos: []catalog.PhotoWrite{{Image: []byte{8}}}},
		{ID: "c", Title: "y", Photos: []catalog.PhotoWrite{{Image: []byte{1}}}},
	} {
		if _, err := c.Upsert(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	axis := func(i int) []float32 {
		v := make([]float32, 8)
		v[i] = 1
		return v
	}
	for _, tc := range []struct {
		name    string
		queries []Query
	}{
		{"images", []Query{
			{Image: []byte{0}, Label: "x"}, // a and b first (tie), then c: R@1 1, AP 1
			{Image: []byte{1}, Label: "x"}, // c first, then a, b: R@1 0, R@5 1, AP (1/2 + 2/3)/2
			{Image: []byte{}, Label: "x"},  // fails to embed
		}},
		{"ready vectors", []Query{
			{Vector: axis(0), Label: "x"},
			{Vector: axis(1), Label: "x"},
			{Vector: make([]float32, 3), Label: "x"}, // the wrong dimension
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { checkReport(t, c, tc.queries) })
	}
}

// checkReport evaluates the queries of TestEvaluateMetrics and checks the figures.
func checkReport(t *testing.T, c *catalog.Catalog, queries []Query) {
	rep, err := Evaluate(context.Background(), c, queries, map[string]int{"x": 2, "y": 1}, Options{
		Label:         func(p catalog.Product) string { return p.Title },
		CatalogueShot: func(p catalog.Product, _ string) bool { return p.ID == "b" },
	})
	if err != nil {
		t.Fatal(err)
	}
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
	ap2 := (1.0/2 + 2.0/3) / 2
	checks := []struct {
		name      string
		got, want float64
	}{
		{"R@1", rep.RecallAt[1], 0.5},
		{"R@5", rep.RecallAt[5], 1},
		{"R@10", rep.RecallAt[10], 1},
		{"mAP@10", rep.MAP10, (1 + ap2) / 2},
		{"P@10", rep.P10, (0.2 + 0.2) / 2},
		{"catalogue shot in top 10", rep.CatalogueShotAt10, 1},
		// b, the shot, comes second for the first query (after a, same score, lower id)
		// and third for the second.
		{"catalogue shot MRR@10", rep.CatalogueShotMRR10, (1.0/2 + 1.0/3) / 2},
	}
	for _, c := range checks {
		if !near(c.got, c.want) {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if rep.Queries != 2 || rep.Failed != 1 {
		t.Errorf("queries %d, failed %d; want 2 and 1", rep.Queries, rep.Failed)
	}
	// The third query failed: the outcomes are the first two, by their index.
	want := []Outcome{{Query: 0, First: 0, AP10: 1, P10: 0.2, Shot: true, ShotRank: 1}, {Query: 1, First: 1, AP10: ap2, P10: 0.2, Shot: true, ShotRank: 2}}
	if len(rep.Outcomes) != 2 {
		t.Fatalf("outcomes %+v, want %+v", rep.Outcomes, want)
	}
	for i, o := range rep.Outcomes {
		w := want[i]
		if o.Query != w.Query || o.First != w.First || !near(o.AP10, w.AP10) || !near(o.P10, w.P10) || o.Shot != w.Shot || o.ShotRank != w.ShotRank {
			t.Errorf("outcome %d = %+v, want %+v", i, o, w)
		}
	}
}
