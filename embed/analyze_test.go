package embed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/color/palette"
	"image/jpeg"
	"image/png"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"

	"golang.org/x/image/draw"
)

// analyzeOK runs Analyze, failing the test on an error.
func analyzeOK(t testing.TB, e *Embedder, data []byte, opt AnalyzeOptions) Analysis {
	t.Helper()
	a, err := e.Analyze(context.Background(), data, opt)
	if err != nil {
		t.Fatalf("Analyze: %v", err)
	}
	return a
}

// mixedPhotos is n shared photos from each of the collections named.
func mixedPhotos(t testing.TB, n int, collections ...string) [][]byte {
	t.Helper()
	var out [][]byte
	for _, c := range collections {
		for _, p := range photos(t, c, n) {
			out = append(out, readFile(t, p.Path))
		}
	}
	return out
}

// TestAnalyzeMatchesEmbed checks that Analyze goes through Embed's decode and inference: the
// same vector, bit for bit, with or without Keep, for JPEG (libjpeg-turbo, scaled or not, and
// turned by EXIF), PNG and BMP; and that its hash, made from the stored pixels with the grid
// turned, equals PHash of the decoded image turned upright.
func TestAnalyzeMatchesEmbed(t *testing.T) {
	e := openTest(t, Config{})
	clothing := readFile(t, photos(t, "clothing", 1)[0].Path)
	abo := readFile(t, photos(t, "abo", 1)[0].Path)
	grocery := readFile(t, photos(t, "grocery", 1)[0].Path)
	img, err := jpeg.Decode(bytes.NewReader(clothing))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		data []byte
	}{
		{"clothing jpeg", clothing},
		{"abo jpeg (DCT-scaled)", abo},
		{"grocery jpeg", grocery},
		{"jpeg exif 6", withEXIFOrientation(clothing, 6, false)},
		{"jpeg exif 3", withEXIFOrientation(abo, 3, true)},
		{"jpeg exif 7", withEXIFOrientation(grocery, 7, false)},
		{"png", encodePNG(t, img)},
		{"bmp", encodeBMP(t, img)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want, err := e.Embed(context.Background(), tc.data)
			if err != nil {
				t.Fatal(err)
			}
			for _, keep := range []bool{false, true} {
				a := analyzeOK(t, e, tc.data, AnalyzeOptions{Keep: keep})
				if !slices.Equal(a.Vector, want) {
					t.Errorf("keep %v: Analyze's vector differs from Embed's (cosine %.7f)", keep, cosine(a.Vector, want))
				}
				if (a.Kept != nil) != keep {
					t.Errorf("keep %v: kept %d bytes", keep, len(a.Kept))
				}
				up := decodeWith(t, tc.data, e.DecodeOptions()).Upright()
				if h := PHash(up); a.PHash != h {
					t.Errorf("keep %v: PHash %016x, want PHash of the upright image %016x", keep, a.PHash, h)
				}
			}
		})
	}
}

// TestAnalyzeBadInputs checks that Analyze refuses what Embed refuses, with the same errors.
func TestAnalyzeBadInputs(t *testing.T) {
	e := openTest(t, Config{})
	photo := readFile(t, photos(t, "clothing", 1)[0].Path)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name string
		ctx  context.Context
		data []byte
		want error
	}{
		{"empty", context.Background(), nil, ErrUnsupportedFormat},
		{"text", context.Background(), []byte("<html>not an image</html>"), ErrUnsupportedFormat},
		{"truncated jpeg", context.Background(), photo[:len(photo)/3], ErrCorrupt},
		{"png header claiming 30000x30000", context.Background(), pngHeaderClaiming(30000, 30000), ErrTooLarge},
		{"bmp without pixels", context.Background(), bmpHeaderClaiming(4000, 4000, 24, 0), ErrCorrupt},
		{"over the byte limit", context.Background(), make([]byte, DefaultLimits().MaxBytes+1), ErrTooLarge},
		{"cancelled", cancelled, photo, context.Canceled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, embedErr := e.Embed(tc.ctx, tc.data)
			for _, keep := range []bool{false, true} {
				a, err := e.Analyze(tc.ctx, tc.data, AnalyzeOptions{Keep: keep})
				if !errors.Is(err, tc.want) {
					t.Fatalf("keep %v: err = %v, want %v", keep, err, tc.want)
				}
				if embedErr == nil || err.Error() != embedErr.Error() {
					t.Errorf("keep %v: Analyze says %q, Embed %v", keep, err, embedErr)
				}
				if a.Vector != nil || a.Kept != nil || a.PHash != 0 {
					t.Errorf("keep %v: a result came back with the error", keep)
				}
			}
		})
	}
	closed := openTest(t, Config{})
	if err := closed.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := closed.Analyze(context.Background(), photo, AnalyzeOptions{Keep: true}); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: %v, want ErrClosed", err)
	}
}

// reencodeJPEG decodes a JPEG with the standard library and encodes it again.
func reencodeJPEG(t testing.TB, data []byte, quality int) []byte {
	t.Helper()
	img, err := jpeg.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	return encodeJPEG(t, img, quality)
}

// halfSize decodes a JPEG and returns it at half its width and height, as a PNG.
func halfSize(t testing.TB, data []byte) []byte {
	t.Helper()
	img, err := jpeg.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	b := img.Bounds()
	half := image.NewRGBA(image.Rect(0, 0, b.Dx()/2, b.Dy()/2))
	draw.BiLinear.Scale(half, half.Rect, img, b, draw.Src, nil)
	return encodePNG(t, half)
}

// TestPHashCopiesAndDifferentPhotos measures the hash on shared photos: copies of a photo
// (JPEG re-encodes at quality 60 to 85, a half-size copy) stay within a few bits of it, and
// different photos are far apart. Different clothing photos on the same studio background
// can hash close (the datasets README warns of it), so the different-photo bound is on the
// distribution, not the closest pair.
func TestPHashCopiesAndDifferentPhotos(t *testing.T) {
	e := openTest(t, Config{})
	files := mixedPhotos(t, 20, "clothing", "grocery")
	hashes := make([]uint64, len(files))
	for i, f := range files {
		hashes[i] = analyzeOK(t, e, f, AnalyzeOptions{}).PHash
	}

	copies := []struct {
		name string
		make func(t testing.TB, data []byte) []byte
	}{
		{"jpeg q60", func(t testing.TB, d []byte) []byte { return reencodeJPEG(t, d, 60) }},
		{"jpeg q75", func(t testing.TB, d []byte) []byte { return reencodeJPEG(t, d, 75) }},
		{"jpeg q85", func(t testing.TB, d []byte) []byte { return reencodeJPEG(t, d, 85) }},
		{"half size", halfSize},
	}
	const maxCopy = 8
	worstCopy := 0
	for _, c := range copies {
		var dist []int
		for i, f := range files {
			d := Hamming(hashes[i], analyzeOK(t, e, c.make(t, f), AnalyzeOptions{}).PHash)
			dist = append(dist, d)
			if d > maxCopy {
				t.Errorf("%s of photo %d: %d bits from the original", c.name, i, d)
			}
		}
		t.Logf("%-9s: Hamming to the original %s", c.name, summarize(dist))
		worstCopy = max(worstCopy, slices.Max(dist))
	}

	var diff []int
	for i := range hashes {
		for j := i + 1; j < len(hashes); j++ {
			diff = append(diff, Hamming(hashes[i], hashes[j]))
		}
	}
	sort.Ints(diff)
	closer := 0
	for _, d := range diff {
		if d <= worstCopy {
			closer++
		}
	}
	t.Logf("different photos (%d, %d pairs): Hamming %s; %d pairs within the worst copy's %d bits",
		len(hashes), len(diff), summarize(diff), closer, worstCopy)
	if p5 := diff[len(diff)/20]; p5 <= 2*worstCopy {
		t.Errorf("5th percentile of different-photo distances %d, not clearly above copies' worst %d", p5, worstCopy)
	}
	if med := diff[len(diff)/2]; med < 24 {
		t.Errorf("median distance between different photos %d bits, want >= 24", med)
	}
}

// summarize renders a distance distribution: min, 5th percentile, median, mean and max.
func summarize(d []int) string {
	s := slices.Clone(d)
	sort.Ints(s)
	sum := 0
	for _, v := range s {
		sum += v
	}
	return fmt.Sprintf("min %d, p5 %d, median %d, mean %.1f, max %d",
		s[0], s[len(s)/20], s[len(s)/2], float64(sum)/float64(len(s)), s[len(s)-1])
}

// TestAnalyzeKept checks the kept photo on shared photos: it decodes, it is the photo as
// shown, its shorter side is the spec's 256 (or the source's, when that is shorter), and
// the model sees it nearly as it saw the original: cosine >= 0.97 on average between the
// vector of the kept JPEG and the original's.
func TestAnalyzeKept(t *testing.T) {
	e := openTest(t, Config{})
	files := mixedPhotos(t, 14, "grocery", "clothing", "abo")
	var sizes []int
	var sum float64
	worst := 1.0
	for i, f := range files {
		a := analyzeOK(t, e, f, AnalyzeOptions{Keep: true})
		kept, err := jpeg.Decode(bytes.NewReader(a.Kept))
		if err != nil {
			t.Fatalf("photo %d: kept photo does not decode: %v", i, err)
		}
		_, w, h, err := DecodeConfig(f, Limits{})
		if err != nil {
			t.Fatal(err)
		}
		kb := kept.Bounds()
		if want := min(256, w, h); min(kb.Dx(), kb.Dy()) != want {
			t.Errorf("photo %d (%dx%d): kept %v, want the shorter side %d", i, w, h, kb.Size(), want)
		}
		if r, kr := float64(w)/float64(h), float64(kb.Dx())/float64(kb.Dy()); r/kr > 1.01 || kr/r > 1.01 {
			t.Errorf("photo %d (%dx%d): kept %v changes the aspect ratio", i, w, h, kb.Size())
		}
		v, err := e.Embed(context.Background(), a.Kept)
		if err != nil {
			t.Fatal(err)
		}
		c := cosine(v, a.Vector)
		sum, worst = sum+c, min(worst, c)
		sizes = append(sizes, len(a.Kept))
	}
	mean := sum / float64(len(files))
	t.Logf("kept photos of %d shared photos: %s bytes; re-embedded, cosine to the original mean %.4f, lowest %.4f",
		len(files), summarize(sizes), mean, worst)
	if mean < 0.97 {
		t.Errorf("kept photos score %.4f on average against their originals, want >= 0.97", mean)
	}
}

// TestAnalyzeKeptSize checks the kept photo's size for each policy, for photos larger and
// smaller than the model's input (never enlarged) and turned by EXIF (the shown size).
func TestAnalyzeKeptSize(t *testing.T) {
	shorter := openTest(t, Config{})
	stretchSpec := DefaultSpec()
	stretchSpec.Resize = Resize{Policy: ResizeStretch, Kernel: KernelBiLinear}
	stretch := openTest(t, Config{Spec: &stretchSpec})
	photo := readFile(t, photos(t, "clothing", 1)[0].Path) // 400x533
	img, err := jpeg.Decode(bytes.NewReader(photo))
	if err != nil {
		t.Fatal(err)
	}
	small := func(w, h int) []byte {
		m := image.NewRGBA(image.Rect(0, 0, w, h))
		draw.BiLinear.Scale(m, m.Rect, img, img.Bounds(), draw.Src, nil)
		return encodePNG(t, m)
	}
	wide := small(600, 300)
	tests := []struct {
		name         string
		e            *Embedder
		data         []byte
		wantW, wantH int
	}{
		{"shorter side: portrait", shorter, photo, 256, 341},
		{"shorter side: landscape", shorter, wide, 512, 256},
		{"shorter side: exif 6 shows it turned", shorter, withEXIFOrientation(photo, 6, false), 341, 256},
		{"shorter side: tiny is not enlarged", shorter, small(120, 90), 120, 90},
		{"shorter side: 256 already", shorter, small(256, 300), 256, 300},
		{"stretch: large", stretch, photo, 224, 224},
		{"stretch: tiny is not enlarged", stretch, small(120, 90), 120, 90},
		{"stretch: enlarged on neither side", stretch, small(600, 100), 224, 100},
		{"stretch: exif 8", stretch, withEXIFOrientation(encodeJPEG(t, image.NewGray(image.Rect(0, 0, 300, 100)), 90), 8, false), 100, 224},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := analyzeOK(t, tc.e, tc.data, AnalyzeOptions{Keep: true})
			cfg, err := jpeg.DecodeConfig(bytes.NewReader(a.Kept))
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Width != tc.wantW || cfg.Height != tc.wantH {
				t.Errorf("kept %dx%d, want %dx%d", cfg.Width, cfg.Height, tc.wantW, tc.wantH)
			}
		})
	}
}

// TestAnalyzeKeptShowsThePhoto checks the kept photo's pixels: turned as EXIF says and
// transparent areas white, as the model sees them.
func TestAnalyzeKeptShowsThePhoto(t *testing.T) {
	e := openTest(t, Config{})
	red, blue := color.NRGBA{255, 0, 0, 255}, color.NRGBA{0, 0, 255, 255}
	// Shown: 600x400, red left half, blue right half; stored turned for EXIF 6.
	shown := twoColour(600, 400, red, blue)
	stored := image.NewNRGBA(image.Rect(0, 0, 400, 600))
	for y := 0; y < 400; y++ {
		for x := 0; x < 600; x++ {
			sx, sy := storedAt(6, x, y, 400, 600)
			stored.SetNRGBA(sx, sy, shown.NRGBAAt(x, y))
		}
	}
	tests := []struct {
		name        string
		data        []byte
		left, right color.RGBA
	}{
		{"exif 6", withEXIFOrientation(encodeJPEG(t, stored, 95), 6, false), color.RGBA{255, 0, 0, 255}, color.RGBA{0, 0, 255, 255}},
		{"alpha over white", encodePNG(t, twoColour(600, 400, red, color.NRGBA{0, 0, 255, 0})), color.RGBA{255, 0, 0, 255}, color.RGBA{255, 255, 255, 255}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			kept, err := jpeg.Decode(bytes.NewReader(analyzeOK(t, e, tc.data, AnalyzeOptions{Keep: true}).Kept))
			if err != nil {
				t.Fatal(err)
			}
			if b := kept.Bounds(); b.Dx() != 384 || b.Dy() != 256 {
				t.Fatalf("kept %v, want 384x256", b.Size())
			}
			k := toRGBA(kept)
			if l := k.RGBAAt(40, 128); !near(l, tc.left.R, tc.left.G, tc.left.B, 12) {
				t.Errorf("left %v, want %v", l, tc.left)
			}
			if r := k.RGBAAt(340, 128); !near(r, tc.right.R, tc.right.G, tc.right.B, 12) {
				t.Errorf("right %v, want %v", r, tc.right)
			}
		})
	}
}

// bruteGrid is the 32x32 area average of an image's luma by the definition: each cell the
// mean of the pixels under it, weighted by the overlap, in float64, with each pixel's luma
// read through image.Image and composited over white.
func bruteGrid(img image.Image) [phashGrid][phashGrid]float64 {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	overlap := func(p, n, c int) float64 { // pixel p of n, cell c, in pixel lengths
		cw := float64(n) / phashGrid
		lo, hi := max(float64(p), float64(c)*cw), min(float64(p+1), float64(c+1)*cw)
		return max(0, hi-lo)
	}
	var out [phashGrid][phashGrid]float64
	for cy := range phashGrid {
		for cx := range phashGrid {
			var s float64
			for y := range h {
				oy := overlap(y, h, cy)
				if oy == 0 {
					continue
				}
				for x := range w {
					if ox := overlap(x, w, cx); ox > 0 {
						s += oy * ox * float64(lumaOverWhite(img.At(b.Min.X+x, b.Min.Y+y).RGBA())) / 256
					}
				}
			}
			out[cy][cx] = s / (float64(w) / phashGrid * float64(h) / phashGrid)
		}
	}
	return out
}

// TestGreyGridIsTheAreaAverage compares the integer area average with the definition, for
// sizes smaller than, equal to and larger than the grid, and not multiples of it, and for
// each image type read in place (and one read through At).
func TestGreyGridIsTheAreaAverage(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, sz := range []image.Point{{1, 1}, {3, 5}, {31, 33}, {32, 32}, {64, 48}, {100, 7}, {257, 129}} {
		r := image.Rect(0, 0, sz.X, sz.Y)
		rgba := image.NewRGBA(r)
		for i := 0; i < len(rgba.Pix); i += 4 {
			a := uint8(rng.IntN(256))
			if i%8 == 0 {
				a = 255 // half opaque, half not
			}
			rgba.Pix[i], rgba.Pix[i+1], rgba.Pix[i+2], rgba.Pix[i+3] = uint8(rng.UintN(uint(a)+1)), uint8(rng.UintN(uint(a)+1)), uint8(rng.UintN(uint(a)+1)), a
		}
		grey, nrgba, pal, rgba64 := image.NewGray(r), image.NewNRGBA(r), image.NewPaletted(r, palette.Plan9), image.NewRGBA64(r)
		ycc := image.NewYCbCr(r, image.YCbCrSubsampleRatio420)
		for i := range ycc.Y {
			ycc.Y[i] = uint8(rng.IntN(256))
		}
		draw.Draw(grey, r, rgba, image.Point{}, draw.Src)
		draw.Draw(nrgba, r, rgba, image.Point{}, draw.Src)
		draw.Draw(pal, r, rgba, image.Point{}, draw.Src)
		draw.Draw(rgba64, r, rgba, image.Point{}, draw.Src)
		for name, img := range map[string]image.Image{"rgba": rgba, "gray": grey, "nrgba": nrgba, "paletted": pal, "rgba64": rgba64} {
			var g greyGrid
			if !g.fill(img) {
				t.Fatalf("%s %v: fill refused", name, sz)
			}
			want := bruteGrid(img)
			// A cell sums luma in 1/256 levels over its area in units of 1/32 pixel a side.
			scale := 256 * float64(sz.X*sz.Y)
			for y := range phashGrid {
				for x := range phashGrid {
					if got := float64(g.cell[y][x]) / scale; got-want[y][x] > 1e-9 || want[y][x]-got > 1e-9 {
						t.Fatalf("%s %v: cell (%d,%d) = %v, want %v", name, sz, x, y, got, want[y][x])
					}
				}
			}
		}
		// A YCbCr image's grey is its Y plane, not the luma of its colours turned to RGB.
		var g greyGrid
		g.fill(ycc)
		want := bruteGrid(&image.Gray{Pix: ycc.Y, Stride: ycc.YStride, Rect: r})
		for y := range phashGrid {
			for x := range phashGrid {
				if got := float64(g.cell[y][x]) / (256 * float64(sz.X*sz.Y)); got-want[y][x] > 1e-9 || want[y][x]-got > 1e-9 {
					t.Fatalf("ycbcr %v: cell (%d,%d) = %v, want %v", sz, x, y, got, want[y][x])
				}
			}
		}
	}
}

// TestPHashProperties checks the hash on made images: every EXIF turn of the stored pixels
// hashes as the upright image does, the same colours in another image type hash the same,
// flat and empty images hash to the documented values, and a hash has 32 bits set when no
// coefficient ties the median.
func TestPHashProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	noise := image.NewRGBA(image.Rect(0, 0, 90, 61))
	for i := range noise.Pix {
		noise.Pix[i] = uint8(rng.IntN(256))
		if i%4 == 3 {
			noise.Pix[i] = 255
		}
	}
	upright := PHash(noise)
	if n := Hamming(upright, 0); n != 32 {
		t.Errorf("noise hash %016x has %d bits set, want 32", upright, n)
	}
	for o := 1; o <= 8; o++ {
		// stored is what shows as noise once turned by o.
		sw, sh := orientedSize(90, 61, o)
		stored := image.NewRGBA(image.Rect(0, 0, sw, sh))
		for y := 0; y < 61; y++ {
			for x := 0; x < 90; x++ {
				sx, sy := storedAt(o, x, y, sw, sh)
				copy(stored.Pix[stored.PixOffset(sx, sy):][:4], noise.Pix[noise.PixOffset(x, y):][:4])
			}
		}
		if h, _ := phashDecoded(Decoded{Image: stored, Orientation: o}); h != upright {
			t.Errorf("orientation %d: hash %016x, want the upright image's %016x", o, h, upright)
		}
	}
	nrgba := image.NewNRGBA(noise.Rect)
	generic := image.NewRGBA64(noise.Rect)
	draw.Draw(nrgba, nrgba.Rect, noise, image.Point{}, draw.Src)
	draw.Draw(generic, generic.Rect, noise, image.Point{}, draw.Src)
	for name, img := range map[string]image.Image{"nrgba": nrgba, "rgba64": generic} {
		if h := PHash(img); h != upright {
			t.Errorf("%s: hash %016x, want the RGBA image's %016x", name, h, upright)
		}
	}
	tests := []struct {
		name string
		img  image.Image
		want uint64
	}{
		{"empty", image.NewRGBA(image.Rect(0, 0, 0, 0)), 0},
		{"black", image.NewGray(image.Rect(0, 0, 40, 40)), 0},
		{"flat grey", image.NewGray(image.Rect(0, 0, 40, 40)), 0},
		{"white", twoColour(40, 40, color.White, color.White), 1 << 63},
		{"transparent is white", twoColour(40, 40, color.NRGBA{0, 0, 0, 0}, color.NRGBA{0, 0, 0, 0}), 1 << 63},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if h := PHash(tc.img); h != tc.want {
				t.Errorf("hash %016x, want %016x", h, tc.want)
			}
		})
	}
}

func TestHamming(t *testing.T) {
	tests := []struct {
		a, b uint64
		want int
	}{
		{0, 0, 0},
		{0, ^uint64(0), 64},
		{1 << 63, 1, 2},
		{0xF0F0, 0x0FF0, 8},
	}
	for _, tc := range tests {
		if got := Hamming(tc.a, tc.b); got != tc.want {
			t.Errorf("Hamming(%x, %x) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestKeptSize(t *testing.T) {
	stretch := DefaultSpec()
	stretch.Resize = Resize{Policy: ResizeStretch, Kernel: KernelBiLinear}
	tests := []struct {
		name         string
		spec         Spec
		w, h, o      int
		wantW, wantH int
	}{
		{"portrait", DefaultSpec(), 400, 533, 1, 256, 341},
		{"landscape", DefaultSpec(), 1024, 378, 1, 694, 256},
		{"square", DefaultSpec(), 348, 348, 1, 256, 256},
		{"smaller than the side", DefaultSpec(), 198, 198, 1, 198, 198},
		{"turned: the stored frame", DefaultSpec(), 533, 400, 6, 341, 256},
		{"panorama kept within JPEG's limit", DefaultSpec(), 300_000, 300, 1, 65500, 66},
		{"stretch", stretch, 400, 533, 1, 224, 224},
		{"stretch turned", func() Spec { s := stretch; s.Width, s.Height = 300, 200; return s }(), 1000, 1000, 6, 200, 300},
		{"stretch never enlarged", stretch, 100, 500, 1, 100, 224},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if w, h := keptSize(tc.spec, tc.w, tc.h, tc.o); w != tc.wantW || h != tc.wantH {
				t.Errorf("keptSize(%dx%d, orientation %d) = %dx%d, want %dx%d", tc.w, tc.h, tc.o, w, h, tc.wantW, tc.wantH)
			}
		})
	}
}

// TestTurboEncode checks the libjpeg-turbo encoder on a shared photo: image/jpeg reads what
// it writes, at the size given, as close to the source as image/jpeg's own encoding at the
// same quality, and an empty image is refused.
func TestTurboEncode(t *testing.T) {
	src := toRGBA(decodeWith(t, readFile(t, photos(t, "clothing", 1)[0].Path), DecodeOptions{}).Image)
	src.Pix[3] = 0 // alpha is ignored: the kept photo is composited before encoding
	msd := func(data []byte) float64 {
		t.Helper()
		img, err := jpeg.Decode(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("image/jpeg cannot read it: %v", err)
		}
		if img.Bounds() != src.Rect {
			t.Fatalf("decoded %v, want %v", img.Bounds(), src.Rect)
		}
		got := toRGBA(img)
		var sum float64
		for i := range src.Pix {
			if i%4 != 3 {
				d := float64(got.Pix[i]) - float64(src.Pix[i])
				sum += d * d
			}
		}
		return sum / float64(len(src.Pix)/4*3)
	}
	data, err := turboEncode(src, KeptQuality)
	if err != nil {
		t.Fatal(err)
	}
	turbo, std := msd(data), msd(encodeJPEG(t, src, KeptQuality))
	t.Logf("mean squared difference from the source: libjpeg-turbo %.2f (%d bytes), image/jpeg %.2f", turbo, len(data), std)
	if turbo > 1.05*std {
		t.Errorf("libjpeg-turbo is further from the source than image/jpeg: %.2f against %.2f", turbo, std)
	}
	if _, err := turboEncode(image.NewRGBA(image.Rect(0, 0, 0, 5)), KeptQuality); err == nil {
		t.Error("encoded an empty image")
	}
}

// The mirror hash is the hash of the picture mirrored left to right, so a mirrored copy is a
// few bits from the original's mirror hash however far its own hash is.
func TestPHashMirrorMatchesAMirroredCopy(t *testing.T) {
	e := openTest(t, Config{})
	for _, p := range photos(t, "grocery", 6) {
		data := readFile(t, p.Path)
		img, _, err := image.Decode(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		b := img.Bounds()
		flipped := image.NewRGBA(image.Rect(0, 0, b.Dx(), b.Dy()))
		for y := 0; y < b.Dy(); y++ {
			for x := 0; x < b.Dx(); x++ {
				flipped.Set(b.Dx()-1-x, y, img.At(b.Min.X+x, b.Min.Y+y))
			}
		}
		var buf bytes.Buffer
		if err := png.Encode(&buf, flipped); err != nil {
			t.Fatal(err)
		}
		orig, err := e.Analyze(context.Background(), data, AnalyzeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		mir, err := e.Analyze(context.Background(), buf.Bytes(), AnalyzeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		direct, mirrored := Hamming(orig.PHash, mir.PHash), Hamming(orig.PHashMirror, mir.PHash)
		t.Logf("%s: mirrored copy %d bits from the hash, %d from the mirror hash", p.Path, direct, mirrored)
		if mirrored > 4 || mirrored >= direct {
			t.Errorf("%s: mirrored copy is %d bits from the mirror hash (%d from the hash)", p.Path, mirrored, direct)
		}
	}
}
