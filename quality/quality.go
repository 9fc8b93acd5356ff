package quality

import (
	"context"
	"fmt"
	"time"

	"lookalike/catalog"
)

// Query is one labelled photo to search with.
type Query struct {
	// Image is the photo.
	Image []byte
	// Vector, when set, is searched instead of Image: a ready (perhaps projected) embedding,
	// so a caller comparing representations embeds each photo once.
	Vector []float32
	// Label is what a right answer is labelled with.
	Label string
}

// Options tunes Evaluate.
type Options struct {
	// Label says what a product is labelled with (its category, title or an attribute).
	Label func(catalog.Product) string
	// CatalogueShot reports whether a product's photo is a catalogue (shop) shot; nil when
	// the catalogue marks none.
	CatalogueShot func(p catalog.Product, photoID string) bool
	// Search tunes every search; K is raised to at least 10.
	Search catalog.SearchOptions
}

// Report holds the figures, each averaged over the queries.
type Report struct {
	// Queries counts the queries searched; Failed those whose photo could not be searched.
	Queries, Failed int
	// RecallAt holds R@1, R@5 and R@10: a product with the query's label among the first k.
	RecallAt map[int]float64
	// MAP10 is mean average precision over the first 10 results, against every product of
	// the label in the catalogue.
	MAP10 float64
	// P10 is the share of the first 10 results with the query's label.
	P10 float64
	// CatalogueShotAt10 is the share of queries whose label's catalogue shot is among the
	// first 10 results' matching photos (0 when the catalogue marks none).
	CatalogueShotAt10 float64
	// CatalogueShotMRR10 is the mean over queries of 1/(1+rank) of the label's catalogue
	// shot among the first 10 results (0 when it is not among them): shot@10 that also
	// counts how high the shot comes, which still tells two projections apart when both put
	// nearly every shot in the top 10.
	CatalogueShotMRR10 float64
	// MillisPerQuery is the mean wall time of one search, embedding included for queries
	// given as images.
	MillisPerQuery float64
	// Outcomes holds every searched query's own figures, in query order, which is what
	// Gain needs to say how sure a difference between two reports is.
	Outcomes []Outcome
}

// Outcome is one query's figures; the Report's are their means.
type Outcome struct {
	// Query indexes the queries given to Evaluate.
	Query int
	// First is the rank (0-based) of the first result with the query's label, -1 if none
	// of the first 10 has it.
	First int
	// AP10 is the query's average precision over the first 10 results, P10 its precision.
	AP10, P10 float64
	// Shot says whether the label's catalogue shot is among the first 10 matching photos.
	Shot bool
	// ShotRank is the rank (0-based) of the first result whose matching photo is the
	// label's catalogue shot, -1 if none of the first 10 is.
	ShotRank int
}

// Evaluate searches with every query and measures the answers. relevant counts, per label,
// the products of the catalogue with that label (for mAP).
func Evaluate(ctx context.Context, c *catalog.Catalog, queries []Query, relevant map[string]int, opt Options) (Report, error) {
	if opt.Label == nil {
		return Report{}, fmt.Errorf("quality: Options.Label is nil")
	}
	so := opt.Search
	so.K = max(so.K, 10)
	rep := Report{RecallAt: map[int]float64{1: 0, 5: 0, 10: 0}}
	var spent time.Duration
	for qi, q := range queries {
		start := time.Now()
		var rs []catalog.Result
		var err error
		if q.Vector != nil {
			rs, err = c.SearchByVector(ctx, q.Vector, so)
		} else {
			rs, err = c.SearchByImage(ctx, q.Image, so)
		}
		spent += time.Since(start)
		if err != nil {
			if ctx.Err() != nil {
				return Report{}, ctx.Err()
			}
			rep.Failed++
			continue
		}
		rep.Queries++
		first := -1
		hits, ap := 0, 0.0
		shotRank := -1
		for i, r := range rs[:min(len(rs), 10)] {
			if opt.Label(r.Product) != q.Label {
				continue
			}
			if first < 0 {
				first = i
			}
			hits++
			ap += float64(hits) / float64(i+1)
			if shotRank < 0 && opt.CatalogueShot != nil && opt.CatalogueShot(r.Product, r.PhotoID) {
				shotRank = i
			}
		}
		o := Outcome{Query: qi, First: first, P10: float64(hits) / 10, Shot: shotRank >= 0, ShotRank: shotRank}
		if n := min(relevant[q.Label], 10); n > 0 {
			o.AP10 = ap / float64(n)
		}
		rep.Outcomes = append(rep.Outcomes, o)
		for k := range rep.RecallAt {
			rep.RecallAt[k] += o.recallAt(k)
		}
		rep.MAP10 += o.AP10
		rep.P10 += o.P10
		if o.Shot {
			rep.CatalogueShotAt10++
			rep.CatalogueShotMRR10 += o.shotReciprocalRank()
		}
	}
	if rep.Queries == 0 {
		return rep, fmt.Errorf("quality: none of the %d queries could be searched", len(queries))
	}
	n := float64(rep.Queries)
	for k := range rep.RecallAt {
		rep.RecallAt[k] /= n
	}
	rep.MAP10 /= n
	rep.P10 /= n
	rep.CatalogueShotAt10 /= n
	rep.CatalogueShotMRR10 /= n
	rep.MillisPerQuery = float64(spent.Microseconds()) / 1000 / float64(len(queries))
	return rep, nil
}
