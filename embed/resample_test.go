package embed

import (
	"context"
	"fmt"
	"image"
	"image/color"
	"image/color/palette"
	"math"
	"testing"

	"golang.org/x/image/draw"

	"lookalike/internal/dataset"
)

// pattern is a w x h image with smooth gradients, hard edges and fine stripes, so that a
// resampler that reads the wrong pixels, weights or orientation cannot pass by averaging.
func pattern(w, h int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			r := uint8(255 * x / max(1, w-1))
			g := uint8(255 * y / max(1, h-1))
			b := uint8(0)
			if (x/7+y/5)%2 == 0 {
				b = 230
			}
			if x < w/3 && y < h/4 { // a corner block that shows any turn
				r, g, b = 250, 20, 40
			}
			img.SetRGBA(x, y, color.RGBA{r, g, b, 255})
		}
	}
	return img
}

// withAlpha returns img as NRGBA with an alpha ramp from 0 (left) to 255 (right), and the
// same pixels premultiplied as RGBA.
func withAlpha(img *image.RGBA) (*image.NRGBA, *image.RGBA) {
	b := img.Bounds()
	n := image.NewNRGBA(b)
	p := image.NewRGBA(b)
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			c := img.RGBAAt(x, y)
			a := uint8(255 * (x - b.Min.X) / max(1, b.Dx()-1))
			nc := color.NRGBA{c.R, c.G, c.B, a}
			n.SetNRGBA(x, y, nc)
			p.Set(x, y, nc)
		}
	}
	return n, p
}

func toGray(img image.Image) *image.Gray {
	g := image.NewGray(img.Bounds())
	for y := img.Bounds().Min.Y; y < img.Bounds().Max.Y; y++ {
		for x := img.Bounds().Min.X; x < img.Bounds().Max.X; x++ {
			g.Set(x, y, img.At(x, y))
		}
	}
	return g
}

func toPaletted(img image.Image) *image.Paletted {
	p := image.NewPaletted(img.Bounds(), palette.Plan9)
	for y := img.Bounds().Min.Y; y < img.Bounds().Max.Y; y++ {
		for x := img.Bounds().Min.X; x < img.Bounds().Max.X; x++ {
			p.Set(x, y, img.At(x, y))
		}
	}
	return p
}

// tensorsBothWays preprocesses d with the fused resampler and with x/image, failing when
// the fused resampler declines an image it should read.
func tensorsBothWays(t *testing.T, s Spec, d Decoded) (fused, ximage []float32) {
	t.Helper()
	p, err := NewPreprocessor(s)
	if err != nil {
		t.Fatal(err)
	}
	fused = make([]float32, s.TensorLen())
	o := d.Orientation
	if o < 1 {
		o = 1
	}
	if !p.resampleInto(fused, d, o) {
		t.Fatalf("the fused resampler declined a %T", d.Image)
	}
	p.fused = false
	ximage = make([]float32, s.TensorLen())
	if err := p.Into(ximage, d); err != nil {
		t.Fatal(err)
	}
	return fused, ximage
}

// levelDiffs returns the largest and the mean difference between two tensors of spec s, in
// 8-bit pixel levels.
func levelDiffs(s Spec, a, b []float32) (worst, mean float64) {
	n := s.Width * s.Height
	for i := range a {
		k := i / n // NCHW: plane k
		if s.Layout == LayoutNHWC {
			k = i % 3
		}
		perLevel := float64(s.PixelScale) / 255 / float64(s.Std[k])
		d := math.Abs(float64(a[i]-b[i])) / perLevel
		worst = max(worst, d)
		mean += d
	}
	return worst, mean / float64(len(a))
}

// TestFusedResampleMatchesXImageTensors compares the fused resampler's tensor with the
// x/image BiLinear canvas plus normalise, pixel for pixel, over every image type it reads,
// every EXIF orientation, both channel orders and layouts, both resize policies, and
// shrinking as well as enlarging.
func TestFusedResampleMatchesXImageTensors(t *testing.T) {
	photo := pattern(400, 533)
	nrgba, premul := withAlpha(pattern(300, 260))
	ycc := decodeWith(t, encodeJPEG(t, pattern(333, 250), 95), DecodeOptions{PureGo: true})
	if _, ok := ycc.Image.(*image.YCbCr); !ok {
		t.Fatalf("image/jpeg decoded to %T, want *image.YCbCr", ycc.Image)
	}
	bgr := DefaultSpec()
	bgr.Channels = ChannelsBGR
	nhwc := DefaultSpec()
	nhwc.Layout = LayoutNHWC
	bgrNHWC := bgr
	bgrNHWC.Layout = LayoutNHWC
	stretch := DefaultSpec()
	stretch.Resize = Resize{Policy: ResizeStretch, Kernel: KernelBiLinear}
	wide := DefaultSpec()
	wide.Width, wide.Height, wide.Resize.ShorterSide = 200, 160, 230
	wide.PixelScale, wide.Mean, wide.Std = 255, [3]float32{120, 110, 100}, [3]float32{60, 50, 40}

	type tc struct {
		name string
		spec Spec
		d    Decoded
		// tol is the largest difference allowed, in 8-bit levels: none, except where alpha is
		// composited over white per source pixel rather than after resampling.
		tol float64
	}
	jpegRGBA := func(img image.Image, o int) Decoded {
		return Decoded{Image: img, Format: FormatJPEG, Orientation: o}
	}
	pngImg := func(img image.Image) Decoded { return Decoded{Image: img, Format: FormatPNG, Orientation: 1} }
	cases := []tc{
		{"rgba jpeg", DefaultSpec(), jpegRGBA(photo, 1), 0},
		{"rgba jpeg bgr", bgr, jpegRGBA(photo, 1), 0},
		{"rgba jpeg nhwc", nhwc, jpegRGBA(photo, 1), 0},
		{"rgba jpeg bgr nhwc", bgrNHWC, jpegRGBA(photo, 1), 0},
		{"rgba jpeg stretch", stretch, jpegRGBA(photo, 1), 0},
		{"rgba jpeg 200x160 pixel scale 255", wide, jpegRGBA(photo, 1), 0},
		{"rgba enlarged", DefaultSpec(), jpegRGBA(pattern(90, 70), 1), 0},
		{"rgba sub-image", DefaultSpec(), jpegRGBA(photo.SubImage(image.Rect(13, 21, 390, 500)), 1), 0},
		{"rgba png opaque", DefaultSpec(), pngImg(photo), 0},
		{"rgba png premultiplied alpha", DefaultSpec(), pngImg(premul), 1},
		{"nrgba png alpha", DefaultSpec(), pngImg(nrgba), 1},
		{"nrgba png alpha nhwc bgr", bgrNHWC, pngImg(nrgba), 1},
		{"gray", DefaultSpec(), pngImg(toGray(photo)), 0},
		{"paletted", DefaultSpec(), Decoded{Image: toPaletted(photo), Format: FormatGIF, Orientation: 1}, 0},
		{"ycbcr 4:2:0", DefaultSpec(), ycc, 0},
	}
	for o := 2; o <= 8; o++ {
		cases = append(cases,
			tc{fmt.Sprintf("orientation %d", o), DefaultSpec(), jpegRGBA(photo, o), 0},
			tc{fmt.Sprintf("orientation %d nhwc bgr 200x160", o), func() Spec { s := wide; s.Layout, s.Channels = LayoutNHWC, ChannelsBGR; return s }(), jpegRGBA(photo, o), 0},
		)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fused, ximage := tensorsBothWays(t, c.spec, c.d)
			worst, mean := levelDiffs(c.spec, fused, ximage)
			if worst > c.tol+1e-3 || mean > 0.01 {
				t.Errorf("fused vs x/image: largest difference %.3f levels (allowed %.0f), mean %.5f (allowed 0.01)", worst, c.tol, mean)
			}
		})
	}
}

// TestFusedResampleRGBAMatchesXImage checks the kept photo's resampler against x/image's
// BiLinear into an RGBA canvas: the same levels for the opaque types it reads, one level at
// most where alpha is composited per source pixel, and false for the types it does not read.
func TestFusedResampleRGBAMatchesXImage(t *testing.T) {
	photo := pattern(400, 533)
	_, premul := withAlpha(pattern(300, 260))
	ycc := decodeWith(t, encodeJPEG(t, pattern(333, 250), 95), DecodeOptions{PureGo: true}).Image
	tests := []struct {
		name   string
		src    image.Image
		opaque bool
		w, h   int
		tol    int
	}{
		{"rgba to 256 short side", photo, true, 256, 341, 0},
		{"rgba sub-image", photo.SubImage(image.Rect(13, 21, 390, 500)), true, 200, 250, 0},
		{"rgba slightly enlarged", pattern(250, 240), true, 256, 246, 0},
		{"rgba not known opaque", photo, false, 256, 341, 0},
		{"rgba premultiplied alpha", premul, false, 190, 170, 1},
		{"ycbcr 4:2:0", ycc, true, 256, 192, 0},
		{"gray", toGray(photo), true, 256, 341, 0},
		{"paletted", toPaletted(photo), true, 256, 341, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := NewPreprocessor(DefaultSpec())
			if err != nil {
				t.Fatal(err)
			}
			got := image.NewRGBA(image.Rect(0, 0, tc.w, tc.h))
			if !p.resampleRGBA(got, tc.src, tc.opaque) {
				t.Fatalf("declined a %T", tc.src)
			}
			want := image.NewRGBA(got.Rect)
			op := draw.Src
			if !isOpaque(tc.src) {
				fillWhite(want)
				op = draw.Over
			}
			draw.BiLinear.Scale(want, want.Rect, tc.src, tc.src.Bounds(), op, nil)
			worst := 0
			for i := range got.Pix {
				worst = max(worst, int(got.Pix[i])-int(want.Pix[i]), int(want.Pix[i])-int(got.Pix[i]))
			}
			if worst > tc.tol {
				t.Errorf("largest difference from x/image %d levels, allowed %d", worst, tc.tol)
			}
		})
	}
	p, err := NewPreprocessor(DefaultSpec())
	if err != nil {
		t.Fatal(err)
	}
	if p.resampleRGBA(image.NewRGBA(image.Rect(0, 0, 10, 10)), image.NewCMYK(image.Rect(0, 0, 20, 20)), true) {
		t.Error("resampled a CMYK image it cannot read")
	}
}

// TestFusedResampleFallsBack checks that image types the fused resampler does not read go
// the x/image way through Into, and that Into refuses a short tensor.
func TestFusedResampleFallsBack(t *testing.T) {
	src := pattern(120, 90)
	cmyk := image.NewCMYK(src.Rect)
	rgba64 := image.NewRGBA64(src.Rect)
	for y := 0; y < 90; y++ {
		for x := 0; x < 120; x++ {
			cmyk.Set(x, y, src.At(x, y))
			rgba64.Set(x, y, src.At(x, y))
		}
	}
	s := DefaultSpec()
	for _, img := range []image.Image{cmyk, rgba64} {
		t.Run(fmt.Sprintf("%T", img), func(t *testing.T) {
			p, err := NewPreprocessor(s)
			if err != nil {
				t.Fatal(err)
			}
			d := Decoded{Image: img, Format: FormatPNG, Orientation: 1}
			if p.resampleInto(make([]float32, s.TensorLen()), d, 1) {
				t.Fatalf("the fused resampler claims %T", img)
			}
			got := make([]float32, s.TensorLen())
			if err := p.Into(got, d); err != nil {
				t.Fatal(err)
			}
			_, want := tensorsBothWays(t, s, Decoded{Image: src, Format: FormatJPEG, Orientation: 1})
			if worst, _ := levelDiffs(s, got, want); worst > 1.6 {
				t.Errorf("fallback differs from the same picture as RGBA by %.2f levels", worst)
			}
		})
	}
	p, err := NewPreprocessor(s)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Into(make([]float32, s.TensorLen()-1), Decoded{Image: src, Format: FormatJPEG}); err == nil {
		t.Error("Into accepted a tensor one value short")
	}
}

// TestFusedResampleEmbeddingsMatchXImage embeds real photos of every shared collection with
// the fused resampler and with x/image's BiLinear, through the real model: each pair must
// have cosine >= 0.999. For scale, it logs how far libjpeg-turbo's and image/jpeg's pixels
// (the same identity) move the same vectors.
func TestFusedResampleEmbeddingsMatchXImage(t *testing.T) {
	e := openTest(t, Config{})
	var files [][]byte
	var names []string
	for _, c := range []struct {
		name string
		n    int
	}{{dataset.PhotosClothing, 16}, {dataset.PhotosABO, 6}, {dataset.PhotosGrocery, 10}} {
		for _, p := range photos(t, c.name, c.n) {
			files = append(files, readFile(t, p.Path))
			names = append(names, p.Path)
		}
	}
	ctx := context.Background()
	fusedP, err := NewPreprocessor(e.Spec())
	if err != nil {
		t.Fatal(err)
	}
	ximageP, err := NewPreprocessor(e.Spec())
	if err != nil {
		t.Fatal(err)
	}
	ximageP.fused = false
	embedWith := func(p *Preprocessor, d Decoded) []float32 {
		tensor := make([]float32, e.Spec().TensorLen())
		if err := p.Into(tensor, d); err != nil {
			t.Fatal(err)
		}
		v, err := e.EmbedTensor(ctx, tensor)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	worst, worstDecoder := 1.0, 1.0
	var sum float64
	for i, f := range files {
		d := decodeWith(t, f, e.DecodeOptions())
		fv, xv := embedWith(fusedP, d), embedWith(ximageP, d)
		c := cosine(fv, xv)
		sum += c
		worst = min(worst, c)
		if c < 0.999 {
			t.Errorf("%s: fused and x/image embeddings have cosine %.5f, want >= 0.999", names[i], c)
		}
		goOpt := e.DecodeOptions()
		goOpt.PureGo = true
		worstDecoder = min(worstDecoder, cosine(xv, embedWith(ximageP, decodeWith(t, f, goOpt))))
	}
	t.Logf("fused vs x/image over %d photos: mean cosine %.6f, lowest %.6f; libjpeg-turbo vs image/jpeg pixels (x/image both): lowest %.6f",
		len(files), sum/float64(len(files)), worst, worstDecoder)
	// The Spec keeps the kernel name "bilinear" because the resampler changes the vectors
	// less than the decoder choice the identity already leaves open.
	if worst < worstDecoder {
		t.Errorf("the fused resampler moves vectors more (lowest cosine %.6f) than the decoder choice does (%.6f)", worst, worstDecoder)
	}
}

// TestTriangleWeights checks the filter's taps against the triangle's definition: output i
// weighs source sample c by max(0, 1-|c-centre|/width), centre = (i+0.5)*src/dst-0.5 and
// width = max(1, src/dst), over the samples inside the source, normalised (by inv) to sum
// to one.
func TestTriangleWeights(t *testing.T) {
	for _, c := range []struct{ src, dst int }{{350, 224}, {533, 224}, {224, 224}, {90, 224}, {1, 224}, {1000, 3}, {7, 1}, {2, 3}} {
		a := triangleWeights(c.src, c.dst)
		scale := float64(c.src) / float64(c.dst)
		width := max(1, scale)
		for i := range c.dst {
			centre := (float64(i)+0.5)*scale - 0.5
			want := make([]float64, c.src)
			var total float64
			for s := range want {
				want[s] = max(0, 1-math.Abs(float64(s)-centre)/width)
				total += want[s]
			}
			got := make([]float64, c.src)
			for k, w := range a.w[a.off[i]:a.off[i+1]] {
				s := int(a.start[i]) + k
				if s < 0 || s >= c.src {
					t.Fatalf("%d->%d: output %d reads sample %d outside [0,%d)", c.src, c.dst, i, s, c.src)
				}
				got[s] = w * a.inv[i]
			}
			for s := range want {
				if d := math.Abs(got[s] - want[s]/total); d > 1e-6 {
					t.Fatalf("%d->%d: output %d weighs sample %d by %v, want %v", c.src, c.dst, i, s, got[s], want[s]/total)
				}
			}
		}
	}
}
