package catalog

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/draw"
	"image/jpeg"
	"maps"
	"slices"
	"strings"
	"testing"

	"lookalike/embed"
	"lookalike/index"
)

// fixedCrop is a cropPhoto with the given windows and no pixels.
func fixedCrop(ph photoEntry, w embed.WindowHashes) *cropPhoto {
	p := &cropPhoto{ph: ph, read: func() []byte { return nil }, w: w}
	p.once.Do(func() {})
	return p
}

func TestCropSignalsBothWays(t *testing.T) {
	a := photoEntry{phash: 0xff00, phashMir: 0x00ff, hasPHash: true}
	b := photoEntry{phash: 0xf0f0, phashMir: 0x0f0f, hasPHash: true}
	noHash := photoEntry{}
	tests := []struct {
		name   string
		a      photoEntry
		wa     embed.WindowHashes
		b      photoEntry
		wb     embed.WindowHashes
		want   int
		reason string
	}{
		{"no windows", a, nil, b, nil, -1, "nothing to compare"},
		{"a's windows, b's hash", a, embed.WindowHashes{0xf0f1}, b, nil, 1, "b is a crop of a"},
		{"a's windows, b's mirror hash", a, embed.WindowHashes{0x0f0f}, b, nil, 0, "b is a mirrored crop of a"},
		{"b's windows, a's hash", a, nil, b, embed.WindowHashes{0xff01}, 1, "a is a crop of b"},
		{"the nearer way", a, embed.WindowHashes{0xf0f7}, b, embed.WindowHashes{0xff01}, 1, "the smaller distance"},
		{"windows but no hash on the other side", noHash, embed.WindowHashes{0xf0f0}, b, nil, 0, "b's hash against a's windows"},
		{"no hash to compare with the windows", a, nil, noHash, embed.WindowHashes{0xff00}, 0, "a's hash against noHash's windows"},
		{"only windows of a photo without a hash partner", a, embed.WindowHashes{0}, noHash, nil, -1, "no hash of b"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Pixels are never read: none of these is within the bound to align.
			if got := cropSignals(fixedCrop(tc.a, tc.wa), fixedCrop(tc.b, tc.wb), -1); got.hamming != tc.want || got.correlation != 0 {
				t.Errorf("cropSignals = %+v, want distance %d (%s) and no correlation", got, tc.want, tc.reason)
			}
		})
	}
}

// TestChooseCopyRuleTakesTheCropRule checks the rule search on made pairs: copies whose
// hash moved (crops) are found only by a crop clause, which is chosen with the loosest
// bounds that call no negative; without crop distances the search is the old one.
func TestChooseCopyRuleTakesTheCropRule(t *testing.T) {
	var pairs []labelled
	for i := range 600 {
		// Re-encodes: hash within 2 bits, cosine 0.98.
		pairs = append(pairs, labelled{sig: Signals{Cosine: 0.98, Hamming: i % 3, CropHamming: -1}, positive: true, kind: "jpeg"})
	}
	for i := range 400 {
		// Crops: hash far, a window within 0..10 bits, cosine 0.90..0.95, correlation 0.996+.
		pairs = append(pairs, labelled{sig: Signals{Cosine: 0.90 + 0.05*float32(i%10)/10, Hamming: 20 + i%10, CropHamming: i % 11,
			CropCorrelation: 0.996 + 0.003*float32(i%4)/4}, positive: true, kind: "crop"})
	}
	for i := range 2000 {
		// Other products: hash far, windows 4..16 bits away, correlation up to 0.97.
		pairs = append(pairs, labelled{sig: Signals{Cosine: 0.85 + 0.1*float32(i%10)/10, Hamming: 20 + i%10, CropHamming: 4 + i%13,
			CropCorrelation: 0.5 + 0.47*float32(i%7)/6}, positive: false})
	}

	p, points, bound := choosePolicy(pairs, 0.99)
	if bound != "wilson-95" {
		t.Errorf("bound %s, want wilson-95", bound)
	}
	if p.CropHamming != embed.CropSearchBits || p.CropCosine > 0.90 || p.CropCorrelation != 0.995 {
		t.Errorf("chose crop<=%d & cosine>=%.2f & correlation>=%.3f, want crop<=%d, a cosine floor at most 0.90 and the strictest correlation that finds every crop, 0.995",
			p.CropHamming, p.CropCosine, p.CropCorrelation, embed.CropSearchBits)
	}
	pt := measure(pairs, copyRuleName(p), func(s Signals) bool { return p.Tier(s) >= TierCopy })
	if pt.Recall != 1 || pt.FalsePositives != 0 {
		t.Errorf("%s: recall %.3f, %d false positives; want every copy and no negative", pt.Rule, pt.Recall, pt.FalsePositives)
	}
	if !slices.ContainsFunc(points, func(pt CalibrationPoint) bool { return strings.HasPrefix(pt.Rule, "crop alone") }) {
		t.Errorf("no crop-alone point among %d", len(points))
	}

	// Without crop distances (a catalogue without kept photos), no crop rule is chosen.
	for i := range pairs {
		pairs[i].sig.CropHamming = -1
	}
	if p, _, _ := choosePolicy(pairs, 0.99); p.CropHamming != 0 {
		t.Errorf("chose a crop rule (crop<=%d) with no crop distances", p.CropHamming)
	}
}

// cropOf cuts the frac of each side of a JPEG at the offset (fx, fy) fractions of the
// slack, optionally mirrored, and encodes it as a seller's software would.
func cropOf(t *testing.T, data []byte, frac, fx, fy float64, mirror bool) []byte {
	t.Helper()
	img, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	b := img.Bounds()
	cw, ch := int(float64(b.Dx())*frac), int(float64(b.Dy())*frac)
	x0, y0 := b.Min.X+int(float64(b.Dx()-cw)*fx), b.Min.Y+int(float64(b.Dy()-ch)*fy)
	out := image.NewRGBA(image.Rect(0, 0, cw, ch))
	draw.Draw(out, out.Rect, img, image.Pt(x0, y0), draw.Src)
	if mirror {
		for y := range ch {
			row := out.Pix[y*out.Stride : y*out.Stride+4*cw]
			for l, r := 0, cw-1; l < r; l, r = l+1, r-1 {
				var px [4]byte
				copy(px[:], row[4*l:4*l+4])
				copy(row[4*l:4*l+4], row[4*r:4*r+4])
				copy(row[4*r:4*r+4], px[:])
			}
		}
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, out, &jpeg.Options{Quality: 88}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestCropCopiesOnGroceryPhotos runs the crop rule end to end on grocery photos, kept
// photos on, real model and bbolt: crops of catalogue photos (80-90% of each side, one
// mirrored) are copies in a duplicate check, at ingest and in a duplicate scan, where the
// hash rule alone calls them look-alikes; no two different products are copies; and with
// the crop rule off nothing computes the crop distance.
func TestCropCopiesOnGroceryPhotos(t *testing.T) {
	ctx := context.Background()
	g := groceryChoice(t, 1)
	var writes []Write
	for i, label := range g.labels {
		if i%2 == 1 {
			continue // every other product: enough pairs, half the embedding
		}
		p := g.photos[label][len(g.photos[label])-1] // an in-store photo
		writes = append(writes, Write{ID: label, Category: g.kind[label], Photos: []PhotoWrite{{ID: p.name, Image: p.image}}})
	}
	c, err := Open(ctx, Config{DataDir: t.TempDir(), Embedder: cachedEmbedder(t), KeepPhotos: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	upsertAll(t, c, writes)
	policy, err := c.Policy(ctx)
	if err != nil {
		t.Fatal(err)
	}
	crops := []struct {
		of           string
		frac, fx, fy float64
		mirror       bool
		id           string
		image        []byte
	}{
		{of: writes[0].ID, frac: 0.80, fx: 0, fy: 0},
		{of: writes[1].ID, frac: 0.85, fx: 1, fy: 0.5},
		{of: writes[2].ID, frac: 0.90, fx: 0.5, fy: 1},
		{of: writes[3].ID, frac: 0.82, fx: 1, fy: 1},
		{of: writes[4].ID, frac: 0.85, fx: 0.2, fy: 0.7, mirror: true},
	}
	far := 0
	for i := range crops {
		cr := &crops[i]
		cr.id = fmt.Sprintf("crop-%d", i)
		cr.image = cropOf(t, writes[slices.IndexFunc(writes, func(w Write) bool { return w.ID == cr.of })].Photos[0].Image, cr.frac, cr.fx, cr.fy, cr.mirror)
		d, err := c.CheckDuplicate(ctx, cr.image, 0, Filter{})
		if err != nil {
			t.Fatal(err)
		}
		s := d.Signals
		t.Logf("%s (%.0f%% of %s, mirrored %v): %v of %v, cosine %.4f, hamming %d, crop %d, correlation %.4f",
			cr.id, 100*cr.frac, cr.of, cr.mirror, d.Tier, d.BestMatch.Product.ID, s.Cosine, s.Hamming, s.CropHamming, s.CropCorrelation)
		if d.BestMatch == nil || d.BestMatch.Product.ID != cr.of || d.Tier != TierCopy {
			t.Errorf("%s: check says %v of %+v, want a copy of %s", cr.id, d.Tier, d.BestMatch, cr.of)
			continue
		}
		if s.Hamming > policy.CopyHamming && s.Cosine < policy.CopyCosineAlone {
			far++ // only the crop rule makes it a copy
			if s.CropHamming < 0 || s.CropHamming > policy.CropHamming || s.CropCorrelation < policy.CropCorrelation {
				t.Errorf("%s: a copy with hash %d bits away, crop distance %d, correlation %.4f", cr.id, s.Hamming, s.CropHamming, s.CropCorrelation)
			}
		}
	}
	if far == 0 {
		t.Error("every crop's whole-photo hash stayed close: the test no longer exercises the crop rule")
	}

	// At ingest, against the catalogue before the write.
	for _, cr := range crops {
		res, err := c.Upsert(ctx, Write{ID: cr.id, Photos: []PhotoWrite{{ID: cr.id, Image: cr.image}}, CheckDuplicates: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Duplicates) != 1 || res.Duplicates[0].ProductID != cr.of || res.Duplicates[0].Tier != TierCopy {
			t.Errorf("%s at ingest: duplicates %+v, want a copy of %s", cr.id, res.Duplicates, cr.of)
		}
	}

	scan := func() map[productPair]Edge {
		t.Helper()
		edges := map[productPair]Edge{}
		if err := c.FindDuplicates(ctx, DuplicateOptions{}, func(cl Cluster) error {
			for _, e := range cl.Edges {
				edges[productPair{e.A, e.B}] = e
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return edges
	}
	edges := scan()
	// Again, the windows from the catalogue's cache: the same pairs, the same signals.
	if len(c.windows.at) == 0 {
		t.Error("the scan left no windows in the catalogue's cache")
	}
	if again := scan(); !maps.Equal(again, edges) {
		t.Errorf("a second scan, windows cached, found %d edges against %d, or other signals", len(again), len(edges))
	}
	for _, cr := range crops {
		pr := productPair{min(cr.id, cr.of), max(cr.id, cr.of)}
		if e, ok := edges[pr]; !ok || e.Tier != TierCopy {
			t.Errorf("scan: %s and %s are %+v, want a copy", cr.id, cr.of, e)
		}
	}
	for pr, e := range edges {
		if !strings.HasPrefix(pr.lo, "crop-") && !strings.HasPrefix(pr.hi, "crop-") && e.Tier >= TierCopy {
			t.Errorf("scan: %s and %s are different products but %v (cosine %.4f, hamming %d, crop %d, correlation %.4f)",
				pr.lo, pr.hi, e.Tier, e.Signals.Cosine, e.Signals.Hamming, e.Signals.CropHamming, e.Signals.CropCorrelation)
		}
	}

	// With the crop rule off, the distance is never computed.
	off := policy
	off.CropHamming, off.Source = 0, "no crop rule"
	if err := c.SetPolicy(ctx, off); err != nil {
		t.Fatal(err)
	}
	for pr, e := range scan() {
		if e.Signals.CropHamming != -1 || e.Signals.CropCorrelation != 0 {
			t.Errorf("crop rule off: %s ~ %s has crop signals %d, %.4f", pr.lo, pr.hi, e.Signals.CropHamming, e.Signals.CropCorrelation)
		}
	}
	for _, cr := range crops {
		d, err := c.CheckDuplicate(ctx, cr.image, 0, Filter{})
		if err != nil {
			t.Fatal(err)
		}
		if d.Signals.CropHamming != -1 {
			t.Errorf("crop rule off: check of %s computed crop distance %d", cr.id, d.Signals.CropHamming)
		}
	}
}

func TestWindowCacheForgetsTheOldest(t *testing.T) {
	c := newWindowCache(2)
	k := func(i int) windowKey { return windowKey{index.Key(i), fmt.Sprint("sha", i)} }
	c.put(k(1), embed.WindowHashes{1})
	c.put(k(2), embed.WindowHashes{2})
	c.put(k(1), embed.WindowHashes{9}) // known: kept as it was
	c.put(k(3), embed.WindowHashes{3}) // full: 1 goes
	tests := []struct {
		k    windowKey
		want embed.WindowHashes
	}{
		{k(1), nil},
		{k(2), embed.WindowHashes{2}},
		{k(3), embed.WindowHashes{3}},
		{windowKey{2, "another photo under key 2"}, nil},
	}
	for _, tc := range tests {
		got, ok := c.get(tc.k)
		if ok != (tc.want != nil) || !slices.Equal(got, tc.want) {
			t.Errorf("get(%v) = %v, %v; want %v", tc.k, got, ok, tc.want)
		}
	}
}
