package benchkit

import (
	"fmt"
	"math"
	"strings"

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
// over recall minRecall..1 and saves a PNG at path. Points below minRecall would squash the
// interesting end of the axis, so they are left out and the legend says so.
func WriteRecallQPSPlot(path, title string, minRecall float64, curves []Curve) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "recall@10"
	p.Y.Label.Text = "queries per second, one thread (log scale)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Legend.Top = false
	p.Legend.Left = true
	p.X.Min, p.X.Max = minRecall, 1
	p.Add(plotter.NewGrid())
	var lines []any
	var offChart []string
	for _, c := range curves {
		pts := make(plotter.XYs, 0, len(c.Recall))
		worst := 1.0
		for i := range c.Recall {
			if c.Recall[i] < minRecall {
				worst = min(worst, c.Recall[i])
				continue
			}
			if c.QPS[i] > 0 && !math.IsInf(c.QPS[i], 0) {
				pts = append(pts, plotter.XY{X: c.Recall[i], Y: c.QPS[i]})
			}
		}
		name := c.Name
		if len(pts) < len(c.Recall) {
			name = fmt.Sprintf("%s (%d of %d points off the chart, recall down to %.2f)", c.Name, len(c.Recall)-len(pts), len(c.Recall), worst)
		}
		if len(pts) == 0 {
			// Named in the title, so a library that never reaches the chart is not silently
			// missing from it.
			offChart = append(offChart, fmt.Sprintf("%s (recall <= %.2f)", c.Name, worst))
			continue
		}
		lines = append(lines, name, pts)
	}
	if len(offChart) > 0 {
		p.Title.Text += "\nnot shown, below the recall axis: " + strings.Join(offChart, ", ")
	}
	if err := plotutil.AddLinePoints(p, lines...); err != nil {
		return fmt.Errorf("benchkit: plot %s: %w", path, err)
	}
	if err := p.Save(18*vg.Centimeter, 12*vg.Centimeter, path); err != nil {
		return fmt.Errorf("benchkit: save plot %s: %w", path, err)
	}
	return nil
}
