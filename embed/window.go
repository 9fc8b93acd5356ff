package embed

import (
	"image"
	"math/bits"
)

// A crop of a photo moves its perceptual hash far (a fifth of each side gone shifts and
// rescales every low frequency), but the crop hashes as the matching window of the photo
// does. Windows hashes a fixed set of windows of one photo, so that "may B be a crop of A?"
// is the smallest distance from B's hash to any of A's windows; MatchCrop then settles it
// from the pixels, since a different picture of the same design can come as near.
//
// Choices, and why:
//   - The windows keep the photo's aspect ratio (the same fraction of each side), at sides
//     from 78% to 96% in steps of 3%, each at 5x5 offsets spread evenly from the top-left
//     corner to the bottom-right one: 175 windows. Adjacent windows overlap so much that a
//     crop anywhere between them lands within a few bits of the nearest one; more windows
//     would only give a different photo more chances to come close.
//   - Each window's grid is area-averaged exactly as PHash does it, from one summed-area
//     table of the photo's luma, so a window covering the whole photo hashes to PHash's
//     value bit for bit and the search costs one pass over the pixels plus the DCTs.
//   - A mirrored crop needs no windows of its own: mirroring B and cropping A's mirror image
//     commute, and the windows are symmetric left to right, so comparing A's windows with
//     B's mirror hash (Analysis.PHashMirror) finds it.

// windowSides are the window sides tried, as fractions of the photo's sides.
var windowSides = [...]float64{0.78, 0.81, 0.84, 0.87, 0.90, 0.93, 0.96}

// windowSteps is the number of window offsets along each axis.
const windowSteps = 5

// WindowHashes are the perceptual hashes of a photo's crop windows (see Windows).
type WindowHashes []uint64

// Windows hashes the crop windows of an image as it is (no EXIF turn): every window of
// 78% to 96% of each side, at offsets spread over the image. An image too small to have a
// window of at least one pixel, or empty, has none. The work grows with the pixels (one
// summed-area table of 8 bytes a pixel), so pass a photo at its kept size rather than an
// original of many megapixels.
func Windows(img image.Image) WindowHashes {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	if w <= 0 || h <= 0 {
		return nil
	}
	sat := newSummedArea(img)
	rects := windowRects(w, h)
	out := make(WindowHashes, len(rects))
	var g greyGrid
	for i, r := range rects {
		sat.grid(&g, r.Min.X, r.Min.Y, r.Dx(), r.Dy())
		out[i] = g.hash()
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// windowRects are the windows of a w x h image, from (0, 0), in the order of their hashes.
func windowRects(w, h int) []image.Rectangle {
	out := make([]image.Rectangle, 0, len(windowSides)*windowSteps*windowSteps)
	for _, s := range windowSides {
		cw, ch := int(float64(w)*s), int(float64(h)*s)
		if cw <= 0 || ch <= 0 {
			continue
		}
		for i := range windowSteps {
			for j := range windowSteps {
				x0 := (w - cw) * i / (windowSteps - 1)
				y0 := (h - ch) * j / (windowSteps - 1)
				out = append(out, image.Rect(x0, y0, x0+cw, y0+ch))
			}
		}
	}
	return out
}

// Min is the smallest Hamming distance from hash to any of the windows' hashes: small when
// the picture hashed is a crop of the windows' photo. It is -1 when there are no windows.
func (w WindowHashes) Min(hash uint64) int {
	if len(w) == 0 {
		return -1
	}
	best := 64
	for _, wh := range w {
		best = min(best, bits.OnesCount64(wh^hash))
	}
	return best
}

// summedArea is the summed-area table of an image's luma, in greyGrid's units: s[y*(w+1)+x]
// is the sum of the luma of the pixels left of column x and above row y.
type summedArea struct {
	w, h int
	s    []uint64
}

func newSummedArea(img image.Image) *summedArea {
	b := img.Bounds()
	rows := newLumaRows(img)
	return summedAreaOf(b.Dx(), b.Dy(), func(y int, row []uint64) { rows.pixels(b.Min.Y+y, row) })
}

// summedAreaOf builds the table of a w x h image whose row y (from 0) pixel sets fills.
func summedAreaOf(w, h int, pixels func(y int, row []uint64)) *summedArea {
	a := &summedArea{w: w, h: h, s: make([]uint64, (w+1)*(h+1))}
	row := make([]uint64, w)
	stride := w + 1
	for y := range h {
		pixels(y, row)
		above, at := a.s[y*stride:(y+1)*stride], a.s[(y+1)*stride:(y+2)*stride]
		var run uint64
		for x, v := range row {
			run += v
			at[x+1] = above[x+1] + run
		}
	}
	return a
}

// grid area-averages the window of cw x ch pixels at (x0, y0) into g, as greyGrid.fill
// does the whole image: its cell boundaries fall at the same fractions of the window.
func (a *summedArea) grid(g *greyGrid, x0, y0, cw, ch int) {
	xb, yb := cellBounds(cw), cellBounds(ch)
	for i := range xb {
		xb[i].at += x0
		yb[i].at += y0
	}
	var prev, cur [phashGrid + 1]uint64
	a.corners(&prev, &xb, yb[0])
	for j := 1; j <= phashGrid; j++ {
		a.corners(&cur, &xb, yb[j])
		for k := range phashGrid {
			g.cell[j-1][k] = cur[k+1] - cur[k] - prev[k+1] + prev[k]
		}
		prev = cur
	}
}

// corners sets out[k] to the luma integrated over the image from its top-left corner to the
// point (xb[k], y), in greyGrid's units (1/1024 of a pixel's area): whole pixels count 1024
// times, those a boundary cuts in proportion to the part of them it keeps. The rows above y
// and the part of row y.at it keeps are combined first, column by column (t below), so
// that each corner needs that combination at one or two columns.
func (a *summedArea) corners(out *[phashGrid + 1]uint64, xb *[phashGrid + 1]cellBound, y cellBound) {
	stride := a.w + 1
	above := a.s[y.at*stride : (y.at+1)*stride]
	var below []uint64
	if y.frac != 0 {
		below = a.s[(y.at+1)*stride : (y.at+2)*stride]
	}
	t := func(x int) uint64 { // the integral up to column x (whole pixels) and to y, in 1/32 pixel
		v := 32 * above[x]
		if below != nil {
			v += y.frac * (below[x] - above[x])
		}
		return v
	}
	for k, x := range xb {
		t0 := t(x.at)
		v := 32 * t0
		if x.frac != 0 {
			v += x.frac * (t(x.at+1) - t0)
		}
		out[k] = v
	}
}
