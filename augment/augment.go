package augment

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/jpeg"
	"math"
	"math/rand/v2"

	xdraw "golang.org/x/image/draw"
	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/f64"
	"golang.org/x/image/math/fixed"
)

// Copy is one synthetic copy of a photo.
type Copy struct {
	// Kind names the edit ("jpeg-q50", "crop", "flip", ...).
	Kind string
	// Image is the copy, JPEG-encoded.
	Image []byte
}

// Kinds lists every edit Copies makes, in its order.
func Kinds() []string {
	return []string{"jpeg-q50", "jpeg-q75", "resize-50", "resize-75", "crop", "rotate", "brighten", "contrast", "flip", "caption"}
}

// outputQuality is the JPEG quality of copies whose edit is not the quality itself: what a
// seller's phone or shop software would typically save.
const outputQuality = 88

// Copies makes one copy of img per kind. rng draws the crop window, the angle and the
// strength of the colour edits, so the same seed gives the same copies.
func Copies(img image.Image, rng *rand.Rand) ([]Copy, error) {
	src := toRGBA(img)
	b := src.Bounds()
	w, h := b.Dx(), b.Dy()
	if w < 8 || h < 8 {
		return nil, fmt.Errorf("augment: image of %dx%d is too small to copy", w, h)
	}
	type edit struct {
		kind    string
		img     image.Image
		quality int
	}
	// Crops keep 80-95% of each side at a random offset; rotations turn by 1-3 degrees either
	// way and crop back to the largest upright rectangle, as an editor does.
	cropFrac := 0.80 + 0.15*rng.Float64()
	cw, ch := int(float64(w)*cropFrac), int(float64(h)*cropFrac)
	cx, cy := rng.IntN(w-cw+1), rng.IntN(h-ch+1)
	angle := (1 + 2*rng.Float64()) * math.Copysign(1, rng.Float64()-0.5)
	edits := []edit{
		{"jpeg-q50", src, 50},
		{"jpeg-q75", src, 75},
		{"resize-50", scale(src, 0.5), outputQuality},
		{"resize-75", scale(src, 0.75), outputQuality},
		{"crop", src.SubImage(image.Rect(b.Min.X+cx, b.Min.Y+cy, b.Min.X+cx+cw, b.Min.Y+cy+ch)), outputQuality},
		{"rotate", rotate(src, angle), outputQuality},
		{"brighten", adjust(src, 1, 20+20*rng.Float64()), outputQuality},
		{"contrast", adjust(src, 0.75+0.1*rng.Float64(), 0), outputQuality},
		{"flip", flip(src), outputQuality},
		{"caption", caption(src, "SALE -30% www.example-shop.com"), outputQuality},
	}
	out := make([]Copy, 0, len(edits))
	for _, e := range edits {
		var buf bytes.Buffer
		if err := jpeg.Encode(&buf, e.img, &jpeg.Options{Quality: e.quality}); err != nil {
			return nil, fmt.Errorf("augment: encode %s: %w", e.kind, err)
		}
		out = append(out, Copy{Kind: e.kind, Image: buf.Bytes()})
	}
	return out, nil
}

func toRGBA(img image.Image) *image.RGBA {
	if r, ok := img.(*image.RGBA); ok {
		return r
	}
	b := img.Bounds()
	out := image.NewRGBA(image.Rect(0, 0, b.Dx(), b.Dy()))
	draw.Draw(out, out.Rect, img, b.Min, draw.Src)
	return out
}

func scale(src *image.RGBA, f float64) *image.RGBA {
	b := src.Bounds()
	w, h := max(1, int(float64(b.Dx())*f+0.5)), max(1, int(float64(b.Dy())*f+0.5))
	out := image.NewRGBA(image.Rect(0, 0, w, h))
	xdraw.BiLinear.Scale(out, out.Rect, src, b, xdraw.Src, nil)
	return out
}

// rotate turns src by deg degrees about its centre and crops to the largest axis-aligned
// rectangle inside the turned image, so no corner is filled in.
func rotate(src *image.RGBA, deg float64) *image.RGBA {
	b := src.Bounds()
	w, h := float64(b.Dx()), float64(b.Dy())
	th := deg * math.Pi / 180
	sin, cos := math.Abs(math.Sin(th)), math.Cos(th)
	// The largest upright rectangle of the same aspect inside a w x h image turned by th.
	k := min(w/(w*cos+h*sin), h/(w*sin+h*cos))
	ow, oh := max(1, int(w*k)), max(1, int(h*k))
	out := image.NewRGBA(image.Rect(0, 0, ow, oh))
	s, c := math.Sin(th), math.Cos(th)
	// Maps an output pixel to the source: centre, turn, back to the source's centre.
	ox, oy := float64(ow)/2, float64(oh)/2
	cx, cy := float64(b.Min.X)+w/2, float64(b.Min.Y)+h/2
	m := f64.Aff3{
		c, -s, cx - c*ox + s*oy,
		s, c, cy - s*ox - c*oy,
	}
	// Transform wants the source-to-destination matrix.
	inv := invert(m)
	xdraw.BiLinear.Transform(out, inv, src, b, xdraw.Src, nil)
	return out
}

func invert(m f64.Aff3) f64.Aff3 {
	det := m[0]*m[4] - m[1]*m[3]
	a, bb, c, d := m[4]/det, -m[1]/det, -m[3]/det, m[0]/det
	return f64.Aff3{a, bb, -(a*m[2] + bb*m[5]), c, d, -(c*m[2] + d*m[5])}
}

// adjust scales every channel's distance from mid-grey by contrast and adds brightness.
func adjust(src *image.RGBA, contrast, brightness float64) *image.RGBA {
	out := image.NewRGBA(src.Rect)
	for i := 0; i+3 < len(src.Pix); i += 4 {
		for j := range 3 {
			v := (float64(src.Pix[i+j])-128)*contrast + 128 + brightness
			out.Pix[i+j] = uint8(max(0, min(255, math.Round(v))))
		}
		out.Pix[i+3] = src.Pix[i+3]
	}
	return out
}

func flip(src *image.RGBA) *image.RGBA {
	b := src.Bounds()
	out := image.NewRGBA(image.Rect(0, 0, b.Dx(), b.Dy()))
	for y := 0; y < b.Dy(); y++ {
		for x := 0; x < b.Dx(); x++ {
			out.SetRGBA(b.Dx()-1-x, y, src.RGBAAt(b.Min.X+x, b.Min.Y+y))
		}
	}
	return out
}

// caption draws a white band with black text across the lower part, as a shop's banner.
func caption(src *image.RGBA, text string) *image.RGBA {
	b := src.Bounds()
	out := image.NewRGBA(image.Rect(0, 0, b.Dx(), b.Dy()))
	draw.Draw(out, out.Rect, src, b.Min, draw.Src)
	face := basicfont.Face7x13
	band := image.Rect(0, b.Dy()*4/5, b.Dx(), b.Dy()*4/5+18)
	draw.Draw(out, band, image.NewUniform(color.White), image.Point{}, draw.Src)
	d := font.Drawer{Dst: out, Src: image.NewUniform(color.Black), Face: face,
		Dot: fixed.P(4, band.Min.Y+14)}
	d.DrawString(text)
	return out
}
