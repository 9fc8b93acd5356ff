package embed

import (
	"fmt"
	"image"
	"image/color/palette"
	"image/draw"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"lookalike/augment"
	"lookalike/internal/dataset"
)

// TestWindowGridIsFill checks the summed-area grids against greyGrid.fill, which the pinned
// hashes come from: the window covering the whole image is fill's grid of the image, and any
// other window is fill's grid of that sub-image, cell for cell, for every image type.
func TestWindowGridIsFill(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	sizes := []image.Point{{1, 1}, {3, 5}, {31, 33}, {64, 48}, {257, 129}}
	for _, sz := range sizes {
		r := image.Rect(0, 0, sz.X, sz.Y)
		rgba := image.NewRGBA(r)
		for i := 0; i < len(rgba.Pix); i += 4 {
			a := uint8(rng.IntN(256))
			if i%8 == 0 {
				a = 255
			}
			rgba.Pix[i], rgba.Pix[i+1], rgba.Pix[i+2], rgba.Pix[i+3] = uint8(rng.UintN(uint(a)+1)), uint8(rng.UintN(uint(a)+1)), uint8(rng.UintN(uint(a)+1)), a
		}
		grey, nrgba, pal, rgba64 := image.NewGray(r), image.NewNRGBA(r), image.NewPaletted(r, palette.Plan9), image.NewRGBA64(r)
		ycc := image.NewYCbCr(r, image.YCbCrSubsampleRatio420)
		for i := range ycc.Y {
			ycc.Y[i] = uint8(rng.IntN(256))
		}
		for _, dst := range []draw.Image{grey, nrgba, pal, rgba64} {
			draw.Draw(dst, r, rgba, image.Point{}, draw.Src)
		}
		images := []struct {
			name string
			img  interface {
				image.Image
				SubImage(image.Rectangle) image.Image
			}
		}{{"rgba", rgba}, {"gray", grey}, {"ycbcr", ycc}, {"nrgba", nrgba}, {"paletted", pal}, {"rgba64", rgba64}}
		for _, im := range images {
			sat := newSummedArea(im.img)
			windows := []image.Rectangle{r}
			if sz.X > 2 && sz.Y > 2 {
				windows = append(windows, image.Rect(1, 1, sz.X-1, sz.Y), image.Rect(sz.X/3, 0, sz.X, sz.Y*2/3+1))
			}
			for _, win := range windows {
				var want, got greyGrid
				want.fill(im.img.SubImage(win))
				sat.grid(&got, win.Min.X, win.Min.Y, win.Dx(), win.Dy())
				if got != want {
					t.Errorf("%s %v: the grid of window %v differs from fill's", im.name, sz, win)
				}
			}
		}
	}
}

// TestWindowsShape checks how many windows an image has and what Min says without any.
func TestWindowsShape(t *testing.T) {
	tests := []struct {
		name string
		w, h int
		want int
	}{
		{"empty", 0, 0, 0},
		{"one pixel: no window of a whole pixel", 1, 1, 0},
		{"two pixels a side", 2, 2, 175},
		{"a kept photo", 256, 341, 175},
		{"a panorama", 2000, 40, 175},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ws := Windows(image.NewGray(image.Rect(0, 0, tc.w, tc.h)))
			if len(ws) != tc.want {
				t.Errorf("%d windows, want %d", len(ws), tc.want)
			}
		})
	}
	if got := WindowHashes(nil).Min(0); got != -1 {
		t.Errorf("Min of no windows is %d, want -1", got)
	}
	if got := (WindowHashes{0xff, 0xf0f0}).Min(0xf0f1); got != 1 {
		t.Errorf("Min = %d, want 1", got)
	}
}

// keptOf makes the kept photo of a shared photo as Analyze does, without the model.
func keptOf(t testing.TB, w *prepWorker, data []byte) image.Image {
	t.Helper()
	kept, err := w.keep(decodeWith(t, data, DecodeOptions{MinShortSide: 256}), DefaultSpec())
	if err != nil {
		t.Fatal(err)
	}
	return decodeWith(t, kept, DecodeOptions{}).Image
}

// TestWindowsFindCrops measures the window search on grocery photos at their kept size:
// every 80-95% crop augment makes (the calibration's "crop" copy), and the same crop
// mirrored, is within cropBits of one of the photo's windows, while no photo of another
// grocery product comes that close to any window, directly or mirrored. The global hash of
// most of those crops is far off, which is why the windows exist.
func TestWindowsFindCrops(t *testing.T) {
	const cropBits = 8
	p, err := NewPreprocessor(DefaultSpec())
	if err != nil {
		t.Fatal(err)
	}
	w := &prepWorker{prep: p}
	shared := photos(t, dataset.PhotosGrocery, 48)
	type photo struct {
		label        string
		kept         image.Image
		windows      WindowHashes
		hash, mirror uint64
	}
	var ps []photo
	for _, sp := range shared {
		data := readFile(t, sp.Path)
		kept := keptOf(t, w, data)
		h, m := phashDecoded(decodeWith(t, data, DecodeOptions{MinShortSide: 256}))
		ps = append(ps, photo{label: sp.Label, kept: kept, windows: Windows(kept), hash: h, mirror: m})
	}

	var global, direct, mirrored []int
	for i, ph := range ps {
		copies, err := augment.Copies(ph.kept, rand.New(rand.NewPCG(uint64(i), 7)))
		if err != nil {
			t.Fatal(err)
		}
		k := slices.IndexFunc(copies, func(c augment.Copy) bool { return c.Kind == "crop" })
		crop := decodeWith(t, copies[k].Image, DecodeOptions{})
		// The flipped crop's own hash is far from every window; its mirror hash is the crop's.
		ch, flippedMirror := phashDecoded(Decoded{Image: flipLeftRight(crop.Image)})
		global = append(global, Hamming(PHash(crop.Image), ph.hash))
		direct = append(direct, ph.windows.Min(PHash(crop.Image)))
		mirrored = append(mirrored, min(ph.windows.Min(ch), ph.windows.Min(flippedMirror)))
	}
	t.Logf("crops (%d): global hash %s", len(ps), summarize(global))
	t.Logf("crops: nearest window %s; mirrored crops: %s", summarize(direct), summarize(mirrored))
	for i := range ps {
		if direct[i] > cropBits || mirrored[i] > cropBits {
			t.Errorf("photo %d (%s): crop %d bits from the nearest window, mirrored crop %d, want <= %d", i, ps[i].label, direct[i], mirrored[i], cropBits)
		}
	}

	var others []int
	for i, a := range ps {
		for j, b := range ps {
			if i == j || a.label == b.label {
				continue
			}
			d := min(a.windows.Min(b.hash), a.windows.Min(b.mirror))
			others = append(others, d)
			if d <= cropBits {
				t.Errorf("%s is %d bits from a window of %s, a different product", b.label, d, a.label)
			}
		}
	}
	t.Logf("photos of other products (%d pairs): nearest window %s", len(others), summarize(others))
}

// flipLeftRight mirrors an image.
func flipLeftRight(img image.Image) *image.RGBA {
	b := img.Bounds()
	out := image.NewRGBA(image.Rect(0, 0, b.Dx(), b.Dy()))
	for y := range b.Dy() {
		for x := range b.Dx() {
			out.Set(b.Dx()-1-x, y, img.At(b.Min.X+x, b.Min.Y+y))
		}
	}
	return out
}

// BenchmarkWindows times the window search of a kept grocery photo: the summed-area table
// and the 175 window hashes, Min against one hash, and MatchCrop of a crop of the photo.
func BenchmarkWindows(b *testing.B) {
	p, err := NewPreprocessor(DefaultSpec())
	if err != nil {
		b.Fatal(err)
	}
	w := &prepWorker{prep: p}
	var kept []image.Image
	for _, data := range benchPhotos(b, dataset.PhotosGrocery, 16) {
		kept = append(kept, keptOf(b, w, data))
	}
	b.Run("windows", func(b *testing.B) {
		n, cpu := 0, startCPU()
		for b.Loop() {
			Windows(kept[n%len(kept)])
			n++
		}
		reportImagesPerSecond(b, n)
		cpu.report(b, n)
	})
	ws := Windows(kept[0])
	b.Run("min", func(b *testing.B) {
		var sink int
		for i := 0; b.Loop(); i++ {
			sink += ws.Min(uint64(i))
		}
		_ = fmt.Sprint(sink)
	})
	// MatchCrop of a crop of each photo: the summed-area tables and the descents.
	type cropCase struct {
		crop   image.Image
		h, mir uint64
	}
	var cases []cropCase
	var windows []WindowHashes
	for i, k := range kept {
		copies, err := augment.Copies(k, rand.New(rand.NewPCG(uint64(i), 11)))
		if err != nil {
			b.Fatal(err)
		}
		c := slices.IndexFunc(copies, func(c augment.Copy) bool { return c.Kind == "crop" })
		img := decodeWith(b, copies[c].Image, DecodeOptions{}).Image
		h, m := phashDecoded(Decoded{Image: img})
		cases = append(cases, cropCase{img, h, m})
		windows = append(windows, Windows(k))
	}
	b.Run("match-crop", func(b *testing.B) {
		n, cpu := 0, startCPU()
		for b.Loop() {
			i := n % len(kept)
			MatchCrop(kept[i], windows[i], cases[i].crop, cases[i].h, cases[i].mir)
			n++
		}
		reportImagesPerSecond(b, n)
		cpu.report(b, n)
	})
	// A kept photo decoded from its JPEG, as the catalogue reads it, for comparison.
	var jpegs [][]byte
	for _, k := range kept {
		data, err := turboEncode(toRGBA(k), KeptQuality)
		if err != nil {
			b.Fatal(err)
		}
		jpegs = append(jpegs, data)
	}
	b.Run("decode-kept", func(b *testing.B) {
		n := 0
		for b.Loop() {
			if _, err := Decode(jpegs[n%len(jpegs)], DecodeOptions{}); err != nil {
				b.Fatal(err)
			}
			n++
		}
		reportImagesPerSecond(b, n)
	})
}

// plainHash is greyGrid.hash as first written, one loop per coefficient: the reference the
// faster loop order must match bit for bit, so that no stored hash changes meaning.
func plainHash(g *greyGrid) uint64 {
	var cos [phashSide][phashGrid]float64
	for k := range phashSide {
		for x := range phashGrid {
			cos[k][x] = math.Cos(math.Pi * float64((2*x+1)*k) / (2 * phashGrid))
		}
	}
	var ac [phashGrid][phashGrid]float64
	var total uint64
	base := g.cell[0][0]
	for y := range phashGrid {
		for x := range phashGrid {
			total += g.cell[y][x]
			ac[y][x] = float64(int64(g.cell[y][x] - base))
		}
	}
	var rowF [phashGrid][phashSide]float64
	for y := range phashGrid {
		for u := range phashSide {
			var s float64
			for x := range phashGrid {
				s += ac[y][x] * cos[u][x]
			}
			rowF[y][u] = s
		}
	}
	var coef [phashSide * phashSide]float64
	for v := range phashSide {
		for u := range phashSide {
			var s float64
			for y := range phashGrid {
				s += rowF[y][u] * cos[v][y]
			}
			coef[v*phashSide+u] = s
		}
	}
	coef[0] = float64(total)
	sorted := coef
	slices.Sort(sorted[:])
	median := (sorted[len(sorted)/2-1] + sorted[len(sorted)/2]) / 2
	var h uint64
	for i, c := range coef {
		if c > median {
			h |= 1 << (63 - i)
		}
	}
	return h
}

// TestHashMatchesPlainDCT checks greyGrid.hash against plainHash on the grids of shared
// photos and of every one of their windows, and on random grids.
func TestHashMatchesPlainDCT(t *testing.T) {
	var grids []greyGrid
	for _, p := range photos(t, dataset.PhotosGrocery, 12) {
		img := decodeWith(t, readFile(t, p.Path), DecodeOptions{MinShortSide: 256}).Image
		var g greyGrid
		g.fill(img)
		grids = append(grids, g)
		sat := newSummedArea(img)
		b := img.Bounds()
		for _, s := range windowSides {
			cw, ch := int(float64(b.Dx())*s), int(float64(b.Dy())*s)
			for i := range windowSteps {
				sat.grid(&g, (b.Dx()-cw)*i/(windowSteps-1), (b.Dy()-ch)*(windowSteps-1-i)/(windowSteps-1), cw, ch)
				grids = append(grids, g)
			}
		}
	}
	rng := rand.New(rand.NewPCG(7, 8))
	for range 200 {
		var g greyGrid
		for y := range phashGrid {
			for x := range phashGrid {
				g.cell[y][x] = rng.Uint64N(1 << 40)
			}
		}
		grids = append(grids, g)
	}
	for i := range grids {
		if got, want := grids[i].hash(), plainHash(&grids[i]); got != want {
			t.Errorf("grid %d: hash %016x, the plain DCT's %016x", i, got, want)
		}
	}
}

// TestMatchCrop measures the aligned colour correlation on grocery photos at their kept
// size, every catalogue shot and some in-store ones: each photo's 80-95% crop, and the same
// crop mirrored, hashes within CropSearchBits of a window and correlates at cropCorrelation
// or more with its photo, while no photo of another product that hashes as near (sibling
// cartons of one brand, neighbours on a shelf) comes that close.
func TestMatchCrop(t *testing.T) {
	const (
		cropBits        = CropSearchBits
		cropCorrelation = 0.99
	)
	p, err := NewPreprocessor(DefaultSpec())
	if err != nil {
		t.Fatal(err)
	}
	w := &prepWorker{prep: p}
	all, err := dataset.LoadPhotos(dataset.PhotosGrocery)
	if err != nil {
		t.Fatal(err)
	}
	type photo struct {
		label, name  string
		kept         image.Image
		windows      WindowHashes
		hash, mirror uint64
	}
	var ps []photo
	for i, sp := range all {
		iconic := strings.Contains(sp.Path, "iconic__")
		if !iconic && (!strings.Contains(sp.Path, "train__") || i%8 != 0) {
			continue
		}
		data := readFile(t, sp.Path)
		kept := keptOf(t, w, data)
		h, m := phashDecoded(decodeWith(t, data, DecodeOptions{MinShortSide: 256}))
		ps = append(ps, photo{sp.Label, filepath.Base(sp.Path), kept, Windows(kept), h, m})
	}
	var crops, mirrored []float64
	for i, ph := range ps {
		copies, err := augment.Copies(ph.kept, rand.New(rand.NewPCG(uint64(i), 11)))
		if err != nil {
			t.Fatal(err)
		}
		k := slices.IndexFunc(copies, func(c augment.Copy) bool { return c.Kind == "crop" })
		crop := decodeWith(t, copies[k].Image, DecodeOptions{}).Image
		for _, flip := range []bool{false, true} {
			img := crop
			if flip {
				img = flipLeftRight(crop)
			}
			h, m := phashDecoded(Decoded{Image: img})
			got := MatchCrop(ph.kept, ph.windows, img, h, m)
			if flip {
				mirrored = append(mirrored, got.Correlation)
			} else {
				crops = append(crops, got.Correlation)
			}
			if got.Hamming > cropBits || got.Correlation < cropCorrelation {
				t.Errorf("%s, crop (mirrored %v): %d bits from a window, correlation %.4f; want <= %d and >= %.2f", ph.name, flip, got.Hamming, got.Correlation, cropBits, cropCorrelation)
			}
		}
	}
	t.Logf("crops of %d photos: correlation %s; mirrored: %s", len(ps), spread(crops), spread(mirrored))

	var others []float64
	for i, a := range ps {
		for j, b := range ps {
			if i == j || a.label == b.label || min(a.windows.Min(b.hash), a.windows.Min(b.mirror)) > cropBits {
				continue
			}
			got := MatchCrop(a.kept, a.windows, b.kept, b.hash, b.mirror)
			others = append(others, got.Correlation)
			if got.Correlation < 0.9 {
				continue
			}
			t.Logf("%s ~ a window of %s: %d bits, correlation %.4f", b.name, a.name, got.Hamming, got.Correlation)
			if got.Correlation >= cropCorrelation {
				t.Errorf("%s matches a crop of %s, a different product: %d bits, correlation %.4f", b.name, a.name, got.Hamming, got.Correlation)
			}
		}
	}
	t.Logf("photos of other products within %d bits of a window (%d pairs): correlation %s", cropBits, len(others), spread(others))
	if got := MatchCrop(ps[0].kept, nil, ps[1].kept, ps[1].hash, ps[1].mirror); got != (Crop{Hamming: -1}) {
		t.Errorf("no windows: %+v", got)
	}
}

// spread renders a distribution of correlations: min, 5th percentile, median, max.
func spread(v []float64) string {
	if len(v) == 0 {
		return "none"
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return fmt.Sprintf("min %.4f, p5 %.4f, median %.4f, max %.4f", s[0], s[len(s)/20], s[len(s)/2], s[len(s)-1])
}
