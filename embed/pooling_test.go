package embed

import (
	"bytes"
	"context"
	"image"
	"math"

	"strings"
	"testing"
)

// featureMap is the pooling of the shared int8 MobileNetV2's last convolutional feature
// map: the uint8 tensor 627_quantized dequantised into the output "featmap".
func featureMap(op string) *Pooling {
	p := &Pooling{Op: op, Output: "featmap",
		Dequantize: &Dequantize{Input: "627_quantized", Scale: "627_scale", ZeroPoint: "627_zero_point"}}
	switch op {
	case PoolGeM:
		p.P = 3
	case PoolRMAC:
		p.Levels, p.Overlap = 3, 0.4
	}
	return p
}

// fourViews are the views: shorter side 256 centre 224, shorter side 320 centre
// 280, each also mirrored.
var fourViews = []View{{256, 224, false}, {256, 224, true}, {320, 280, false}, {320, 280, true}}

func pooledSpec(op string, views []View) Spec {
	s := DefaultSpec()
	s.Pooling = featureMap(op)
	s.Views = views
	return s
}

func TestDerivedModelIsDeterministicAndRefusesMissingTensors(t *testing.T) {
	model := readFile(t, sharedModel(t, DefaultModelFile))
	d := *featureMap(PoolGAP).Dequantize
	a, err := AddDequantizedOutput(model, d, "featmap")
	if err != nil {
		t.Fatal(err)
	}
	b, err := AddDequantizedOutput(bytes.Clone(model), d, "featmap")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) || bytes.Equal(a, model) || len(a) <= len(model) {
		t.Fatalf("derived %d and %d bytes from %d: not deterministic, or unchanged", len(a), len(b), len(model))
	}
	if _, err := AddDequantizedOutput(model, d, "embedding"); err == nil || !strings.Contains(err.Error(), `"embedding"`) {
		t.Errorf("an output name the graph has was accepted: %v", err)
	}
	missing := d
	missing.Scale = "no_such_scale"
	if _, err := AddDequantizedOutput(model, missing, "featmap"); err == nil || !strings.Contains(err.Error(), "no_such_scale") {
		t.Errorf("a missing tensor was accepted: %v", err)
	}
	if _, err := AddDequantizedOutput([]byte("not a model"), d, "featmap"); err == nil {
		t.Error("garbage was accepted as a model")
	}
	dyn, err := WithDynamicInputSize(a, "input", LayoutNCHW)
	if err != nil {
		t.Fatal(err)
	}
	dyn2, _ := WithDynamicInputSize(a, "input", LayoutNCHW)
	if !bytes.Equal(dyn, dyn2) || bytes.Equal(dyn, a) {
		t.Fatal("the dynamic-size edit is not deterministic, or changed nothing")
	}
	if _, err := WithDynamicInputSize(a, "image", LayoutNCHW); err == nil || !strings.Contains(err.Error(), `"image"`) {
		t.Errorf("a missing input was accepted: %v", err)
	}
}

func TestRMACRegions(t *testing.T) {
	for _, tc := range []struct{ h, w, want int }{{7, 7, 15}, {9, 9, 15}, {7, 9, 1 + 2 + 6 + 12}} {
		rs := rmacRegions(tc.h, tc.w, 3, 0.4)
		if len(rs) != tc.want {
			t.Errorf("%dx%d: %d regions %v, want %d", tc.h, tc.w, len(rs), rs, tc.want)
		}
		for _, r := range rs {
			if r.x < 0 || r.y < 0 || r.x+r.w > tc.w || r.y+r.h > tc.h || r.w < 1 {
				t.Errorf("%dx%d: region %+v outside the map", tc.h, tc.w, r)
			}
		}
	}
}

// TestPooledEmbeddings checks on real photos that GAP of the derived feature map is the
// model's own embedding, and that GeM and R-MAC give deterministic unit vectors that differ
// from it.
func TestPooledEmbeddings(t *testing.T) {
	ctx := context.Background()
	files := make([][]byte, 0, 4)
	for _, p := range photos(t, "grocery", 4) {
		files = append(files, readFile(t, p.Path))
	}
	plain := openTest(t, Config{Sessions: 1, Threads: 1})
	base, errs := plain.EmbedBatch(ctx, files)
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, op := range []string{PoolGAP, PoolGeM, PoolRMAC} {
		t.Run(op, func(t *testing.T) {
			s := pooledSpec(op, nil)
			e := openTest(t, Config{Spec: &s, Sessions: 1, Threads: 1})
			if e.Identity() == plain.Identity() {
				t.Fatal("pooling left the identity unchanged")
			}
			vecs, errs := e.EmbedBatch(ctx, files)
			for i, v := range vecs {
				if errs[i] != nil {
					t.Fatal(errs[i])
				}
				if n := cosine(v, v); math.Abs(norm(v)-1) > 1e-5 || n < 0.99999 {
					t.Errorf("photo %d: length %v", i, norm(v))
				}
				again, err := e.Embed(ctx, files[i])
				if err != nil {
					t.Fatal(err)
				}
				if c := cosine(v, again); c < 0.99999 {
					t.Errorf("photo %d: two embeddings score %v", i, c)
				}
				c := cosine(v, base[i])
				t.Logf("photo %d: cosine to the model's embedding %.6f", i, c)
				switch {
				case op == PoolGAP && c < 0.9999:
					t.Errorf("photo %d: GAP of the feature map scores %v against the model's embedding", i, c)
				case op != PoolGAP && c > 0.9999:
					t.Errorf("photo %d: %s scores %v against GAP, no different", i, op, c)
				}
			}
		})
	}
}

func norm(v []float32) float64 {
	var ss float64
	for _, x := range v {
		ss += float64(x) * float64(x)
	}
	return math.Sqrt(ss)
}

// TestViews embeds with the four views (two sizes, so the derived model takes a
// dynamic input size) and checks that Embed, EmbedBatch and Analyze agree, and that a
// mirrored view of a mirrored photo is the plain view of the photo.
func TestViews(t *testing.T) {
	ctx := context.Background()
	files := make([][]byte, 0, 3)
	for _, p := range photos(t, "grocery", 3) {
		files = append(files, readFile(t, p.Path))
	}
	s := pooledSpec(PoolRMAC, fourViews)
	e := openTest(t, Config{Spec: &s, Sessions: 1, Threads: 1})
	vecs, errs := e.EmbedBatch(ctx, files)
	for i := range files {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if math.Abs(norm(vecs[i])-1) > 1e-5 {
			t.Errorf("photo %d: length %v", i, norm(vecs[i]))
		}
		a, err := e.Analyze(ctx, files[i], AnalyzeOptions{Keep: true})
		if err != nil {
			t.Fatal(err)
		}
		kc, _, err := image.DecodeConfig(bytes.NewReader(a.Kept))
		if err != nil {
			t.Fatal(err)
		}
		if short := min(kc.Width, kc.Height); short != 320 {
			t.Errorf("photo %d: the kept photo's shorter side is %d, want the largest view's 320", i, short)
		}
		if c := cosine(a.Vector, vecs[i]); c < 0.99999 {
			t.Errorf("photo %d: Analyze and EmbedBatch score %v", i, c)
		}
	}
	if _, err := e.EmbedTensor(ctx, make([]float32, s.TensorLen())); err == nil {
		t.Error("EmbedTensor accepted one tensor for a multi-view spec")
	}

	// One view that is the default preprocessing, read from the model's own output, is the
	// default embedding.
	oneView := DefaultSpec()
	oneView.Views = []View{{256, 224, false}}
	plain := openTest(t, Config{Sessions: 1, Threads: 1})
	eo := openTest(t, Config{Spec: &oneView, Sessions: 1, Threads: 1})
	want, err := plain.Embed(ctx, files[1])
	if err != nil {
		t.Fatal(err)
	}
	got, err := eo.Embed(ctx, files[1])
	if err != nil {
		t.Fatal(err)
	}
	if c := cosine(got, want); c < 0.99999 {
		t.Errorf("the default preprocessing as a view scores %v against the default", c)
	}

	// The mirror of a photo whose crop is centred exactly (even margins at every view), so
	// that mirroring commutes with the crop.
	src := decodeWith(t, files[0], DecodeOptions{}).Upright()
	b := src.Bounds()
	side := min(b.Dx(), b.Dy()) &^ 63
	img, mir := image.NewRGBA(image.Rect(0, 0, side, side)), image.NewRGBA(image.Rect(0, 0, side, side))
	for y := range side {
		for x := range side {
			c := src.At(b.Min.X+x, b.Min.Y+y)
			img.Set(x, y, c)
			mir.Set(side-1-x, y, c)
		}
	}
	plainView := pooledSpec(PoolRMAC, []View{{320, 280, false}})
	mirrorView := pooledSpec(PoolRMAC, []View{{320, 280, true}})
	ep := openTest(t, Config{Spec: &plainView, Sessions: 1, Threads: 1})
	em := openTest(t, Config{Spec: &mirrorView, Sessions: 1, Threads: 1})
	v1, err := ep.Embed(ctx, encodePNG(t, img))
	if err != nil {
		t.Fatal(err)
	}
	v2, err := em.Embed(ctx, encodePNG(t, mir))
	if err != nil {
		t.Fatal(err)
	}
	c := cosine(v1, v2)
	t.Logf("mirrored view of the mirrored photo against the plain view: cosine %.6f", c)
	if c < 0.999 {
		t.Errorf("the mirrored view of the mirrored photo scores %v against the plain view of the photo", c)
	}
	if ep.Identity() == em.Identity() {
		t.Error("mirroring left the identity unchanged")
	}

	// A view and its mirror together (the mirror flipped from the first view's tensor)
	// make a vector that mirroring the photo does not change.
	both := pooledSpec(PoolRMAC, []View{{320, 280, false}, {320, 280, true}})
	eb := openTest(t, Config{Spec: &both, Sessions: 1, Threads: 1})
	b1, err := eb.Embed(ctx, encodePNG(t, img))
	if err != nil {
		t.Fatal(err)
	}
	b2, err := eb.Embed(ctx, encodePNG(t, mir))
	if err != nil {
		t.Fatal(err)
	}
	if c := cosine(b1, b2); c < 0.999 {
		t.Errorf("a view and its mirror score %v between a photo and its mirror", c)
	}
	if c := cosine(b1, v1); c > 0.9999 {
		t.Errorf("adding the mirrored view changed nothing (cosine %v)", c)
	}
}

func TestPoolingSpecValidate(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(*Spec)
		wantErr string
	}{
		{"gap", func(s *Spec) { s.Pooling = featureMap(PoolGAP) }, ""},
		{"gem", func(s *Spec) { s.Pooling = featureMap(PoolGeM) }, ""},
		{"rmac four views", func(s *Spec) { *s = pooledSpec(PoolRMAC, fourViews) }, ""},
		{"views without pooling", func(s *Spec) { s.Views = fourViews }, ""},
		{"unknown op", func(s *Spec) { s.Pooling = featureMap("max") }, `pooling.op "max"`},
		{"gem p 0", func(s *Spec) { s.Pooling = featureMap(PoolGeM); s.Pooling.P = 0 }, "pooling.p"},
		{"gem p NaN", func(s *Spec) { s.Pooling = featureMap(PoolGeM); s.Pooling.P = float32(math.NaN()) }, "pooling.p"},
		{"p on gap", func(s *Spec) { s.Pooling = featureMap(PoolGAP); s.Pooling.P = 3 }, "for gem only"},
		{"rmac levels 0", func(s *Spec) { s.Pooling = featureMap(PoolRMAC); s.Pooling.Levels = 0 }, "pooling.levels"},
		{"rmac overlap 1", func(s *Spec) { s.Pooling = featureMap(PoolRMAC); s.Pooling.Overlap = 1 }, "pooling.overlap"},
		{"levels on gem", func(s *Spec) { s.Pooling = featureMap(PoolGeM); s.Pooling.Levels = 3 }, "for rmac only"},
		{"no output", func(s *Spec) { s.Pooling = featureMap(PoolGAP); s.Pooling.Output = "" }, "pooling.output"},
		{"half a dequantize", func(s *Spec) { s.Pooling = featureMap(PoolGAP); s.Pooling.Dequantize.Scale = "" }, "pooling.dequantize"},
		{"crop 0", func(s *Spec) { s.Views = []View{{256, 0, false}} }, "views[0].crop"},
		{"view shorter than crop", func(s *Spec) { s.Views = []View{{256, 224, false}, {200, 224, false}} }, "views[1].shorter_side"},
		{"too many views", func(s *Spec) { s.Views = make([]View, maxViews+1) }, "at most 16"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := DefaultSpec()
			tc.edit(&s)
			err := s.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				back, err := ParseSpec(s.CanonicalJSON())
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(back.CanonicalJSON(), s.CanonicalJSON()) {
					t.Fatalf("round trip changed the spec:\n%s\n%s", s.CanonicalJSON(), back.CanonicalJSON())
				}
				if Identity("m.onnx", nil, s) == Identity("m.onnx", nil, DefaultSpec()) {
					t.Fatal("identity unchanged")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want one mentioning %q", err, tc.wantErr)
			}
		})
	}
	if _, err := ParseSpec([]byte(`{"input":"input","output":"embedding","pooling":{"op":"gap","output":"f","typo":1}}`)); err == nil || !strings.Contains(err.Error(), "typo") {
		t.Errorf("an unknown pooling field was accepted: %v", err)
	}
}

// TestDefaultSpecJSONUnchanged pins the default spec's canonical JSON: data directories are
// tied to the identity it feeds, so adding optional fields must not change it.
func TestDefaultSpecJSONUnchanged(t *testing.T) {
	const want = `{"input":"input","output":"embedding","width":224,"height":224,"resize":{"policy":"shorter_side_then_center_crop","shorter_side":256,"kernel":"bilinear"},"channels":"RGB","layout":"NCHW","pixel_scale":1,"mean":[0.485,0.456,0.406],"std":[0.229,0.224,0.225],"dim":1280}`
	if got := string(DefaultSpec().CanonicalJSON()); got != want {
		t.Fatalf("default spec JSON changed:\n got %s\nwant %s", got, want)
	}
}

// FuzzParseSpec feeds arbitrary JSON to ParseSpec: it never panics, and a spec it accepts
// survives a canonical round trip.
func FuzzParseSpec(f *testing.F) {
	f.Add(DefaultSpec().CanonicalJSON())
	s := pooledSpec(PoolRMAC, fourViews)
	f.Add(s.CanonicalJSON())
	s = pooledSpec(PoolGeM, nil)
	f.Add(s.CanonicalJSON())
	f.Add([]byte(`{"pooling":{"op":"gem","p":-1}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseSpec(data)
		if err != nil {
			return
		}
		back, err := ParseSpec(s.CanonicalJSON())
		if err != nil {
			t.Fatalf("accepted %s but not its canonical form: %v", data, err)
		}
		if !bytes.Equal(back.CanonicalJSON(), s.CanonicalJSON()) {
			t.Fatalf("round trip changed %s", s.CanonicalJSON())
		}
	})
}

func TestPoolingCheckModel(t *testing.T) {
	ins := []TensorInfo{{Name: "input", Type: "float32", Shape: []int64{-1, 3, 224, 224}}}
	outs := []TensorInfo{{Name: "embedding", Type: "float32", Shape: []int64{-1, 1280}},
		{Name: "featmap", Type: "float32", Shape: []int64{-1, 1280, -1, -1}}}
	s := pooledSpec(PoolRMAC, []View{{256, 224, false}})
	if err := s.CheckModel(ins, outs); err != nil {
		t.Fatal(err)
	}
	s.Pooling.Output = "conv_last"
	if err := s.CheckModel(ins, outs); err == nil || !strings.Contains(err.Error(), `"conv_last"`) {
		t.Errorf("a missing feature map was accepted: %v", err)
	}
	s = pooledSpec(PoolRMAC, fourViews)
	if err := s.CheckModel(ins, outs); err == nil || !strings.Contains(err.Error(), "views[2]") {
		t.Errorf("a 280 view was accepted by a fixed 224 input: %v", err)
	}
	ins[0].Shape = []int64{-1, 3, -1, -1}
	if err := s.CheckModel(ins, outs); err != nil {
		t.Errorf("a dynamic input refused the views: %v", err)
	}
}

// TestViewsOfTwoSizesInOneBatch holds the batcher so that one photo's four views (two at
// 224, two at 280) are certain to be taken as one batch, and checks that it runs as one
// model run per size and gives the vector an ungated Embed gives.
func TestViewsOfTwoSizesInOneBatch(t *testing.T) {
	ctx := context.Background()
	file := readFile(t, photos(t, "grocery", 1)[0].Path)
	s := pooledSpec(PoolRMAC, fourViews)
	obs := newRecordingObserver()
	e, gate := openTestGated(t, Config{Spec: &s, Sessions: 1, Threads: 1, Observer: obs})
	want, err := e.Embed(ctx, file)
	if err != nil {
		t.Fatal(err)
	}
	obs.reset()
	gate.arm()
	type result struct {
		v   []float32
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := e.Embed(ctx, file)
		done <- result{v, err}
	}()
	obs.waitQueued(len(fourViews))
	gate.open()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if b := obs.batchSizes(); len(b) != 2 || b[0] != 2 || b[1] != 2 {
		t.Errorf("model runs of %v images, want one of 2 per size", b)
	}
	if c := cosine(r.v, want); c < 0.99999 {
		t.Errorf("the batched views score %v against an ungated Embed", c)
	}
}
