package catalog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"lookalike/internal/dataset"
	"lookalike/store"
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

// openGroceryKept opens dir with the grocery catalogue written into it, photos kept.
func openGroceryKept(t *testing.T, dir string) *Catalog {
	t.Helper()
	ctx := context.Background()
	c, err := Open(ctx, Config{DataDir: dir, Embedder: cachedEmbedder(t), KeepPhotos: true})
	if err != nil {
		t.Fatal(err)
	}
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

// TestDuplicateTiersDecisionsAndCalibration runs the duplicate policy on the grocery
// catalogue (one product per grocery product, its catalogue shot and in-store photos, kept
// photos on): every tier on real photos, no two different grocery products called copies
// by the default policy or by the calibrated one, decisions honoured across a restart and a
// backup/restore, and calibration's recommended thresholds checked on the copies of the half
// of its pairs it did not choose them on.
func TestDuplicateTiersDecisionsAndCalibration(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("embeds the grocery catalogue and its synthetic copies")
	}
	ctx := context.Background()
	dir := t.TempDir()
	c := openGroceryKept(t, dir)
	defer func() { c.Close() }()
	grocery := groceryProducts(t)

	scan := func(opt DuplicateOptions) map[productPair]Edge {
		t.Helper()
		edges := map[productPair]Edge{}
		err := c.FindDuplicates(ctx, opt, func(cl Cluster) error {
			for _, e := range cl.Edges {
				edges[productPair{e.A, e.B}] = e
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return edges
	}

	t.Run("no two grocery products are copies", func(t *testing.T) {
		edges := scan(DuplicateOptions{})
		lookAlikes := 0
		for p, e := range edges {
			if e.Tier >= TierCopy {
				t.Errorf("%s and %s are different products but tier %v (cosine %.4f, hamming %d, crop %d, crop correlation %.4f)",
					p.lo, p.hi, e.Tier, e.Signals.Cosine, e.Signals.Hamming, e.Signals.CropHamming, e.Signals.CropCorrelation)
			}
			lookAlikes++
		}
		t.Logf("%d look-alike pairs among %d grocery products at the default policy", lookAlikes, len(grocery))
	})

	t.Run("the two Arla medium fat milks are look-alikes, not copies", func(t *testing.T) {
		a, b := "Arla-Lactose-Medium-Fat-Milk", "Arla-Medium-Fat-Milk"
		pa, err := c.Get(ctx, a, true)
		if err != nil {
			t.Fatal(err)
		}
		pb, err := c.Get(ctx, b, true)
		if err != nil {
			t.Fatal(err)
		}
		// Their catalogue shots, the pair the first release's review page mixed up.
		var va, vb []float32
		for _, ph := range pa.Photos {
			if strings.HasPrefix(ph.ID, "iconic__") {
				va = ph.Vector
			}
		}
		for _, ph := range pb.Photos {
			if strings.HasPrefix(ph.ID, "iconic__") {
				vb = ph.Vector
			}
		}
		iconicEntry := func(id string) photoEntry {
			e, ok := c.lookup(id)
			if !ok {
				t.Fatalf("no product %s", id)
			}
			for _, ph := range e.photos {
				if strings.HasPrefix(ph.id, "iconic__") {
					return ph
				}
			}
			t.Fatalf("no catalogue shot of %s", id)
			return photoEntry{}
		}
		ea, eb := iconicEntry(a), iconicEntry(b)
		sig := signalsOf(ea, eb, dot(va, vb))
		p, err := c.Policy(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// One carton's windows come within a few bits of the other's hash: only the
		// colours, aligned, tell them apart.
		c.newCropWindows().withCrop(ctx, p, ea, eb, sig).set(&sig)
		t.Logf("catalogue shots: cosine %.4f, hamming %d, crop %d, crop correlation %.4f -> %v", sig.Cosine, sig.Hamming, sig.CropHamming, sig.CropCorrelation, p.Tier(sig))
		if got := p.Tier(sig); got != TierLookAlike || sig.CropHamming < 0 {
			t.Errorf("the two Arla cartons are %v (crop distance %d), want look-alike with the crop signals computed", got, sig.CropHamming)
		}
	})

	iconic := func(label string) []byte {
		t.Helper()
		for _, w := range grocery {
			if w.ID == label {
				for _, ph := range w.Photos {
					if strings.HasPrefix(ph.ID, "iconic__") {
						return ph.Image
					}
				}
			}
		}
		t.Fatalf("no catalogue shot of %s", label)
		return nil
	}
	t.Run("exact and copy tiers on re-uploads", func(t *testing.T) {
		oatly := iconic("Oatly-Oat-Milk")
		recompressed := reencode(t, oatly, 60)
		tests := []struct {
			name  string
			image []byte
			want  Tier
		}{
			{"the same bytes", oatly, TierExact},
			{"re-compressed at quality 60", recompressed, TierCopy},
			{"an 85% crop", cropOf(t, oatly, 0.85, 0.3, 0.8, false), TierCopy},
			{"an 80% crop, mirrored", cropOf(t, oatly, 0.80, 1, 0, true), TierCopy},
		}
		for _, tc := range tests {
			d, err := c.CheckDuplicate(ctx, tc.image, 0, Filter{})
			if err != nil {
				t.Fatal(err)
			}
			if d.BestMatch == nil || d.BestMatch.Product.ID != "Oatly-Oat-Milk" || d.Tier != tc.want || !d.IsDuplicate {
				t.Errorf("%s: check says %+v", tc.name, d)
			}
			t.Logf("%s: %v, signals %+v", tc.name, d.Tier, d.Signals)
		}
		// As products of their own, both pair with the original in FindDuplicates.
		// Checked as they are written (ingest --check-duplicates), against the catalogue as it
		// was before each write.
		for _, tc := range []struct {
			w    Write
			want Tier
		}{
			{Write{ID: "reupload-exact", Photos: []PhotoWrite{{Image: oatly}}, CheckDuplicates: true}, TierExact},
			{Write{ID: "reupload-copy", Photos: []PhotoWrite{{Image: recompressed}}, CheckDuplicates: true}, TierCopy},
		} {
			res, err := c.Upsert(ctx, tc.w)
			if err != nil {
				t.Fatal(err)
			}
			if d := res.Duplicates; len(d) != 1 || d[0].Tier < tc.want || (d[0].ProductID != "Oatly-Oat-Milk" && !strings.HasPrefix(d[0].ProductID, "reupload")) {
				t.Errorf("%s: duplicates %+v, want one of tier %v or stronger", tc.w.ID, d, tc.want)
			}
		}
		if res, err := c.Upsert(ctx, Write{ID: "street", Photos: []PhotoWrite{{Image: iconicStreet(t)}}, CheckDuplicates: true}); err != nil || len(res.Duplicates) != 0 {
			t.Errorf("a street photo is reported as a copy: %+v, %v", res.Duplicates, err)
		}
		if _, err := c.Delete(ctx, "street"); err != nil {
			t.Fatal(err)
		}
		edges := scan(DuplicateOptions{MinTier: TierCopy})
		if e := edges[productPair{"Oatly-Oat-Milk", "reupload-exact"}]; e.Tier != TierExact || !e.Signals.SameBytes {
			t.Errorf("exact re-upload: %+v", e)
		}
		if e := edges[productPair{"Oatly-Oat-Milk", "reupload-copy"}]; e.Tier != TierCopy || e.Signals.Hamming < 0 {
			t.Errorf("re-compressed re-upload: %+v", e)
		}
		for p, e := range edges {
			if e.Tier < TierCopy {
				t.Errorf("MinTier copy let a %v pair through: %v", e.Tier, p)
			}
		}
	})

	// A look-alike pair to decide on: the strongest one between two grocery products.
	var pair productPair
	best := float32(-1)
	for p, e := range scan(DuplicateOptions{}) {
		if !strings.HasPrefix(p.hi, "reupload") && e.Tier == TierLookAlike && e.Score > best {
			pair, best = p, e.Score
		}
	}
	if best < 0 {
		t.Fatal("no look-alike pair among the grocery products to decide on")
	}
	t.Run("decisions are honoured", func(t *testing.T) {
		if _, err := c.Resolve(ctx, Resolution{IDs: []string{pair.lo, pair.hi}, Verdict: Different, By: "ann", Note: "two products"}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Resolve(ctx, Resolution{IDs: []string{"Oatly-Oat-Milk", "reupload-exact", "reupload-copy"}, Verdict: Same, Keep: "Oatly-Oat-Milk", By: "ann"}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Resolve(ctx, Resolution{IDs: []string{"Oatly-Oat-Milk", "nope"}, Verdict: Same}); !errors.Is(err, ErrNotFound) {
			t.Errorf("resolving an unknown product: %v", err)
		}
	})
	honoured := func(t *testing.T, c *Catalog, when string) {
		t.Helper()
		err := c.FindDuplicates(ctx, DuplicateOptions{}, func(cl Cluster) error {
			for _, e := range cl.Edges {
				if (productPair{e.A, e.B}) == pair {
					t.Errorf("%s: the pair decided different joined a cluster: %+v", when, e)
				}
			}
			if slices.Contains(cl.IDs, "reupload-exact") {
				if !cl.Resolved || len(cl.IDs) != 3 {
					t.Errorf("%s: the resolved cluster is %v, resolved %v", when, cl.IDs, cl.Resolved)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		ds, err := c.Decisions(ctx)
		if err != nil || len(ds) != 4 {
			t.Errorf("%s: %d decisions (%v), want 4", when, len(ds), err)
		}
	}
	honoured(t, c, "at once")
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c = openGroceryKeptAgain(t, dir)
	honoured(t, c, "after a restart")
	backup := filepath.Join(t.TempDir(), "backup.db")
	f, err := os.Create(backup)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Backup(ctx, f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	restored := t.TempDir()
	if err := store.Restore(backup, filepath.Join(restored, StoreFileName), store.RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	r := openGroceryKeptAgain(t, restored)
	honoured(t, r, "after backup and restore")
	r.Close()

	t.Run("calibration reaches its target on the held-apart half", func(t *testing.T) {
		rep, err := c.Calibrate(ctx, CalibrateOptions{Sample: 160, Seed: 1, Apply: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("photos %d, positives %d, negatives %d, decision pairs %d, bound %s", rep.Photos, rep.Positives, rep.Negatives, rep.DecisionPairs, rep.Bound)
		for _, p := range rep.Points {
			t.Logf("fit  %-60s P %.4f (low %.4f) R %.4f tp %d fp %d", p.Rule, p.Precision, p.PrecisionLow, p.Recall, p.TruePositives, p.FalsePositives)
		}
		for _, p := range []CalibrationPoint{rep.HeldOutCopy, rep.HeldOutLookAlike, rep.HeldOutEstimate} {
			t.Logf("held %-60s P %.4f (low %.4f) R %.4f tp %d fp %d", p.Rule, p.Precision, p.PrecisionLow, p.Recall, p.TruePositives, p.FalsePositives)
		}
		var kinds []string
		for k, r := range rep.CopyRecallByTransform {
			kinds = append(kinds, fmt.Sprintf("%s %.2f", k, r))
		}
		sort.Strings(kinds)
		t.Logf("held-out copy recall by kind: %s", strings.Join(kinds, ", "))
		if rep.DecisionPairs != 4 {
			t.Errorf("%d decision pairs, want the 4 recorded", rep.DecisionPairs)
		}
		// The choice requires the 95% lower bound of precision to reach 0.99 on the fitting
		// half; on pairs it never saw, precision may fall a little below the point target.
		// The crop issue's target: recall 0.95 overall and for crops, which the global hash
		// and embedding miss and the crop rule finds.
		if p := rep.HeldOutCopy; p.Precision < 0.985 || p.Recall < 0.95 {
			t.Errorf("held-out copy rule: precision %.4f, recall %.4f", p.Precision, p.Recall)
		}
		if r := rep.CopyRecallByTransform["crop"]; r < 0.95 {
			t.Errorf("held-out recall of crops %.3f, want >= 0.95", r)
		}
		if rep.Recommended.CropHamming == 0 {
			t.Errorf("the recommended policy has no crop rule: %+v", rep.Recommended)
		}
		got, err := c.Policy(ctx)
		if err != nil || got != rep.Recommended || !rep.Applied {
			t.Errorf("applied policy %+v (%v), want %+v", got, err, rep.Recommended)
		}
		// The estimate is the same choice made against half of the negatives, measured on
		// copies and negatives it never saw.
		if p := rep.HeldOutEstimate; p.Precision < 0.985 || p.Recall < 0.95 || !strings.HasPrefix(p.Rule, "fitting half alone: ") {
			t.Errorf("held-out estimate %s: precision %.4f, recall %.4f", p.Rule, p.Precision, p.Recall)
		}
		if p := rep.HeldOutCopy; p.FalsePositives != 0 {
			t.Errorf("the recommended rule calls %d of the negatives it was chosen against copies", p.FalsePositives)
		}
		// The duplicates issue's target, under the calibrated policy as under the default
		// one (above): no two different grocery products are copies.
		for p, e := range scan(DuplicateOptions{MinTier: TierCopy}) {
			if !strings.HasPrefix(p.hi, "reupload") && !strings.HasPrefix(p.lo, "reupload") {
				t.Errorf("the calibrated policy calls %s and %s %v (cosine %.4f, hamming %d, crop %d, crop correlation %.4f)",
					p.lo, p.hi, e.Tier, e.Signals.Cosine, e.Signals.Hamming, e.Signals.CropHamming, e.Signals.CropCorrelation)
			}
		}
	})
}

// iconicStreet is a street photo of a grocery product (a new photo, never a copy).
func iconicStreet(t *testing.T) []byte {
	t.Helper()
	photos, err := dataset.LoadPhotos(dataset.PhotosGrocery)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range photos {
		if strings.HasPrefix(filepath.Base(p.Path), "val__") {
			b, err := os.ReadFile(p.Path)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
	t.Fatal("no street photo")
	return nil
}

// openGroceryKeptAgain reopens a data directory openGroceryKept filled.
func openGroceryKeptAgain(t *testing.T, dir string) *Catalog {
	t.Helper()
	c, err := Open(context.Background(), Config{DataDir: dir, Embedder: cachedEmbedder(t), KeepPhotos: true})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// reencode decodes a JPEG and encodes it again at quality q.
func reencode(t *testing.T, data []byte, q int) []byte {
	t.Helper()
	img, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: q}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
