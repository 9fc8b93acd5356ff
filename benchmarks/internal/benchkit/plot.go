package benchkit

import (
	"fmt"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// Curve is one library's recall-vs-QPS trade-off, one point per efSearch.
type Curve struct {
	Name   string
	Recall []float64
	QPS    []float64
}

// WriteRecallQPSPlot draws the curves (QPS on a log axis, higher and further right is better)
// and saves a PNG at path.
func WriteRecallQPSPlot(path, title string, curves []Curve) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "recall@10"
	p.Y.Label.Text = "queries per second, one thread (log scale)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Legend.Top = false
	p.Legend.Left = true
	p.Add(plotter.NewGrid())
	var lines []any
	for _, c := range curves {
		pts := make(plotter.XYs, 0, len(c.Recall))
		for i := range c.Recall {
			if c.QPS[i] > 0 && !math.IsInf(c.QPS[i], 0) {
				pts = append(pts, plotter.XY{X: c.Recall[i], Y: c.QPS[i]})
			}
		}
		if len(pts) == 0 {
			continue
		}
		lines = append(lines, c.Name, pts)
	}
	if err := plotutil.AddLinePoints(p, lines...); err != nil {
		return fmt.Errorf("benchkit: plot %s: %w", path, err)
	}
	if err := p.Save(18*vg.Centimeter, 12*vg.Centimeter, path); err != nil {
		return fmt.Errorf("benchkit: save plot %s: %w", path, err)
	}
	return nil
}
