package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"
)

// progress reports how far a long operation has got. On a terminal it redraws one bar line with
// the rate and ETA; otherwise (a log file, CI, a pipe) it writes a plain line every interval so
// the output stays readable and greppable.
type progress struct {
	mu       sync.Mutex
	w        io.Writer
	label    string
	total    int
	done     int
	extra    string // short counters appended to the line, e.g. "3 failed"
	start    time.Time
	lastDraw time.Time
	interval time.Duration
	terminal bool
	width    int
	now      func() time.Time
	finished bool
}

// newProgress writes to w; terminal decides between the redrawn bar and periodic lines.
func newProgress(w io.Writer, label string, total int, terminal bool) *progress {
	p := &progress{
		w:        w,
		label:    label,
		total:    total,
		terminal: terminal,
		width:    80,
		interval: 5 * time.Second,
		now:      time.Now,
	}
	if terminal {
		p.interval = 100 * time.Millisecond
	}
	p.start = p.now()
	// The first line waits one interval: a short run then prints only its final state.
	p.lastDraw = p.start
	return p
}

// isTerminal reports whether w is an interactive terminal, and its width when it is.
func isTerminal(w io.Writer) (bool, int) {
	f, ok := w.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return false, 0
	}
	width, _, err := term.GetSize(int(f.Fd()))
	if err != nil || width < 40 {
		width = 80
	}
	return true, width
}

// Add records n more finished units and redraws if it is time to.
func (p *progress) Add(n int, extra string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done += n
	p.extra = extra
	if now := p.now(); now.Sub(p.lastDraw) >= p.interval {
		p.draw(now)
	}
}

// Finish draws the final state once and ends the bar's line.
func (p *progress) Finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.finished {
		return
	}
	p.finished = true
	p.draw(p.now())
	if p.terminal {
		fmt.Fprintln(p.w)
	}
}

func (p *progress) draw(now time.Time) {
	p.lastDraw = now
	elapsed := now.Sub(p.start)
	rate := 0.0
	if elapsed > 0 {
		rate = float64(p.done) / elapsed.Seconds()
	}
	eta := "?"
	if p.done >= p.total {
		eta = "0s"
	} else if rate > 0 {
		eta = formatDuration(time.Duration(float64(p.total-p.done) / rate * float64(time.Second)))
	}
	pct := 100.0
	if p.total > 0 {
		pct = 100 * float64(p.done) / float64(p.total)
	}
	stats := fmt.Sprintf("%d/%d %5.1f%% %.1f/s ETA %s", p.done, p.total, pct, rate, eta)
	if p.extra != "" {
		stats += " " + p.extra
	}
	if !p.terminal {
		fmt.Fprintf(p.w, "%s: %s elapsed %s\n", p.label, stats, formatDuration(elapsed))
		return
	}
	barWidth := p.width - len(p.label) - len(stats) - 6
	if barWidth > 40 {
		barWidth = 40
	}
	bar := ""
	if barWidth >= 10 {
		filled := barWidth
		if p.total > 0 {
			filled = barWidth * p.done / p.total
		}
		bar = "[" + strings.Repeat("=", filled) + strings.Repeat(" ", barWidth-filled) + "] "
	}
	// \r returns to the start of the line and \x1b[K clears what a longer earlier line left.
	fmt.Fprintf(p.w, "\r%s %s%s\x1b[K", p.label, bar, stats)
}

// formatDuration rounds for people: 1m05s, 12s, 340ms.
func formatDuration(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	default:
		return d.Round(time.Second).String()
	}
}
