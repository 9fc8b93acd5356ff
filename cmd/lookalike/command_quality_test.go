package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"lookalike/adapt"
)

// The quality report on the shared grocery photos, with the real model: the first release's
// figures (every photo its own product) and the street-to-shop gap it shows (the catalogue
// shot is almost never among the first 10).
func TestQualityOnGrocery(t *testing.T) {
	if testing.Short() {
		t.Skip("embeds the grocery photos")
	}
	code, stdout, stderr := runCLI(t, nil, "quality", "--dataset", "grocery", "--json")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var q qualityJSON
	mustJSON(t, stdout, &q)
	t.Logf("grocery: R@1 %.3f R@10 %.3f mAP@10 %.3f P@10 %.3f catalogue shot@10 %.3f", q.RecallAt["1"], q.RecallAt["10"], q.MAP10, q.P10, deref(q.CatalogueShotAt10))
	if q.Products != 895 || q.Photos != 895 || q.Searched != 100 || q.Failed != 0 {
		t.Fatalf("report covers %d products, %d photos, %d queries (%d failed)", q.Products, q.Photos, q.Searched, q.Failed)
	}
	if q.RecallAt["10"] < 0.8 || q.RecallAt["1"] < 0.35 || q.RecallAt["1"] > q.RecallAt["5"] || q.RecallAt["5"] > q.RecallAt["10"] {
		t.Errorf("recall %v", q.RecallAt)
	}
	if q.CatalogueShotAt10 == nil {
		t.Error("the grocery catalogue marks catalogue shots, but the report has no figure for them")
	}
}

func deref(f *float64) float64 {
	if f == nil {
		return -1
	}
	return *f
}

// A projection file that is damaged, or fitted on another model's vectors, is refused before
// anything is embedded.
func TestQualityRefusesAForeignProjection(t *testing.T) {
	if testing.Short() {
		t.Skip("loads the model")
	}
	var samples []adapt.Sample
	for i := range 12 {
		v := make([]float32, 8)
		v[i%4], v[4+i%3] = 1, 0.5
		samples = append(samples, adapt.Sample{Vector: v, Group: fmt.Sprint(i % 4)})
	}
	p, err := adapt.Train(samples, adapt.Options{Dims: 2, Shrink: 0.5})
	if err != nil {
		t.Fatal(err)
	}
	small, _ := p.MarshalBinary()
	dir := t.TempDir()
	for _, tc := range []struct {
		name  string
		bytes []byte
		want  string
	}{
		{"damaged", append(small[:len(small)-1:len(small)-1], 0), "not a valid projection file"},
		{"another model's", small, "was fitted on 8-d vectors"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name)
			if err := os.WriteFile(path, tc.bytes, 0o644); err != nil {
				t.Fatal(err)
			}
			code, _, stderr := runCLI(t, nil, "quality", "--dataset", "grocery", "--projection", path)
			if code != exitFailure || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, stderr, exitFailure, tc.want)
			}
		})
	}
}
