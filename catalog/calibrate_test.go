package catalog

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"lookalike/internal/dataset"
)

// groceryProducts is the grocery catalogue as products: one per grocery product, its
// catalogue shot and its in-store photos (iconic and train), at most 64 photos each.
func groceryProducts(t testing.TB) []Write {
	t.Helper()
	photos, err := dataset.LoadPhotos(dataset.PhotosGrocery)
	if err != nil {
		t.Fatal(err)
	}
	at := map[string]int{}
	var writes []Write
	for _, p := range photos {
		base := filepath.Base(p.Path)
		if !strings.HasPrefix(base, "iconic__") && !strings.HasPrefix(base, "train__") {
			continue
		}
		b, err := os.ReadFile(p.Path)
		if err != nil {
			t.Fatal(err)
		}
		i, ok := at[p.Label]
		if !ok {
			i = len(writes)
			at[p.Label] = i
			writes = append(writes, Write{ID: p.Label, Category: p.Fields["coarse_label"], Title: p.Label})
		}
		if len(writes[i].Photos) < 64 {
			writes[i].Photos = append(writes[i].Photos, PhotoWrite{ID: strings.TrimSuffix(base, ".jpg"), Image: b, ImageURL: p.Path})
		}
	}
	sort.Slice(writes, func(i, j int) bool { return writes[i].ID < writes[j].ID })
	return writes
}

// groceryKeptDir is a data directory holding the grocery catalogue with kept photos, built
// once per test binary and copied by each test that changes it.
var groceryKeptDir = sync.OnceValues(func() (string, error) { return "", nil })

func openGroceryKept(t *testing.T) *Catalog {
	t.Helper()
	ctx := context.Background()
	c, err := Open(ctx, Config{DataDir: t.TempDir(), Embedder: testEmbedder(t), KeepPhotos: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	writes := groceryProducts(t)
	for i := 0; i < len(writes); i += 4 {
		for _, r := range c.UpsertBatch(ctx, writes[i:min(i+4, len(writes))]) {
			if r.Err != nil {
				t.Fatal(r.Err)
			}
		}
	}
	return c
}

func TestCalibrateOnGrocery(t *testing.T) {
	if testing.Short() {
		t.Skip("embeds the grocery catalogue and its synthetic copies")
	}
	c := openGroceryKept(t)
	ctx := context.Background()
	rep, err := c.Calibrate(ctx, CalibrateOptions{Sample: 160, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("photos %d, positives %d, negatives %d", rep.Photos, rep.Positives, rep.Negatives)
	for _, p := range rep.Points {
		t.Logf("fit  %-60s P %.4f (low %.4f) R %.4f tp %d fp %d", p.Rule, p.Precision, p.PrecisionLow, p.Recall, p.TruePositives, p.FalsePositives)
	}
	for _, p := range []CalibrationPoint{rep.HeldOutCopy, rep.HeldOutLookAlike} {
		t.Logf("held %-60s P %.4f (low %.4f) R %.4f tp %d fp %d", p.Rule, p.Precision, p.PrecisionLow, p.Recall, p.TruePositives, p.FalsePositives)
	}
	t.Logf("recommended %+v", rep.Recommended)
	var kinds []string
	for k, r := range rep.CopyRecallByTransform {
		kinds = append(kinds, fmt.Sprintf("%s %.2f", k, r))
	}
	sort.Strings(kinds)
	t.Logf("held-out copy recall by transform: %s", strings.Join(kinds, ", "))
}
