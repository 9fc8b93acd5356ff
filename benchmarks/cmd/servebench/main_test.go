package main

import (
	"math"
	"slices"
	"testing"
)

func TestPerturbedCatalogue(t *testing.T) {
	photos := [][]float32{{1, 0, 0, 0}, {0, 0.6, 0.8, 0}}
	a := perturbedCatalogue(photos, 7, 0.01, 3)
	b := perturbedCatalogue(photos, 7, 0.01, 3)
	if len(a) != 7 {
		t.Fatalf("got %d vectors", len(a))
	}
	for i, v := range a {
		var ss, dot float64
		src := photos[i%len(photos)]
		for j := range v {
			ss += float64(v[j]) * float64(v[j])
			dot += float64(v[j]) * float64(src[j])
		}
		if math.Abs(ss-1) > 1e-5 {
			t.Errorf("vector %d has squared norm %v, want 1", i, ss)
		}
		if dot < 0.95 {
			t.Errorf("vector %d drifted from its photo: cosine %v", i, dot)
		}
		if !slices.Equal(v, b[i]) {
			t.Errorf("vector %d differs between runs with the same seed", i)
		}
	}
	if slices.Equal(a[0], a[2]) {
		t.Error("two ids of the same photo got identical vectors")
	}
}

func TestInts(t *testing.T) {
	tests := []struct {
		in      string
		want    []int
		wantErr bool
	}{
		{"1,4,16", []int{1, 4, 16}, false},
		{" 0 ", []int{0}, false},
		{"1,x", nil, true},
		{"-1", nil, true},
	}
	for _, tt := range tests {
		got, err := ints(tt.in)
		if (err != nil) != tt.wantErr || !slices.Equal(got, tt.want) {
			t.Errorf("ints(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}
