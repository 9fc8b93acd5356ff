package embed

import (
	"image"
	"math"
	"slices"
)

// A window's hash says where a crop may have come from, but 64 bits of low frequencies
// cannot tell a crop from a different product of the same design (two cartons of one
// brand, one shelf shot beside another): with 175 windows to choose from, such pairs come
// within 4-6 bits, as near as many crops. The pixels can tell them apart: a crop is the
// same colours cell for cell once the window is moved onto it exactly. So MatchCrop takes
// the nearest windows by hash, moves and scales each pixel by pixel until its colours
// correlate best with the other picture's, and reports that correlation.
//
// Choices, and why:
//   - The colours are compared as 32x32 cells of R, G and B over white, area-averaged as
//     the hash's grid is (from summed-area tables), each channel less its mean: the
//     correlation ignores a change of brightness or contrast, and a different colour band
//     on an otherwise equal carton counts.
//   - The search is a descent from the hash's windows: moves of 4, then 2, then 1 pixel
//     (shifts, and each side grown or shrunk), kept while they raise the correlation. A
//     crop lies within a few pixels of some window, so the descent reaches it.
//   - Only the few nearest windows are aligned: each costs some tens of grids.

// CropSearchBits is the farthest a window's hash may be from the picture's for MatchCrop
// to align it.
const CropSearchBits = 12

// cropCandidates is how many of the nearest windows MatchCrop aligns.
const cropCandidates = 2

// Crop says how closely a picture matches a crop of another.
type Crop struct {
	// Hamming is the distance from the picture's hash, or its mirror hash, to the nearest
	// window of the other (WindowHashes.Min); -1 when the other has no windows.
	Hamming int
	// Correlation is that of the picture's colours with those of the region of the other
	// that fits it best, found from the nearest windows: near 1 for a crop. 0 when no
	// window was within CropSearchBits.
	Correlation float64
}

// MatchCrop says how closely b, whose hash and mirror hash are hb and hbMirror (as
// Analysis.PHash and PHashMirror), matches a crop of a, whose windows are wa (Windows(a)).
// A mirrored match is aligned with b mirrored. The work is two summed-area tables per image
// and the descents; pass images at their kept size.
func MatchCrop(a image.Image, wa WindowHashes, b image.Image, hb, hbMirror uint64) Crop {
	if len(wa) == 0 {
		return Crop{Hamming: -1}
	}
	best := min(wa.Min(hb), wa.Min(hbMirror))
	out := Crop{Hamming: best}
	ab, bb := a.Bounds(), b.Bounds()
	rects := windowRects(ab.Dx(), ab.Dy())
	if best > CropSearchBits || len(rects) != len(wa) || bb.Dx() <= 0 || bb.Dy() <= 0 {
		return out
	}
	type candidate struct {
		window, bits int
		mirrored     bool
	}
	var cands []candidate
	for i, h := range wa {
		for _, m := range []bool{false, true} {
			target := hb
			if m {
				target = hbMirror
			}
			if d := Hamming(h, target); d <= min(best+2, CropSearchBits) {
				cands = append(cands, candidate{i, d, m})
			}
		}
	}
	slices.SortStableFunc(cands, func(x, y candidate) int { return x.bits - y.bits })
	ca := newColourArea(a)
	var target, mirror colourGrid
	cb := newColourArea(b)
	cb.grid(&target, image.Rect(0, 0, bb.Dx(), bb.Dy()))
	target.mirrorInto(&mirror)
	for _, c := range cands[:min(len(cands), cropCandidates)] {
		t := &target
		if c.mirrored {
			t = &mirror
		}
		out.Correlation = max(out.Correlation, ca.align(rects[c.window], t))
	}
	return out
}

// colourGrid is a region's 32x32 cells of R, G and B, each channel less its mean.
type colourGrid [3][phashGrid * phashGrid]float64

func (g *colourGrid) mirrorInto(m *colourGrid) {
	for c := range g {
		for y := range phashGrid {
			for x := range phashGrid {
				m[c][y*phashGrid+x] = g[c][y*phashGrid+phashGrid-1-x]
			}
		}
	}
}

// correlation is the Pearson correlation of two grids, all channels together; 0 when
// either is flat.
func (g *colourGrid) correlation(o *colourGrid) float64 {
	var dot, gg, oo float64
	for c := range g {
		for i, v := range g[c] {
			w := o[c][i]
			dot += v * w
			gg += v * v
			oo += w * w
		}
	}
	if gg == 0 || oo == 0 {
		return 0
	}
	return dot / math.Sqrt(gg*oo)
}

// colourArea is the summed-area tables of an image's R, G and B over white.
type colourArea struct {
	w, h int
	ch   [3]*summedArea
}

func newColourArea(img image.Image) *colourArea {
	rgba := toRGBA(img)
	w, h := rgba.Rect.Dx(), rgba.Rect.Dy()
	a := &colourArea{w: w, h: h}
	for c := range a.ch {
		a.ch[c] = summedAreaOf(w, h, func(y int, row []uint64) {
			px := rgba.Pix[y*rgba.Stride : y*rgba.Stride+4*w]
			for x := range row {
				// Premultiplied, over white: the channel plus what the alpha leaves uncovered.
				row[x] = uint64(px[4*x+c]) + 255 - uint64(px[4*x+3])
			}
		})
	}
	return a
}

// grid area-averages the region r into g, each channel less its mean.
func (a *colourArea) grid(g *colourGrid, r image.Rectangle) {
	var cells greyGrid
	for c := range a.ch {
		a.ch[c].grid(&cells, r.Min.X, r.Min.Y, r.Dx(), r.Dy())
		var sum float64
		for y := range phashGrid {
			for x := range phashGrid {
				v := float64(cells.cell[y][x])
				g[c][y*phashGrid+x] = v
				sum += v
			}
		}
		mean := sum / (phashGrid * phashGrid)
		for i := range g[c] {
			g[c][i] -= mean
		}
	}
}

// cropMinSide is the smallest region side the descent considers.
const cropMinSide = 8

// maxCropGrids bounds the regions one descent tries, so that its cost is bounded whatever
// the pictures are.
const maxCropGrids = 256

// align moves and scales the region r, from the window it starts at, pixel by pixel, while
// its colours correlate better with target, and returns the best correlation found.
func (a *colourArea) align(r image.Rectangle, target *colourGrid) float64 {
	var g colourGrid
	score := func(r image.Rectangle) float64 {
		if r.Min.X < 0 || r.Min.Y < 0 || r.Max.X > a.w || r.Max.Y > a.h || r.Dx() < cropMinSide || r.Dy() < cropMinSide {
			return math.Inf(-1)
		}
		a.grid(&g, r)
		return g.correlation(target)
	}
	best := score(r)
	tried := 1
	for step := 4; step >= 1; step /= 2 {
		for improved := true; improved && tried < maxCropGrids; {
			improved = false
			for _, d := range [...][4]int{
				{step, 0, step, 0}, {-step, 0, -step, 0}, {0, step, 0, step}, {0, -step, 0, -step}, // shifts
				{0, 0, step, 0}, {0, 0, -step, 0}, {0, 0, 0, step}, {0, 0, 0, -step}, // right and bottom sides
				{-step, 0, 0, 0}, {step, 0, 0, 0}, {0, -step, 0, 0}, {0, step, 0, 0}, // left and top sides
			} {
				next := image.Rect(r.Min.X+d[0], r.Min.Y+d[1], r.Max.X+d[2], r.Max.Y+d[3])
				tried++
				if s := score(next); s > best {
					best, r, improved = s, next, true
				}
			}
		}
	}
	return best
}
