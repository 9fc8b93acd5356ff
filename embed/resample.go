package embed

import (
	"image"
	"math"
)

// The fused resampler: a separable triangle filter that goes from the decoded pixels straight
// to the float32 tensor, without the RGBA canvas and the second pass over it.
//
// It reproduces golang.org/x/image/draw.BiLinear into an RGBA canvas, value for value, for
// opaque RGBA, Gray, YCbCr and Paletted sources: the same taps (the triangle's support
// widened by the scale factor when shrinking, the antialiasing Pillow's BILINEAR also does;
// no tap outside the source rectangle; each output's weights renormalised), the same float64
// arithmetic in the same order, and the same rounding of every value to 8 bits before it is
// normalised. The rounding is kept on purpose: the int8 model is so sensitive to its input
// that one tensor value one 8-bit level away can move a vector to cosine 0.98 with the old
// one, so a resampler that is merely close would change the vectors as much as the decoder
// choice does. Being exact, it keeps the Spec's "bilinear" and the model Identity honest
// (TestFusedResampleMatchesXImageTensors, TestFusedResampleEmbeddingsMatchXImage). Sources
// with alpha are composited over white per source pixel instead of after resampling, which
// can differ by one level.
//
// What makes it faster: the horizontal pass reads the decoded rows in place and keeps only
// the few rows the vertical taps need (a ring, in cache, instead of a width x source-height
// buffer of four float64 channels), the alpha channel is not carried, and the vertical pass
// writes the normalised value through a 256-entry table straight into the tensor, turned by
// the EXIF orientation. On a clothing photo (400x533, cropped 350x350 to 224x224) it takes
// 0.50 ms against 1.46 ms for x/image into the canvas plus Normalize (BenchmarkPreprocess,
// one core, 2026-11-28); about 60% of it is the horizontal pass.

// maxCachedAxes bounds a Preprocessor's weight cache; a catalogue of photos of many sizes
// would otherwise grow it without end. Computing one axis costs a few microseconds.
const maxCachedAxes = 64

// axisWeights are the taps of the triangle filter along one axis: output i reads source
// samples start[i], start[i]+1, ... with the weights w[off[i]:off[i+1]], which are the raw
// triangle values; inv[i] is the reciprocal of their sum and invFFFF[i] that over 0xffff,
// as x/image keeps them.
type axisWeights struct {
	start   []int32
	off     []int32
	w       []float64
	inv     []float64
	invFFFF []float64
	// maxTaps is the longest run of taps of any output.
	maxTaps int
	// When every output has at most four taps (scales up to about 1.5x... 2x, the common
	// case after libjpeg-turbo's DCT scaling), start4 and w4 hold them padded to exactly
	// four with zero weights, so the horizontal pass runs without an inner loop. The padding
	// changes no sum: the products are +0 and the partial sums are never negative.
	start4 []int32
	w4     []float64
}

// axisKey names an axis by its source and output length: the weights depend on nothing else,
// because they are relative to the source rectangle's first sample.
type axisKey struct{ src, dst int }

// triangleWeights computes the taps that map srcLen samples onto dstLen, the way
// x/image/draw's Kernel.Scale does for BiLinear: support 1, widened by the scale when
// shrinking, centres at (i+0.5)*scale-0.5, in float64 and in its order of operations.
func triangleWeights(srcLen, dstLen int) *axisWeights {
	scale := float64(srcLen) / float64(dstLen)
	halfWidth, argScale := 1.0, 1.0
	if scale > 1 {
		halfWidth, argScale = scale, 1/scale
	}
	a := &axisWeights{
		start:   make([]int32, dstLen),
		off:     make([]int32, dstLen+1),
		w:       make([]float64, 0, dstLen*(int(2*halfWidth)+2)),
		inv:     make([]float64, dstLen),
		invFFFF: make([]float64, dstLen),
	}
	for i := range dstLen {
		center := float64((float64(i)+0.5)*scale) - 0.5
		lo := max(0, int(math.Floor(center-halfWidth)))
		hi := min(srcLen, int(math.Ceil(center+halfWidth)))
		first, total := -1, 0.0
		for c := lo; c < hi; c++ {
			t := math.Abs((center - float64(c)) * argScale)
			if t >= 1 {
				if first >= 0 {
					break // past the far end of the triangle
				}
				continue
			}
			if first < 0 {
				first = c
			}
			a.w = append(a.w, 1-t)
			total += 1 - t
		}
		if first < 0 { // cannot happen for srcLen >= 1, but never divide by zero
			first, total = min(max(0, int(center+0.5)), srcLen-1), 1
			a.w = append(a.w, 1)
		}
		a.start[i] = int32(first)
		a.inv[i] = 1 / total
		a.invFFFF[i] = a.inv[i] / 0xffff
		a.off[i+1] = int32(len(a.w))
		a.maxTaps = max(a.maxTaps, int(a.off[i+1]-a.off[i]))
	}
	if a.maxTaps <= 4 && srcLen >= 4 {
		a.start4 = make([]int32, dstLen)
		a.w4 = make([]float64, 4*dstLen)
		for i := range dstLen {
			ws := a.w[a.off[i]:a.off[i+1]]
			s, pad := int(a.start[i]), 4-len(ws)
			at := 0 // zeros after the taps...
			if s+4 > srcLen {
				s, at = s-pad, pad // ...or before them at the right edge
			}
			a.start4[i] = int32(s)
			copy(a.w4[4*i+at:], ws)
		}
	}
	return a
}

// axis returns the cached weights for an axis, computing them on first use.
func (p *Preprocessor) axis(srcLen, dstLen int) *axisWeights {
	k := axisKey{srcLen, dstLen}
	if a, ok := p.axes[k]; ok {
		return a
	}
	if len(p.axes) >= maxCachedAxes {
		clear(p.axes)
	}
	a := triangleWeights(srcLen, dstLen)
	p.axes[k] = a
	return a
}

// rowSource hands out the pixels of one source row, limited to the source rectangle's
// columns. An opaque *image.RGBA row is read in place (4 bytes a pixel); every other type
// is converted into buf as 16-bit R, G, B, unused, composited over white, with the values
// x/image's conversions give.
type rowSource struct {
	x0, x1 int
	opaque bool     // *image.RGBA known to be opaque: rows are read in place
	buf    []uint16 // 4*(x1-x0) values for converted rows
	// One of these is set: the typed view of the image.
	rgba  *image.RGBA
	nrgba *image.NRGBA
	ycc   *image.YCbCr
	gray  *image.Gray
	paled *image.Paletted
	pal   [256][4]uint16 // paled's colours composited over white
}

// set prepares rs for img's rows over [x0, x1). It reports false for image types the
// resampler does not read (16-bit, CMYK, YCbCr with alpha...): those take the x/image path.
func (rs *rowSource) set(img image.Image, x0, x1 int, knownOpaque bool, buf []uint16) bool {
	*rs = rowSource{x0: x0, x1: x1, buf: buf[:4*(x1-x0)]}
	switch m := img.(type) {
	case *image.RGBA:
		rs.rgba = m
		rs.opaque = knownOpaque
	case *image.NRGBA:
		rs.nrgba = m
	case *image.YCbCr:
		rs.ycc = m
	case *image.Gray:
		rs.gray = m
	case *image.Paletted:
		if len(m.Palette) == 0 {
			return false
		}
		rs.paled = m
		for i := range rs.pal {
			// An index beyond the palette has no colour; image.Paletted.At would fail on
			// it, so any value will do. Use the first colour.
			c := m.Palette[0]
			if i < len(m.Palette) {
				c = m.Palette[i]
			}
			r, g, b, a := c.RGBA() // premultiplied, 16-bit
			over := 0xffff - a
			rs.pal[i] = [4]uint16{uint16(r + over), uint16(g + over), uint16(b + over), 0xffff}
		}
	default:
		return false
	}
	return true
}

// inPlace returns image row y (absolute coordinate) over [x0, x1) as RGBA bytes when the
// image is an opaque RGBA, nil otherwise.
func (rs *rowSource) inPlace(y int) []uint8 {
	if !rs.opaque {
		return nil
	}
	i := rs.rgba.PixOffset(rs.x0, y)
	return rs.rgba.Pix[i : i+4*(rs.x1-rs.x0)]
}

// converted returns image row y over [x0, x1) as 16-bit RGBX over white. The slice is valid
// until the next call.
func (rs *rowSource) converted(y int) []uint16 {
	n := rs.x1 - rs.x0
	out := rs.buf
	switch {
	case rs.rgba != nil:
		// Premultiplied colour over white: c + (max - a), in 16 bits.
		m := rs.rgba
		i := m.PixOffset(rs.x0, y)
		src := m.Pix[i : i+4*n]
		for x := 0; x < n; x++ {
			s := src[4*x : 4*x+4 : 4*x+4]
			over := 0xffff - uint32(s[3])*0x101
			d := out[4*x : 4*x+4 : 4*x+4]
			d[0] = uint16(min(0xffff, uint32(s[0])*0x101+over))
			d[1] = uint16(min(0xffff, uint32(s[1])*0x101+over))
			d[2] = uint16(min(0xffff, uint32(s[2])*0x101+over))
		}
	case rs.nrgba != nil:
		// Premultiplied the way x/image's NRGBA reader does it, then over white.
		m := rs.nrgba
		i := m.PixOffset(rs.x0, y)
		src := m.Pix[i : i+4*n]
		for x := 0; x < n; x++ {
			s := src[4*x : 4*x+4 : 4*x+4]
			a := uint32(s[3]) * 0x101
			over := 0xffff - a
			d := out[4*x : 4*x+4 : 4*x+4]
			d[0] = uint16(uint32(s[0])*a/0xff + over)
			d[1] = uint16(uint32(s[1])*a/0xff + over)
			d[2] = uint16(uint32(s[2])*a/0xff + over)
		}
	case rs.gray != nil:
		m := rs.gray
		i := m.PixOffset(rs.x0, y)
		for x, v := range m.Pix[i : i+n] {
			g := uint16(v) * 0x101
			d := out[4*x : 4*x+4 : 4*x+4]
			d[0], d[1], d[2] = g, g, g
		}
	case rs.paled != nil:
		m := rs.paled
		i := m.PixOffset(rs.x0, y)
		for x, v := range m.Pix[i : i+n] {
			copy(out[4*x:4*x+4], rs.pal[v][:])
		}
	case rs.ycc != nil:
		m := rs.ycc
		yi := m.YOffset(rs.x0, y)
		for x := 0; x < n; x++ {
			ci := m.COffset(rs.x0+x, y)
			d := out[4*x : 4*x+4 : 4*x+4]
			d[0], d[1], d[2] = ycbcrToRGB16(m.Y[yi+x], m.Cb[ci], m.Cr[ci])
		}
	}
	return out
}

// ycbcrToRGB16 is JFIF's conversion to 16 bits a channel, in the fixed point that
// image/color's YCbCr.RGBA and x/image's YCbCr readers use.
func ycbcrToRGB16(y, cb, cr uint8) (uint16, uint16, uint16) {
	yy := int32(y) * 0x10101
	cb1 := int32(cb) - 128
	cr1 := int32(cr) - 128
	return clamp16((yy + 91881*cr1) >> 8), clamp16((yy - 22554*cb1 - 46802*cr1) >> 8), clamp16((yy + 116130*cb1) >> 8)
}

func clamp16(v int32) uint16 {
	return uint16(min(max(v, 0), 0xffff))
}

// The horizontal pass: one source row into len(a.start) outputs of each channel, each the
// 16-bit-scaled weighted sum times inv/0xffff, which leaves it in 0..1 as in x/image. The
// float64(...) around each product keeps the compiler from fusing it into the sum, so the
// rounding is the one x/image's code gets.

func (a *axisWeights) filterRow8(r, g, b []float64, px []uint8, levels *[256]float64) {
	r, g, b = r[:len(a.start)], g[:len(a.start)], b[:len(a.start)]
	if a.start4 != nil {
		for i, s := range a.start4 {
			p := px[4*int(s) : 4*int(s)+15 : 4*int(s)+15]
			w := a.w4[4*i : 4*i+4 : 4*i+4]
			sr := float64(levels[p[0]] * w[0])
			sg := float64(levels[p[1]] * w[0])
			sb := float64(levels[p[2]] * w[0])
			sr += float64(levels[p[4]] * w[1])
			sg += float64(levels[p[5]] * w[1])
			sb += float64(levels[p[6]] * w[1])
			sr += float64(levels[p[8]] * w[2])
			sg += float64(levels[p[9]] * w[2])
			sb += float64(levels[p[10]] * w[2])
			sr += float64(levels[p[12]] * w[3])
			sg += float64(levels[p[13]] * w[3])
			sb += float64(levels[p[14]] * w[3])
			f := a.invFFFF[i]
			r[i], g[i], b[i] = sr*f, sg*f, sb*f
		}
		return
	}
	for i, s := range a.start {
		ws := a.w[a.off[i]:a.off[i+1]]
		p := px[4*int(s) : 4*int(s)+4*len(ws)]
		var sr, sg, sb float64
		for k, w := range ws {
			q := p[4*k : 4*k+3 : 4*k+3]
			sr += float64(levels[q[0]] * w)
			sg += float64(levels[q[1]] * w)
			sb += float64(levels[q[2]] * w)
		}
		f := a.invFFFF[i]
		r[i], g[i], b[i] = sr*f, sg*f, sb*f
	}
}

func (a *axisWeights) filterRow16(r, g, b []float64, px []uint16) {
	r, g, b = r[:len(a.start)], g[:len(a.start)], b[:len(a.start)]
	for i, s := range a.start {
		ws := a.w[a.off[i]:a.off[i+1]]
		p := px[4*int(s) : 4*int(s)+4*len(ws)]
		var sr, sg, sb float64
		for k, w := range ws {
			q := p[4*k : 4*k+3 : 4*k+3]
			sr += float64(float64(q[0]) * w)
			sg += float64(float64(q[1]) * w)
			sb += float64(float64(q[2]) * w)
		}
		f := a.invFFFF[i]
		r[i], g[i], b[i] = sr*f, sg*f, sb*f
	}
}

// resampleInto writes the decoded image, resized, cropped, turned and normalised, into dst.
// It reports false, having written nothing, when the image type needs the x/image path.
func (p *Preprocessor) resampleInto(dst []float32, d Decoded, o int) bool {
	// Resize and crop in the stored frame; the turn happens when writing the tensor.
	tw, th := p.spec.Width, p.spec.Height
	if o >= 5 {
		tw, th = th, tw
	}
	sr := p.sourceRect(d.Image.Bounds(), tw, th)
	W := p.spec.Width // shown width: the tensor's row length
	n := p.spec.Width * p.spec.Height
	nhwc := p.spec.Layout == LayoutNHWC
	// A JPEG has no alpha channel, so its RGBA pixels need no compositing and are read in place.
	return p.resample(d.Image, sr, tw, th, d.Format == FormatJPEG, func(y, c int, acc []float64, inv float64) {
		k := p.srcChan[c] // the tensor channel fed by source channel c (the order is its own inverse)
		base, step := orientedIndex(o, y, tw, th, W)
		lut := &p.levels[k]
		switch {
		case nhwc:
			for x, a := range acc {
				dst[3*(base+x*step)+k] = lut[canvasLevel(a*inv)]
			}
		case step == 1:
			out := dst[k*n+base : k*n+base+tw]
			for x, a := range acc {
				out[x] = lut[canvasLevel(a*inv)]
			}
		default:
			pl := dst[k*n : (k+1)*n]
			for x, a := range acc {
				pl[base+x*step] = lut[canvasLevel(a*inv)]
			}
		}
	})
}

// resampleRGBA resizes the whole of src into dst (origin at (0,0)) with the triangle
// filter, composited over white, the 8-bit levels x/image's BiLinear writes for the types
// the fused resampler reads. It reports false, having written nothing, for other types.
func (p *Preprocessor) resampleRGBA(dst *image.RGBA, src image.Image, knownOpaque bool) bool {
	tw, th := dst.Rect.Dx(), dst.Rect.Dy()
	return p.resample(src, src.Bounds(), tw, th, knownOpaque, func(y, c int, acc []float64, inv float64) {
		row := dst.Pix[y*dst.Stride : y*dst.Stride+4*tw]
		for x, a := range acc {
			row[4*x+c] = canvasLevel(a * inv)
		}
		if c == 0 {
			for x := 3; x < len(row); x += 4 {
				row[x] = 0xff
			}
		}
	})
}

// resample runs the triangle filter from the sr part of src to a tw x th target, handing
// each output row y of each source channel c (0 red, 1 green, 2 blue) to emit as weighted
// sums that times inv are in 0..1. It reports false, having emitted nothing, when the image
// type needs the x/image path.
func (p *Preprocessor) resample(src image.Image, sr image.Rectangle, tw, th int, knownOpaque bool,
	emit func(y, c int, acc []float64, inv float64)) bool {
	sw, sh := sr.Dx(), sr.Dy()
	if cap(p.rowBuf) < 4*sw {
		p.rowBuf = make([]uint16, 4*sw)
	}
	if !p.rows.set(src, sr.Min.X, sr.Max.X, knownOpaque, p.rowBuf) {
		return false
	}
	h, v := p.axis(sw, tw), p.axis(sh, th)

	// The ring holds the horizontally resized rows the vertical taps still need: source row r
	// (relative to the rectangle) lives in slot r % ring, three channel rows of tw each. The
	// taps of successive outputs start at non-decreasing rows, so a ring as long as the
	// longest run of taps never overwrites a row still needed.
	ring := v.maxTaps
	if cap(p.ring) < 3*ring*tw {
		p.ring = make([]float64, 3*ring*tw)
	}
	buf := p.ring[:3*ring*tw]
	slot := func(r, c int) []float64 {
		o := (3*(r%ring) + c) * tw
		return buf[o : o+tw : o+tw]
	}
	next := 0 // the next source row to resize horizontally

	if cap(p.acc) < tw {
		p.acc = make([]float64, tw)
	}
	acc := p.acc[:tw]
	var taps [3][][]float64
	for c := range taps {
		taps[c] = p.taps[c][:0]
	}
	for y := 0; y < th; y++ {
		r0 := int(v.start[y])
		ws := v.w[v.off[y]:v.off[y+1]]
		for ; next < r0+len(ws); next++ {
			if px := p.rows.inPlace(sr.Min.Y + next); px != nil {
				h.filterRow8(slot(next, 0), slot(next, 1), slot(next, 2), px, &p.wide)
			} else {
				h.filterRow16(slot(next, 0), slot(next, 1), slot(next, 2), p.rows.converted(sr.Min.Y+next))
			}
		}
		for c := range taps {
			taps[c] = taps[c][:0]
			for k := range ws {
				taps[c] = append(taps[c], slot(r0+k, c))
			}
		}
		for c := 0; c < 3; c++ {
			verticalRow(acc, taps[c], ws)
			emit(y, c, acc, v.inv[y])
		}
	}
	for c := range taps {
		p.taps[c] = taps[c][:0]
	}
	return true
}

// verticalRow sets out[x] = sum_k ws[k] * rows[k][x], in x/image's order and rounding.
func verticalRow(out []float64, rows [][]float64, ws []float64) {
	switch len(ws) {
	case 3:
		r0, r1, r2 := rows[0][:len(out)], rows[1][:len(out)], rows[2][:len(out)]
		w0, w1, w2 := ws[0], ws[1], ws[2]
		for x := range out {
			v := float64(r0[x] * w0)
			v += float64(r1[x] * w1)
			v += float64(r2[x] * w2)
			out[x] = v
		}
		return
	case 4:
		r0, r1, r2, r3 := rows[0][:len(out)], rows[1][:len(out)], rows[2][:len(out)], rows[3][:len(out)]
		w0, w1, w2, w3 := ws[0], ws[1], ws[2], ws[3]
		for x := range out {
			v := float64(r0[x] * w0)
			v += float64(r1[x] * w1)
			v += float64(r2[x] * w2)
			v += float64(r3[x] * w3)
			out[x] = v
		}
		return
	}
	w0, row := ws[0], rows[0][:len(out)]
	for x := range out {
		out[x] = float64(row[x] * w0)
	}
	for k := 1; k < len(ws); k++ {
		w, row := ws[k], rows[k][:len(out)]
		for x := range out {
			out[x] += float64(row[x] * w)
		}
	}
}

// canvasLevel is the 8-bit level x/image writes into an RGBA canvas for the value f
// (0..1): it rounds f to 16 bits and keeps the high byte.
func canvasLevel(f float64) uint8 {
	v := int32(float64(0xffff*f) + 0.5)
	if v > 0xffff {
		v = 0xffff
	}
	return uint8(v >> 8)
}

// orientedIndex maps stored-frame pixel (x, y) of a tw x th stored target to the shown
// frame: its index in a row-major plane with rows of W is base + x*step. The cases follow
// orientInto's.
func orientedIndex(o, y, tw, th, W int) (base, step int) {
	switch o {
	case 2: // mirrored left-right
		return y*W + tw - 1, -1
	case 3: // turned 180
		return (th-1-y)*W + tw - 1, -1
	case 4: // mirrored top-bottom
		return (th - 1 - y) * W, 1
	case 5: // transposed
		return y, W
	case 6: // turn 90 clockwise to show
		return th - 1 - y, W
	case 7: // transversed
		return (tw-1)*W + th - 1 - y, -W
	case 8: // turn 90 anticlockwise to show
		return (tw-1)*W + y, -W
	default:
		return y * W, 1
	}
}
