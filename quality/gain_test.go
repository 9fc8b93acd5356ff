package quality

import (
	"slices"
	"strings"
	"testing"
)

// reportOf makes a report whose query i found its label at rank first[i] (-1: not at all).
func reportOf(first ...int) Report {
	var r Report
	for i, f := range first {
		o := Outcome{Query: i, First: f}
		if f >= 0 {
			o.AP10, o.P10, o.Shot = 1/float64(f+1), 0.1, f < 3
		}
		r.Outcomes = append(r.Outcomes, o)
	}
	return r
}

func repeat(v []int, n int) []int {
	var out []int
	for range n {
		out = append(out, v...)
	}
	return out
}

func TestGain(t *testing.T) {
	better := reportOf(repeat([]int{0, 0, 3, 0}, 25)...) // R@1 0.75
	worse := reportOf(repeat([]int{1, 0, -1, 2}, 25)...) // R@1 0.25
	// As many queries gained as lost, so the mean moves by 0 with a wide interval.
	swapped := reportOf(repeat([]int{-1, 0, 0, 1, 0}, 20)...)
	swappedBack := reportOf(repeat([]int{0, -1, 0, 1, 0}, 20)...)
	for _, tc := range []struct {
		name          string
		before, after Report
		// sign of the R@1 interval: 1 above 0, -1 below, 0 straddling it (or exactly 0).
		sign int
		diff float64
	}{
		{"the same report", better, better, 0, 0},
		{"better on many queries", worse, better, 1, 0.5},
		{"worse on many queries", better, worse, -1, -0.5},
		{"as many better as worse", swapped, swappedBack, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := Gain(tc.before, tc.after, 1000, 1)
			if err != nil {
				t.Fatal(err)
			}
			again, _ := Gain(tc.before, tc.after, 1000, 1)
			if !slices.Equal(g, again) {
				t.Fatal("one seed gave two answers")
			}
			r1 := g[0]
			if r1.Figure != "R@1" || r1.Low > r1.Diff || r1.Diff > r1.High {
				t.Fatalf("R@1 interval %+v does not hold its difference", r1)
			}
			if r1.Diff != tc.diff {
				t.Errorf("R@1 difference %v, want %v", r1.Diff, tc.diff)
			}
			switch {
			case tc.sign > 0 && !(r1.Low > 0):
				t.Errorf("R@1 %+v: a gain on many queries is not sure", r1)
			case tc.sign < 0 && !(r1.High < 0):
				t.Errorf("R@1 %+v: a loss on many queries is not sure", r1)
			case tc.sign == 0 && tc.before.Outcomes[0] != tc.after.Outcomes[0] && !(r1.Low < 0 && r1.High > 0):
				t.Errorf("R@1 %+v: an even trade looks sure", r1)
			case tc.sign == 0 && tc.before.Outcomes[0] == tc.after.Outcomes[0] && (r1.Low != 0 || r1.High != 0):
				t.Errorf("R@1 %+v: identical reports differ", r1)
			}
		})
	}
}

func TestGainRefuses(t *testing.T) {
	a := reportOf(0, 1)
	b := Report{Outcomes: []Outcome{{Query: 7, First: 0}}}
	for _, tc := range []struct {
		name   string
		after  Report
		rounds int
		want   string
	}{
		{"few rounds", a, 10, "bootstrap rounds"},
		{"no shared query", b, 1000, "share no"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Gain(a, tc.after, tc.rounds, 1); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}
