package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// fakeClock advances only when told to, so rate and ETA are predictable.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func TestProgressPlainLines(t *testing.T) {
	var out bytes.Buffer
	clock := &fakeClock{t: time.Unix(1000, 0)}
	p := newProgress(&out, "ingest", 100, false)
	p.now = clock.now
	p.start = clock.t
	p.lastDraw = clock.t

	p.Add(10, "") // within the interval: nothing printed yet
	if out.Len() != 0 {
		t.Fatalf("printed before the interval passed: %q", out.String())
	}
	clock.t = clock.t.Add(5 * time.Second)
	p.Add(10, "(failed 1)") // 20 done in 5s: 4/s, 80 left: 20s
	line := out.String()
	for _, want := range []string{"ingest: 20/100", "20.0%", "4.0/s", "ETA 20s", "(failed 1)"} {
		if !strings.Contains(line, want) {
			t.Errorf("line %q lacks %q", line, want)
		}
	}
	if strings.Contains(line, "\r") {
		t.Errorf("plain output contains a carriage return: %q", line)
	}
	clock.t = clock.t.Add(time.Second)
	p.Add(80, "")
	p.Finish()
	p.Finish() // idempotent
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if last := lines[len(lines)-1]; !strings.Contains(last, "100/100") || !strings.Contains(last, "ETA 0s") {
		t.Errorf("final line %q", last)
	}
	if len(lines) != 2 { // the 100/100 update came within the interval, so only Finish drew it
		t.Errorf("got %d lines, want 2: %q", len(lines), out.String())
	}
}

func TestProgressTerminalBar(t *testing.T) {
	var out bytes.Buffer
	clock := &fakeClock{t: time.Unix(0, 0)}
	p := newProgress(&out, "ingest", 4, true)
	p.now = clock.now
	p.start = clock.t
	for range 4 {
		clock.t = clock.t.Add(time.Second)
		p.Add(1, "")
	}
	p.Finish()
	s := out.String()
	if !strings.HasPrefix(s, "\ringest [") || !strings.HasSuffix(s, "\n") {
		t.Errorf("bar output %q", s)
	}
	if !strings.Contains(s, "[========================================] 4/4") {
		t.Errorf("full bar missing: %q", s)
	}
	if !strings.Contains(s, "1.0/s") {
		t.Errorf("rate missing: %q", s)
	}
}
