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
		{Library: "lookalike-int8", EF: 10, Recall: 0.89, QPS: 1900},
		{Library: "lookalike-int8", EF: 20, Recall: 0.951, QPS: 1500},
		{Library: "hnswlib", EF: 10, Recall: 0.95, QPS: 1000},
	}
	got := targetLine(rows)
	for _, want := range []string{
		"lookalike: 800 QPS (ef 20", "hnswlib 1000 QPS (ef 10", "**0.80x**",
		"lookalike-int8: 1500 QPS (ef 20", "**1.50x**",
		"lookalike-int8 against float32 lookalike at equal ef: at most 0.0100 lower (ef 10), **NOT within**",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("%q lacks %q", got, want)
		}
	}
	if got := targetLine(rows[:1]); !strings.Contains(got, "not reached") {
		t.Errorf("without hnswlib: %q", got)
	}
	mem := memoryLine([]Row{{Library: "lookalike-int8-source", BytesPerVector: 1536}}, 1280)
	if !strings.Contains(mem, "**0.30x** the 5120 bytes") {
		t.Errorf("memory line %q", mem)
	}
}
