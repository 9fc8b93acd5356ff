package quality

import (
	"fmt"
	"math/rand/v2"
	"slices"
)

// gainFigure is one figure Gain measures: its name as reports print it, and its value for one
// query.
type gainFigure struct {
	name string
	of   func(Outcome) float64
}

// gainFigures lists them (a function, so no package-level table can be changed).
func gainFigures() []gainFigure {
	return []gainFigure{
		{"R@1", func(o Outcome) float64 { return o.recallAt(1) }},
		{"R@10", func(o Outcome) float64 { return o.recallAt(10) }},
		{"mAP@10", func(o Outcome) float64 { return o.AP10 }},
		{"P@10", func(o Outcome) float64 { return o.P10 }},
		{"shot@10", func(o Outcome) float64 {
			if o.Shot {
				return 1
			}
			return 0
		}},
		{"shot MRR@10", Outcome.shotReciprocalRank},
	}
}

// shotReciprocalRank is 1/(1+ShotRank), 0 when the shot is not in the first 10.
func (o Outcome) shotReciprocalRank() float64 {
	if o.ShotRank < 0 {
		return 0
	}
	return 1 / float64(o.ShotRank+1)
}

func (o Outcome) recallAt(k int) float64 {
	if o.First >= 0 && o.First < k {
		return 1
	}
	return 0
}

// Interval is a difference of one figure between two reports and how sure it is.
type Interval struct {
	// Figure names it ("R@1", "R@10", "mAP@10", "P@10", "shot@10", "shot MRR@10").
	Figure string
	// Diff is after minus before over the queries both searched.
	Diff float64
	// Low and High bound the central 95% of Diff over bootstrap resamples of those queries.
	Low, High float64
}

// Gain compares two reports on the same queries (a query either failed is left out) with
// a paired bootstrap: the queries are resampled with replacement rounds times, the same
// resample for both reports, so what varies is which queries happen to be asked, not the
// pairing. A 95% interval that excludes 0 says the difference is not the luck of this
// sample of queries; one that straddles it says the queries cannot tell. The seed makes it
// reproducible.
func Gain(before, after Report, rounds int, seed uint64) ([]Interval, error) {
	if rounds < 100 {
		return nil, fmt.Errorf("quality: %d bootstrap rounds, want at least 100", rounds)
	}
	byQuery := make(map[int]Outcome, len(before.Outcomes))
	for _, o := range before.Outcomes {
		byQuery[o.Query] = o
	}
	var pairs [][2]Outcome
	for _, o := range after.Outcomes {
		if b, ok := byQuery[o.Query]; ok {
			pairs = append(pairs, [2]Outcome{b, o})
		}
	}
	if len(pairs) == 0 {
		return nil, fmt.Errorf("quality: the reports share no searched query")
	}
	n := len(pairs)
	figures := gainFigures()
	out := make([]Interval, len(figures))
	diffs := make([][]float64, len(figures)) // per figure, per pair
	for f, g := range figures {
		out[f].Figure = g.name
		diffs[f] = make([]float64, n)
		for i, p := range pairs {
			diffs[f][i] = g.of(p[1]) - g.of(p[0])
			out[f].Diff += diffs[f][i]
		}
		out[f].Diff /= float64(n)
	}
	rng := rand.New(rand.NewPCG(seed, 0x9a1))
	means := make([][]float64, len(figures))
	for f := range means {
		means[f] = make([]float64, rounds)
	}
	for r := range rounds {
		sums := make([]float64, len(figures))
		for range n {
			i := rng.IntN(n)
			for f := range sums {
				sums[f] += diffs[f][i]
			}
		}
		for f, s := range sums {
			means[f][r] = s / float64(n)
		}
	}
	for f := range out {
		slices.Sort(means[f])
		out[f].Low = means[f][int(0.025*float64(rounds))]
		out[f].High = means[f][int(0.975*float64(rounds))-1]
	}
	return out, nil
}
