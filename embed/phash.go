package embed

import (
	"image"
	"math"
	"math/bits"
	"slices"
)

// The perceptual hash is the standard DCT pHash: the image in grey, area-averaged down to
// 32x32, a 2-D DCT-II, and the 8x8 lowest frequencies thresholded against their median.
//
// Choices, and why:
//   - Nothing is dropped, the DC term included: bit 63 is coefficient (0,0), bit 62 (0,1),
//     ... bit 0 (7,7), row-major with the vertical frequency first, the layout Python's
//     imagehash.phash prints. The DC term is the image's mean brightness times 1024, above
//     the median for any image that is not black, so bit 63 is set in practically every hash
//     and costs no distance; dropping it would leave 63 bits or take a coefficient from
//     outside the 8x8 block.
//   - The DCT is unnormalised (no 1/sqrt(2) on the first row and column, as scipy's default
//     DCT-II that imagehash uses): the scaling changes which coefficients rank above the
//     median, so it is part of the definition.
//   - Grey is BT.601 luma, transparent pixels composited over white as the model sees them;
//     a YCbCr image's Y plane is that luma already.
//   - Area averaging is exact: every source pixel counts in proportion to how much of a cell
//     it covers, in integers, so that the EXIF turns commute with it and a hash of the
//     stored pixels turned afterwards equals the hash of the turned image, bit for bit.
//     The decoder's DCT scaling (1/2, 1/4, 1/8 for large JPEGs) changes the grid by far
//     less than a re-encode does.
//   - Ties with the median count as below it: an image of one flat colour hashes to bit 63
//     alone, or to 0 when black.

// phashGrid is the side of the grey grid the DCT is taken of.
const phashGrid = 32

// phashSide is the side of the block of lowest frequencies kept.
const phashSide = 8

// PHash computes the 64-bit DCT perceptual hash of an image, as it is (no EXIF turn is
// applied; Analyze hashes the decoded pixels turned upright). Similar pictures have hashes
// a few bits apart (Hamming); an empty image hashes to 0.
func PHash(img image.Image) uint64 {
	var g greyGrid
	if !g.fill(img) {
		return 0
	}
	return g.hash()
}

// Hamming is the number of differing bits between two hashes.
func Hamming(a, b uint64) int { return bits.OnesCount64(a ^ b) }

// phashDecoded is the hash of the decoded image turned upright, and of it mirrored left to
// right, without turning the full image: the 32x32 grid of the stored pixels is turned
// instead.
func phashDecoded(d Decoded) (hash, mirror uint64) {
	var g greyGrid
	if !g.fill(d.Image) {
		return 0, 0
	}
	if o := d.orientation(); o != 1 {
		var up greyGrid
		for y := range phashGrid {
			for x := range phashGrid {
				sx, sy := storedAt(o, x, y, phashGrid, phashGrid)
				up.cell[y][x] = g.cell[sy][sx]
			}
		}
		g = up
	}
	var m greyGrid
	for y := range phashGrid {
		for x := range phashGrid {
			m.cell[y][x] = g.cell[y][phashGrid-1-x]
		}
	}
	return g.hash(), m.hash()
}

// greyGrid is an image area-averaged into 32x32 cells of grey. A cell holds the sum of its
// luma, in 1/256 levels, over the area it covers, in units of 1/32 pixel on each axis
// (see fill); every cell covers the same area, so the sums compare as means do.
type greyGrid struct {
	cell [phashGrid][phashGrid]uint64
}

// fill area-averages img into the grid. It reports false for an empty image.
//
// Along an axis of n pixels, measure in units of 1/32 pixel: pixel p covers [32p, 32p+32)
// and cell i covers [i*n, (i+1)*n), so every boundary is an integer. The sum of a row over
// a cell is F((i+1)n) - F(in), where F(t) = 32*(sum of the first t/32 pixels) + (t%32) *
// (pixel t/32) integrates the row up to t. Rows combine into cells the same way. Luma is
// linear in the channels, so a row's runs between boundaries are summed channel by channel
// and weighted once per boundary instead of once per pixel.
func (g *greyGrid) fill(img image.Image) bool {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	if w <= 0 || h <= 0 {
		return false
	}
	rows := newLumaRows(img)
	xb, yb := cellBounds(w), cellBounds(h)
	var rowCells, colSum, prev [phashGrid]uint64
	var edge [phashGrid + 1]uint64 // F at each cell boundary of the current row
	j := 0                         // the next row boundary to close
	for y := 0; y < h; y++ {
		rows.edges(b.Min.Y+y, &xb, &edge)
		for c := range rowCells {
			rowCells[c] = edge[c+1] - edge[c]
		}
		// The row boundaries that fall inside this row close a row of cells: what the rows
		// above gave it, plus the covered fraction of this one.
		for j <= phashGrid && yb[j].at == y {
			for c := range phashGrid {
				at := 32*colSum[c] + yb[j].frac*rowCells[c]
				if j > 0 {
					g.cell[j-1][c] = at - prev[c]
				}
				prev[c] = at
			}
			j++
		}
		for c := range colSum {
			colSum[c] += rowCells[c]
		}
	}
	for ; j <= phashGrid; j++ { // the boundary at the bottom edge
		for c := range phashGrid {
			g.cell[j-1][c] = 32*colSum[c] - prev[c]
			prev[c] = 32 * colSum[c]
		}
	}
	return true
}

// cellBound is where a cell boundary falls along an axis: in pixel at, frac/32 of the way in.
type cellBound struct {
	at   int
	frac uint64
}

// cellBounds are the 33 cell boundaries of an axis n pixels long.
func cellBounds(n int) [phashGrid + 1]cellBound {
	var out [phashGrid + 1]cellBound
	for i := range out {
		t := i * n // in units of 1/32 pixel
		out[i] = cellBound{at: t / 32, frac: uint64(t % 32)}
	}
	return out
}

// dctCos[k][x] = cos(pi*(2x+1)*k/64), the DCT-II basis for the frequencies kept: computed
// once, since a window search (Windows) hashes a photo's grid 175 times.
var dctCos = func() (cos [phashSide][phashGrid]float64) {
	for k := range phashSide {
		for x := range phashGrid {
			cos[k][x] = math.Cos(math.Pi * float64((2*x+1)*k) / (2 * phashGrid))
		}
	}
	return cos
}()

// hash takes the DCT of the grid and thresholds its 8x8 lowest frequencies at their median.
func (g *greyGrid) hash() uint64 {
	cos := &dctCos
	// A constant added to every cell changes only the DC term, so the AC terms are taken of
	// the cells less the first one: exact integers, which leave a flat image's AC terms
	// exactly zero rather than rounding noise that would pick its bits at random.
	var ac [phashGrid][phashGrid]float64
	var total uint64
	base := g.cell[0][0]
	for y := range phashGrid {
		for x := range phashGrid {
			total += g.cell[y][x]
			ac[y][x] = float64(int64(g.cell[y][x] - base))
		}
	}
	// Rows first (horizontal frequencies u of each grid row), then columns. Each sum runs
	// over x (then y) in order, as a plain loop per coefficient would, so the results are the
	// same to the bit; the frequencies are the inner loop only so that the sums proceed side
	// by side instead of each waiting on its previous addition.
	var rowF [phashGrid][phashSide]float64
	for y := range phashGrid {
		var s [phashSide]float64
		for x := range phashGrid {
			a := ac[y][x]
			for u := range phashSide {
				s[u] += a * cos[u][x]
			}
		}
		rowF[y] = s
	}
	var coef [phashSide * phashSide]float64
	for y := range phashGrid {
		for v := range phashSide {
			c := cos[v][y]
			for u := range phashSide {
				coef[v*phashSide+u] += rowF[y][u] * c
			}
		}
	}
	coef[0] = float64(total) // the DC term: every basis value is 1
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

// lumaRows reads an image's rows as luma (BT.601, in 1/256 levels), composited over white.
type lumaRows struct {
	img image.Image
	// luma holds one row of per-pixel luma for the image types read a pixel at a time.
	luma []uint64
	pal  [256]uint64 // a Paletted image's colours as luma
}

func newLumaRows(img image.Image) *lumaRows {
	r := &lumaRows{img: img}
	switch m := img.(type) {
	case *image.RGBA, *image.YCbCr, *image.Gray:
		return r // summed in place
	case *image.Paletted:
		for i := range r.pal {
			if i < len(m.Palette) {
				r.pal[i] = lumaOverWhite(m.Palette[i].RGBA())
			} else if len(m.Palette) > 0 { // an index past the palette: see rowSource.set
				r.pal[i] = lumaOverWhite(m.Palette[0].RGBA())
			}
		}
	}
	r.luma = make([]uint64, img.Bounds().Dx())
	return r
}

// Luma weights, BT.601's 0.299, 0.587 and 0.114 in 8-bit fixed point. They sum to 256, so
// a grey level v has luma exactly v<<8; finer weights would overflow the sums of a 40
// megapixel image.
const (
	lumaR = 77
	lumaG = 150
	lumaB = 29
)

// edges sets edge[i] to F at boundary i of row y (absolute): see greyGrid.fill.
func (r *lumaRows) edges(y int, xb *[phashGrid + 1]cellBound, edge *[phashGrid + 1]uint64) {
	b := r.img.Bounds()
	w := b.Dx()
	switch m := r.img.(type) {
	case *image.RGBA:
		i := m.PixOffset(b.Min.X, y)
		px := m.Pix[i : i+4*w]
		// Premultiplied colour over white: each channel plus 255-a.
		var sr, sg, sb, sa uint64
		x := 0
		for k := range edge {
			at := xb[k].at
			run := px[4*x : 4*at]
			for ; len(run) >= 8; run = run[8:] { // two pixels a turn: half the loop overhead
				sr += uint64(run[0]) + uint64(run[4])
				sg += uint64(run[1]) + uint64(run[5])
				sb += uint64(run[2]) + uint64(run[6])
				sa += uint64(run[3]) + uint64(run[7])
			}
			if len(run) >= 4 {
				sr, sg, sb, sa = sr+uint64(run[0]), sg+uint64(run[1]), sb+uint64(run[2]), sa+uint64(run[3])
			}
			x = at
			white := 255*uint64(at) - sa
			f := 32 * (lumaR*(sr+white) + lumaG*(sg+white) + lumaB*(sb+white))
			if xb[k].frac != 0 {
				p := px[4*at : 4*at+4 : 4*at+4]
				pw := 255 - uint64(p[3])
				f += xb[k].frac * (lumaR*(uint64(p[0])+pw) + lumaG*(uint64(p[1])+pw) + lumaB*(uint64(p[2])+pw))
			}
			edge[k] = f
		}
	case *image.Gray:
		i := m.PixOffset(b.Min.X, y)
		grey8Edges(m.Pix[i:i+w], xb, edge)
	case *image.YCbCr: // Y is the luma
		i := m.YOffset(b.Min.X, y)
		grey8Edges(m.Y[i:i+w], xb, edge)
	default:
		row := r.luma
		r.pixels(y, row)
		var s uint64
		x := 0
		for k := range edge {
			at := xb[k].at
			for _, v := range row[x:at] {
				s += v
			}
			x = at
			edge[k] = 32 * s
			if xb[k].frac != 0 {
				edge[k] += xb[k].frac * row[at]
			}
		}
	}
}

// pixels sets row[x] to the luma of pixel x of row y (absolute): the values edges sums, one
// per pixel, for the summed-area table of a window search (Windows).
func (r *lumaRows) pixels(y int, row []uint64) {
	b := r.img.Bounds()
	w := b.Dx()
	switch m := r.img.(type) {
	case *image.RGBA:
		i := m.PixOffset(b.Min.X, y)
		px := m.Pix[i : i+4*w]
		for x := range row {
			p := px[4*x : 4*x+4 : 4*x+4]
			pw := 255 - uint64(p[3])
			row[x] = lumaR*(uint64(p[0])+pw) + lumaG*(uint64(p[1])+pw) + lumaB*(uint64(p[2])+pw)
		}
	case *image.Gray:
		i := m.PixOffset(b.Min.X, y)
		for x, v := range m.Pix[i : i+w] {
			row[x] = uint64(v) << 8
		}
	case *image.YCbCr:
		i := m.YOffset(b.Min.X, y)
		for x, v := range m.Y[i : i+w] {
			row[x] = uint64(v) << 8
		}
	case *image.Paletted:
		i := m.PixOffset(b.Min.X, y)
		for x, v := range m.Pix[i : i+w] {
			row[x] = r.pal[v]
		}
	case *image.NRGBA:
		i := m.PixOffset(b.Min.X, y)
		px := m.Pix[i : i+4*w]
		for x := range row {
			p := px[4*x : 4*x+4 : 4*x+4]
			a := uint32(p[3]) * 0x101
			// Premultiplied as image/color does it, then over white.
			row[x] = lumaOverWhite(uint32(p[0])*a/0xff, uint32(p[1])*a/0xff, uint32(p[2])*a/0xff, a)
		}
	default:
		for x := range row {
			row[x] = lumaOverWhite(m.At(b.Min.X+x, y).RGBA())
		}
	}
}

// grey8Edges is edges for a row of 8-bit grey levels.
func grey8Edges(row []uint8, xb *[phashGrid + 1]cellBound, edge *[phashGrid + 1]uint64) {
	var s uint64
	x := 0
	for k := range edge {
		at := xb[k].at
		for _, v := range row[x:at] {
			s += uint64(v)
		}
		x = at
		f := 32 * s
		if xb[k].frac != 0 {
			f += xb[k].frac * uint64(row[at])
		}
		edge[k] = f << 8
	}
}

// lumaOverWhite is the luma, in 1/256 levels of 8 bits, of a premultiplied 16-bit colour
// over white. The channels are taken to 8 bits first, so that an 8-bit colour read through
// image.Image agrees with the same colour read in place.
func lumaOverWhite(r, g, b, a uint32) uint64 {
	over := 0xffff - a
	r8, g8, b8 := uint64((r+over)>>8), uint64((g+over)>>8), uint64((b+over)>>8)
	return lumaR*r8 + lumaG*g8 + lumaB*b8
}
