package embed

import (
	"fmt"
	"image"
	"image/color"

	"golang.org/x/image/draw"
)

// Preprocessor turns a decoded image into one model input. With the bilinear kernel and the
// decoded types the decoders produce (RGBA, NRGBA, YCbCr, Gray, Paletted) Into runs the
// fused resampler (resample.go): straight from the decoded pixels to the normalised tensor.
// Other kernels and image types resize with x/image/draw into a Width x Height canvas, then
// normalise it. It keeps its buffers between calls, so use one per goroutine.
type Preprocessor struct {
	spec   Spec
	scaler draw.Scaler
	// fused selects the fused resampler for the image types it reads; false keeps every
	// image on the x/image path (tests and benchmarks compare the two).
	fused bool
	axes  map[axisKey]*axisWeights
	rows  rowSource
	// rowBuf holds one converted source row, ring the horizontally resized rows the
	// vertical taps need, acc one output row of one channel, taps the rows it reads.
	rowBuf []uint16
	ring   []float64
	acc    []float64
	taps   [3][][]float64
	// levels[k] maps an 8-bit level of the source channel feeding tensor channel k to its
	// normalised value.
	levels [3][256]float32
	// wide maps an 8-bit level to the 16-bit value x/image computes with (v * 0x101).
	wide [256]float64
	// scale and bias map an 8-bit pixel of tensor channel k to (v*PixelScale/255-mean)/std.
	scale, bias [3]float32
	// srcChan[k] is the RGBA byte offset feeding tensor channel k (RGB or BGR order).
	srcChan [3]int
	canvas  *image.RGBA // Width x Height, the image as shown
	// flipped (Width x Height) and turned (Height x Width) hold the stored-frame crop of
	// an image whose EXIF orientation is not 1, before it is turned into canvas.
	flipped, turned *image.RGBA
}

// NewPreprocessor returns a Preprocessor for the spec.
func NewPreprocessor(s Spec) (*Preprocessor, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	p := &Preprocessor{
		spec:   s,
		scaler: kernelScaler(s.Resize.Kernel),
		fused:  s.Resize.Kernel == KernelBiLinear,
		axes:   make(map[axisKey]*axisWeights),
	}
	for v := range p.wide {
		p.wide[v] = float64(uint32(v) * 0x101)
	}
	for k := 0; k < 3; k++ {
		p.scale[k] = s.PixelScale / 255 / s.Std[k]
		p.bias[k] = -s.Mean[k] / s.Std[k]
		p.srcChan[k] = k
		if s.Channels == ChannelsBGR {
			p.srcChan[k] = 2 - k
		}
		for v := range p.levels[k] {
			p.levels[k][v] = float32(v)*p.scale[k] + p.bias[k]
		}
	}
	p.canvas = image.NewRGBA(image.Rect(0, 0, s.Width, s.Height))
	return p, nil
}

func kernelScaler(name string) draw.Scaler {
	switch name {
	case KernelApproxBiLinear:
		return draw.ApproxBiLinear
	case KernelCatmullRom:
		return draw.CatmullRom
	case KernelNearest:
		return draw.NearestNeighbor
	default:
		return draw.BiLinear
	}
}

// Into resizes and crops the decoded image, turned by its EXIF orientation, and writes it
// normalised into dst, which must hold Spec.TensorLen() values.
func (p *Preprocessor) Into(dst []float32, d Decoded) error {
	if len(dst) < p.spec.TensorLen() {
		return fmt.Errorf("embed: preprocess: tensor holds %d values, want %d", len(dst), p.spec.TensorLen())
	}
	if err := d.checkPixels(); err != nil {
		return err
	}
	if p.fused && p.resampleInto(dst, d, d.orientation()) {
		return nil
	}
	canvas, err := p.Resize(d)
	if err != nil {
		return err
	}
	return p.Normalize(dst, canvas)
}

// Resize resizes and crops the decoded image by the Spec into the Width x Height canvas with
// x/image/draw, turning it by its EXIF orientation; transparent pixels are composited over
// white. The returned image is reused by the next call. Into does not go through it for the
// images the fused resampler reads; it stays for the other kernels and image types, and
// for callers that want the picture the model sees.
func (p *Preprocessor) Resize(d Decoded) (*image.RGBA, error) {
	if err := d.checkPixels(); err != nil {
		return nil, err
	}
	src := d.Image
	sb := src.Bounds()
	o := d.orientation()
	// Resizing and centre-cropping commute with the eight EXIF turns, so the work happens on
	// the stored pixels and only the small result is turned.
	target := p.canvas
	switch {
	case o >= 5:
		if p.turned == nil {
			p.turned = image.NewRGBA(image.Rect(0, 0, p.spec.Height, p.spec.Width))
		}
		target = p.turned
	case o > 1:
		if p.flipped == nil {
			p.flipped = image.NewRGBA(image.Rect(0, 0, p.spec.Width, p.spec.Height))
		}
		target = p.flipped
	}
	srcRect := p.sourceRect(sb, target.Rect.Dx(), target.Rect.Dy())

	op := draw.Src
	if !isOpaque(src) {
		// Alpha over white: the model never saw transparency, and white is what a product
		// photo with a cut-out background is shown on.
		fillWhite(target)
		op = draw.Over
	}
	p.scaler.Scale(target, target.Rect, src, srcRect, op, nil)
	if o != 1 {
		orientInto(p.canvas, target, o)
	}
	return p.canvas, nil
}

// sourceRect is the part of the stored image (bounds sb) that maps onto a tw x th target:
// the whole image for ResizeStretch, the centred crop for ResizeShorterThenCrop.
func (p *Preprocessor) sourceRect(sb image.Rectangle, tw, th int) image.Rectangle {
	if p.spec.Resize.Policy == ResizeStretch {
		return sb
	}
	w, h := sb.Dx(), sb.Dy()
	// Scaling the shorter side to ShorterSide and cutting tw x th from the middle equals
	// cutting (tw, th) * shorter/ShorterSide from the middle of the original.
	f := float64(min(w, h)) / float64(p.spec.Resize.ShorterSide)
	cw := max(1, min(w, int(float64(tw)*f+0.5)))
	ch := max(1, min(h, int(float64(th)*f+0.5)))
	x0 := sb.Min.X + (w-cw)/2
	y0 := sb.Min.Y + (h-ch)/2
	return image.Rect(x0, y0, x0+cw, y0+ch)
}

// Normalize writes the canvas (Width x Height RGBA) into dst in the Spec's layout, channel
// order and normalisation.
func (p *Preprocessor) Normalize(dst []float32, canvas *image.RGBA) error {
	w, h := p.spec.Width, p.spec.Height
	if canvas.Rect.Dx() != w || canvas.Rect.Dy() != h {
		return fmt.Errorf("embed: normalise: canvas is %v, want %dx%d", canvas.Rect.Size(), w, h)
	}
	n := w * h
	if len(dst) < 3*n {
		return fmt.Errorf("embed: normalise: tensor holds %d values, want %d", len(dst), 3*n)
	}
	c0, c1, c2 := p.srcChan[0], p.srcChan[1], p.srcChan[2]
	s0, s1, s2 := p.scale[0], p.scale[1], p.scale[2]
	b0, b1, b2 := p.bias[0], p.bias[1], p.bias[2]
	if p.spec.Layout == LayoutNHWC {
		out := dst[:3*n]
		for y := 0; y < h; y++ {
			row := canvas.Pix[y*canvas.Stride : y*canvas.Stride+4*w]
			o := out[3*y*w : 3*(y+1)*w]
			for x := 0; x < w; x++ {
				px := row[4*x : 4*x+4]
				o[3*x] = float32(px[c0])*s0 + b0
				o[3*x+1] = float32(px[c1])*s1 + b1
				o[3*x+2] = float32(px[c2])*s2 + b2
			}
		}
		return nil
	}
	p0, p1, p2 := dst[:n], dst[n:2*n], dst[2*n:3*n]
	for y := 0; y < h; y++ {
		row := canvas.Pix[y*canvas.Stride : y*canvas.Stride+4*w]
		q0, q1, q2 := p0[y*w:(y+1)*w], p1[y*w:(y+1)*w], p2[y*w:(y+1)*w]
		for x := range q0 {
			px := row[4*x : 4*x+4]
			q0[x] = float32(px[c0])*s0 + b0
			q1[x] = float32(px[c1])*s1 + b1
			q2[x] = float32(px[c2])*s2 + b2
		}
	}
	return nil
}

// isOpaque reports whether every pixel of img is opaque, for the image types that know.
func isOpaque(img image.Image) bool {
	if o, ok := img.(interface{ Opaque() bool }); ok {
		return o.Opaque()
	}
	return false
}

func fillWhite(img *image.RGBA) {
	draw.Draw(img, img.Rect, image.NewUniform(color.White), image.Point{}, draw.Src)
}
