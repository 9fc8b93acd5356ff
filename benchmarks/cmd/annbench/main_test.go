package main

import (
	"slices"
	"strings"
	"testing"
)

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantEFs []int
		wantErr bool
	}{
		{"defaults", nil, []int{10, 20, 40, 80, 120, 200, 400, 800}, false},
		{"custom", []string{"-ef", "5, 50"}, []int{5, 50}, false},
		{"zero", []string{"-ef", "0"}, nil, true},
		{"junk", []string{"-ef", "a"}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parseFlags(tt.args)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if !tt.wantErr && !slices.Equal(cfg.efs, tt.wantEFs) {
				t.Errorf("efs = %v, want %v", cfg.efs, tt.wantEFs)
			}
		})
	}
}

func TestTargetLine(t *testing.T) {
	rows := []Row{
		{Library: "lookalike", EF: 10, Recall: 0.9, QPS: 900},
		{Library: "lookalike", EF: 20, Recall: 0.96, QPS: 800},
		{Library: "hnswlib", EF: 10, Recall: 0.95, QPS: 1000},
	}
	got := targetLine(rows)
	for _, want := range []string{"lookalike 800 QPS (ef 20", "hnswlib 1000 QPS (ef 10", "**0.80x**"} {
		if !strings.Contains(got, want) {
			t.Errorf("%q lacks %q", got, want)
		}
	}
	if got := targetLine(rows[:1]); !strings.Contains(got, "not reached") {
		t.Errorf("without hnswlib: %q", got)
	}
}
