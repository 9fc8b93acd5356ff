package embed

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/color/palette"
	"image/gif"
	"image/jpeg"
	"image/png"
	"os"
	"runtime"
	"testing"

	"golang.org/x/image/bmp"
)

// twoColour is a w x h image whose left half is left and right half is right.
func twoColour(w, h int, left, right color.Color) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			if x < w/2 {
				img.Set(x, y, left)
			} else {
				img.Set(x, y, right)
			}
		}
	}
	return img
}

func encodePNG(t testing.TB, img image.Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func encodeJPEG(t testing.TB, img image.Image, quality int) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: quality}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// pngHeaderClaiming is a PNG signature and a valid IHDR declaring w x h RGB pixels, with no
// image data after it: a decompression-bomb header.
func pngHeaderClaiming(w, h uint32) []byte {
	var ihdr bytes.Buffer
	ihdr.WriteString("IHDR")
	binary.Write(&ihdr, binary.BigEndian, w)
	binary.Write(&ihdr, binary.BigEndian, h)
	ihdr.Write([]byte{8, 2, 0, 0, 0}) // 8-bit RGB, deflate, no filter method, no interlace
	var out bytes.Buffer
	out.WriteString("\x89PNG\r\n\x1a\n")
	binary.Write(&out, binary.BigEndian, uint32(ihdr.Len()-4))
	out.Write(ihdr.Bytes())
	binary.Write(&out, binary.BigEndian, crc32.ChecksumIEEE(ihdr.Bytes()))
	return out.Bytes()
}

// bmpHeaderClaiming is a BMP file header and BITMAPINFOHEADER declaring w x h pixels of bpp
// bits with the given compression, followed by zeroed pixel rows only when they are 24-bit
// and fewer than a million (so a big claim stays a header).
func bmpHeaderClaiming(w, h int32, bpp uint16, compression uint32) []byte {
	var out bytes.Buffer
	le := binary.LittleEndian
	offset := uint32(54)
	if bpp <= 8 {
		offset += 4 << bpp // a full palette
	}
	out.WriteString("BM")
	binary.Write(&out, le, uint32(0)) // file size: readers ignore it
	binary.Write(&out, le, uint32(0))
	binary.Write(&out, le, offset)
	binary.Write(&out, le, uint32(40))
	binary.Write(&out, le, w)
	binary.Write(&out, le, h)
	binary.Write(&out, le, uint16(1))
	binary.Write(&out, le, bpp)
	binary.Write(&out, le, compression)
	out.Write(make([]byte, 20)) // image size, resolution, colours used and important
	out.Write(make([]byte, offset-54))
	if bpp == 24 && int64(w)*int64(h) < 1_000_000 {
		out.Write(make([]byte, int((3*w+3)&^3)*int(h)))
	}
	return out.Bytes()
}

// bmpV4 encodes img as a 32-bit top-down BMP with a BITMAPV4HEADER and bit-field masks for
// BGRA, the form whose alpha x/image honours (bmp.Encode writes the older header, whose
// alpha it ignores).
func bmpV4(img *image.NRGBA) []byte {
	w, h := img.Rect.Dx(), img.Rect.Dy()
	var out bytes.Buffer
	le := binary.LittleEndian
	out.WriteString("BM")
	binary.Write(&out, le, uint32(14+108+4*w*h))
	binary.Write(&out, le, uint32(0))
	binary.Write(&out, le, uint32(14+108))
	binary.Write(&out, le, uint32(108))
	binary.Write(&out, le, int32(w))
	binary.Write(&out, le, int32(-h)) // top-down
	binary.Write(&out, le, uint16(1))
	binary.Write(&out, le, uint16(32))
	binary.Write(&out, le, uint32(3)) // BI_BITFIELDS
	binary.Write(&out, le, uint32(4*w*h))
	out.Write(make([]byte, 16)) // resolution, colours used and important
	for _, mask := range []uint32{0xff0000, 0xff00, 0xff, 0xff000000} {
		binary.Write(&out, le, mask)
	}
	out.Write(make([]byte, 108-56)) // colour space, end points, gamma
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			c := img.NRGBAAt(x, y)
			out.Write([]byte{c.B, c.G, c.R, c.A})
		}
	}
	return out.Bytes()
}

func encodeBMP(t testing.TB, img image.Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := bmp.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// withEXIFOrientation inserts an APP1 EXIF segment carrying the orientation after the SOI.
func withEXIFOrientation(jpg []byte, orientation uint16, bigEndian bool) []byte {
	var tiff bytes.Buffer
	var bo binary.ByteOrder = binary.LittleEndian
	tiff.WriteString("II")
	if bigEndian {
		bo = binary.BigEndian
		tiff.Reset()
		tiff.WriteString("MM")
	}
	binary.Write(&tiff, bo, uint16(42))
	binary.Write(&tiff, bo, uint32(8))
	binary.Write(&tiff, bo, uint16(2)) // two entries: a decoy tag first
	binary.Write(&tiff, bo, uint16(0x010F))
	binary.Write(&tiff, bo, uint16(2))
	binary.Write(&tiff, bo, uint32(4))
	tiff.WriteString("Go\x00\x00")
	binary.Write(&tiff, bo, uint16(0x0112))
	binary.Write(&tiff, bo, uint16(3))
	binary.Write(&tiff, bo, uint32(1))
	binary.Write(&tiff, bo, orientation)
	binary.Write(&tiff, bo, uint16(0))
	binary.Write(&tiff, bo, uint32(0)) // no next IFD
	payload := append([]byte("Exif\x00\x00"), tiff.Bytes()...)
	seg := []byte{0xFF, 0xE1, 0, 0}
	binary.BigEndian.PutUint16(seg[2:], uint16(len(payload)+2))
	out := append([]byte{}, jpg[:2]...)
	out = append(out, seg...)
	out = append(out, payload...)
	return append(out, jpg[2:]...)
}

// stretchCanvas decodes data and resizes it (nearest, stretched) to w x h, oriented and
// composited over white, the way Embed does.
func stretchCanvas(t testing.TB, data []byte, w, h int, opt DecodeOptions) (*image.RGBA, Decoded) {
	t.Helper()
	d := decodeWith(t, data, opt)
	s := DefaultSpec()
	s.Width, s.Height = w, h
	s.Resize = Resize{Policy: ResizeStretch, Kernel: KernelNearest}
	p, err := NewPreprocessor(s)
	if err != nil {
		t.Fatal(err)
	}
	c, err := p.Resize(d)
	if err != nil {
		t.Fatal(err)
	}
	return c, d
}

func near(c color.RGBA, r, g, b uint8, tol int) bool {
	d := func(a, b uint8) bool { x := int(a) - int(b); return x <= tol && x >= -tol }
	return d(c.R, r) && d(c.G, g) && d(c.B, b)
}

func TestDecodeBadInputs(t *testing.T) {
	photo := readFile(t, photos(t, "clothing", 1)[0].Path)
	tests := []struct {
		name string
		data []byte
		lim  Limits
		want error
	}{
		{"empty", nil, Limits{}, ErrUnsupportedFormat},
		{"text", []byte("this is not an image, just some words\n"), Limits{}, ErrUnsupportedFormat},
		{"bmp header cut short", []byte("BM\x36\x00\x00\x00\x00\x00\x00\x00\x36\x00"), Limits{}, ErrCorrupt},
		{"bmp header claiming 30000x30000", bmpHeaderClaiming(30000, 30000, 24, 0), Limits{}, ErrTooLarge},
		{"bmp header claiming 4000x4000 without pixels", bmpHeaderClaiming(4000, 4000, 24, 0), Limits{}, ErrCorrupt},
		{"bmp one row short", bmpHeaderClaiming(64, 48, 24, 0)[:54+64*3*47], Limits{}, ErrCorrupt},
		{"bmp rle8", bmpHeaderClaiming(64, 48, 8, 1), Limits{}, ErrUnsupportedFormat},
		{"bmp 16-bit", bmpHeaderClaiming(64, 48, 16, 0), Limits{}, ErrUnsupportedFormat},
		{"truncated jpeg", photo[:len(photo)/2], Limits{}, ErrCorrupt},
		{"jpeg header only", photo[:200], Limits{}, ErrCorrupt},
		{"jpeg start then junk", append([]byte{0xFF, 0xD8, 0xFF, 0xE0}, bytes.Repeat([]byte{0x13}, 100)...), Limits{}, ErrCorrupt},
		{"png header claiming 30000x30000", pngHeaderClaiming(30000, 30000), Limits{}, ErrTooLarge},
		{"png header claiming zero width", pngHeaderClaiming(0, 10), Limits{}, ErrCorrupt},
		{"png without data", pngHeaderClaiming(10, 10), Limits{}, ErrCorrupt},
		{"over the byte limit", photo, Limits{MaxBytes: int64(len(photo) - 1)}, ErrTooLarge},
		{"over the pixel limit", photo, Limits{MaxPixels: 1000}, ErrTooLarge},
		{"truncated gif", []byte("GIF89a\x10\x00\x10\x00"), Limits{}, ErrCorrupt},
		{"webp riff without payload", []byte("RIFF\x04\x00\x00\x00WEBP"), Limits{}, ErrCorrupt},
	}
	for _, tc := range tests {
		for _, pure := range []bool{false, true} {
			name := tc.name + "/libjpeg-turbo"
			if pure {
				name = tc.name + "/go"
			}
			t.Run(name, func(t *testing.T) {
				d, err := Decode(tc.data, DecodeOptions{Limits: tc.lim, PureGo: pure, MinShortSide: 256})
				if !errors.Is(err, tc.want) {
					t.Fatalf("err = %v, want %v", err, tc.want)
				}
				for _, other := range []error{ErrUnsupportedFormat, ErrCorrupt, ErrTooLarge} {
					if other != tc.want && errors.Is(err, other) {
						t.Fatalf("err = %v is also %v", err, other)
					}
				}
				if d.Image != nil {
					t.Fatalf("an image came back with the error")
				}
			})
		}
	}
}

func TestDecodeFormatsAndColourModels(t *testing.T) {
	red, blue := color.NRGBA{255, 0, 0, 255}, color.NRGBA{0, 0, 255, 255}
	pal := image.NewPaletted(image.Rect(0, 0, 64, 48), palette.Plan9)
	for y := 0; y < 48; y++ {
		for x := 0; x < 64; x++ {
			if x < 32 {
				pal.Set(x, y, red)
			} else {
				pal.Set(x, y, blue)
			}
		}
	}
	var gifBuf bytes.Buffer
	if err := gif.EncodeAll(&gifBuf, &gif.GIF{
		Image: []*image.Paletted{pal, image.NewPaletted(image.Rect(0, 0, 64, 48), palette.Plan9)},
		Delay: []int{10, 10},
	}); err != nil {
		t.Fatal(err)
	}
	gray := image.NewGray(image.Rect(0, 0, 64, 48))
	for y := 0; y < 48; y++ {
		for x := 0; x < 64; x++ {
			if x >= 32 {
				gray.SetGray(x, y, color.Gray{Y: 255})
			}
		}
	}
	readTestdata := func(name string) []byte {
		b, err := os.ReadFile("testdata/" + name)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	type rgb struct{ r, g, b uint8 }
	tests := []struct {
		name        string
		data        []byte
		format      string
		left, right rgb
		tol         int
	}{
		{"png rgb", encodePNG(t, twoColour(64, 48, red, blue)), FormatPNG, rgb{255, 0, 0}, rgb{0, 0, 255}, 0},
		{"png alpha over white", encodePNG(t, twoColour(64, 48, red, color.NRGBA{0, 0, 255, 0})), FormatPNG, rgb{255, 0, 0}, rgb{255, 255, 255}, 0},
		{"png half alpha over white", encodePNG(t, twoColour(64, 48, color.NRGBA{0, 0, 0, 128}, red)), FormatPNG, rgb{127, 127, 127}, rgb{255, 0, 0}, 1},
		{"png gray", encodePNG(t, gray), FormatPNG, rgb{0, 0, 0}, rgb{255, 255, 255}, 0},
		{"paletted gif, first frame", gifBuf.Bytes(), FormatGIF, rgb{255, 0, 0}, rgb{0, 0, 255}, 0},
		{"jpeg rgb", encodeJPEG(t, twoColour(64, 48, red, blue), 95), FormatJPEG, rgb{255, 0, 0}, rgb{0, 0, 255}, 12},
		{"jpeg gray", encodeJPEG(t, gray, 95), FormatJPEG, rgb{0, 0, 0}, rgb{255, 255, 255}, 6},
		{"jpeg cmyk (adobe, inverted)", readTestdata("cmyk.jpg"), FormatJPEG, rgb{255, 0, 0}, rgb{0, 0, 255}, 12},
		{"webp lossy", readTestdata("lossy.webp"), FormatWebP, rgb{255, 0, 0}, rgb{0, 0, 255}, 30},
		{"webp lossless alpha over white", readTestdata("lossless_alpha.webp"), FormatWebP, rgb{255, 0, 0}, rgb{255, 255, 255}, 0},
		{"bmp 24-bit", encodeBMP(t, twoColour(64, 48, red, blue)), FormatBMP, rgb{255, 0, 0}, rgb{0, 0, 255}, 0},
		{"bmp 8-bit paletted", encodeBMP(t, pal), FormatBMP, rgb{255, 0, 0}, rgb{0, 0, 255}, 0},
		{"bmp 8-bit gray", encodeBMP(t, gray), FormatBMP, rgb{0, 0, 0}, rgb{255, 255, 255}, 0},
		{"bmp 32-bit alpha over white", bmpV4(twoColour(64, 48, red, color.NRGBA{0, 0, 255, 0})), FormatBMP, rgb{255, 0, 0}, rgb{255, 255, 255}, 0},
		{"bmp 32-bit alpha all zero read as opaque", bmpV4(twoColour(64, 48, color.NRGBA{255, 0, 0, 0}, color.NRGBA{0, 0, 255, 0})), FormatBMP, rgb{255, 0, 0}, rgb{0, 0, 255}, 0},
	}
	for _, tc := range tests {
		for _, pure := range []bool{false, true} {
			name := tc.name + "/libjpeg-turbo"
			if pure {
				name = tc.name + "/go"
			}
			t.Run(name, func(t *testing.T) {
				c, d := stretchCanvas(t, tc.data, 32, 24, DecodeOptions{PureGo: pure})
				if d.Format != tc.format {
					t.Fatalf("format %q, want %q", d.Format, tc.format)
				}
				if d.Width != 64 || d.Height != 48 {
					t.Fatalf("size %dx%d, want 64x48", d.Width, d.Height)
				}
				l, r := c.RGBAAt(4, 12), c.RGBAAt(28, 12)
				if !near(l, tc.left.r, tc.left.g, tc.left.b, tc.tol) {
					t.Errorf("left pixel %v, want %v", l, tc.left)
				}
				if !near(r, tc.right.r, tc.right.g, tc.right.b, tc.tol) {
					t.Errorf("right pixel %v, want %v", r, tc.right)
				}
			})
		}
	}
}

// TestDecodeEXIFOrientation stores a picture turned each of the eight EXIF ways, tags it with
// the orientation that undoes the turn, and checks that both the full upright image and the
// model canvas show the original picture.
func TestDecodeEXIFOrientation(t *testing.T) {
	// The picture as it should be shown: 60x40, red top-left quadrant, blue elsewhere.
	const W, H = 60, 40
	shown := image.NewRGBA(image.Rect(0, 0, W, H))
	for y := 0; y < H; y++ {
		for x := 0; x < W; x++ {
			c := color.RGBA{0, 0, 255, 255}
			if x < W/2 && y < H/2 {
				c = color.RGBA{255, 0, 0, 255}
			}
			shown.SetRGBA(x, y, c)
		}
	}
	for o := 1; o <= 8; o++ {
		// stored is what a camera held at orientation o writes: shown == orient(stored, o).
		sw, sh := orientedSize(W, H, o)
		stored := image.NewRGBA(image.Rect(0, 0, sw, sh))
		// Find where each shown pixel comes from by orienting an index image.
		idx := image.NewRGBA(image.Rect(0, 0, sw, sh))
		for y := 0; y < sh; y++ {
			for x := 0; x < sw; x++ {
				idx.SetRGBA(x, y, color.RGBA{uint8(x), uint8(y), 0, 255})
			}
		}
		mapped := orient(idx, o)
		for y := 0; y < H; y++ {
			for x := 0; x < W; x++ {
				m := mapped.RGBAAt(x, y)
				stored.SetRGBA(int(m.R), int(m.G), shown.RGBAAt(x, y))
			}
		}
		for _, bigEndian := range []bool{false, true} {
			data := withEXIFOrientation(encodeJPEG(t, stored, 100), uint16(o), bigEndian)
			if got := jpegOrientation(data); got != o {
				t.Fatalf("orientation %d (big endian %v): parsed %d", o, bigEndian, got)
			}
			for _, pure := range []bool{false, true} {
				up := decodeWith(t, data, DecodeOptions{PureGo: pure}).Upright()
				if b := up.Bounds(); b.Dx() != W || b.Dy() != H {
					t.Fatalf("orientation %d: upright is %v, want %dx%d", o, b.Size(), W, H)
				}
				upRGBA := toRGBA(up)
				c, _ := stretchCanvas(t, data, 30, 20, DecodeOptions{PureGo: pure})
				checks := []struct {
					img        *image.RGBA
					x, y       int
					r, g, b    uint8
					whereShown string
				}{
					{upRGBA, 5, 5, 255, 0, 0, "upright top-left"},
					{upRGBA, W - 5, 5, 0, 0, 255, "upright top-right"},
					{upRGBA, 5, H - 5, 0, 0, 255, "upright bottom-left"},
					{c, 3, 3, 255, 0, 0, "canvas top-left"},
					{c, 27, 3, 0, 0, 255, "canvas top-right"},
					{c, 3, 17, 0, 0, 255, "canvas bottom-left"},
				}
				for _, ch := range checks {
					if got := ch.img.RGBAAt(ch.x, ch.y); !near(got, ch.r, ch.g, ch.b, 40) {
						t.Errorf("orientation %d (go %v): %s is %v, want (%d,%d,%d)", o, pure, ch.whereShown, got, ch.r, ch.g, ch.b)
					}
				}
			}
		}
	}
}

func TestJPEGOrientationMalformed(t *testing.T) {
	base := encodeJPEG(t, image.NewGray(image.Rect(0, 0, 8, 8)), 90)
	good := withEXIFOrientation(base, 6, false)
	tests := []struct {
		name string
		data []byte
		want int
	}{
		{"no exif", base, 1},
		{"exif 6", good, 6},
		{"orientation out of range", withEXIFOrientation(base, 9, false), 1},
		{"segment length past the end", good[:20], 1},
		{"not a jpeg", []byte("hello"), 1},
		{"empty", nil, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := jpegOrientation(tc.data); got != tc.want {
				t.Fatalf("got %d, want %d", got, tc.want)
			}
		})
	}
}

// TestDecodeReducedScale checks that libjpeg-turbo's DCT scaling keeps the shorter side at
// least MinShortSide long, and that the Go path decodes at full size.
func TestDecodeReducedScale(t *testing.T) {
	big := image.NewRGBA(image.Rect(0, 0, 1200, 900))
	for i := range big.Pix {
		big.Pix[i] = uint8(i * 7)
	}
	data := encodeJPEG(t, big, 85)
	for _, minShort := range []int{0, 100, 256, 450, 900, 2000} {
		d := decodeWith(t, data, DecodeOptions{MinShortSide: minShort})
		b := d.Image.Bounds()
		short := min(b.Dx(), b.Dy())
		if minShort > 0 && minShort <= 900 && short < minShort {
			t.Errorf("MinShortSide %d: decoded %v, shorter side too small", minShort, b.Size())
		}
		if minShort > 0 && short/2 >= minShort && short > 900/8 {
			t.Errorf("MinShortSide %d: decoded %v, could have been halved", minShort, b.Size())
		}
		if d.Width != 1200 || d.Height != 900 {
			t.Errorf("header size %dx%d", d.Width, d.Height)
		}
		if d.Decoder != "libjpeg-turbo" {
			t.Errorf("decoder %q", d.Decoder)
		}
	}
	d := decodeWith(t, data, DecodeOptions{MinShortSide: 256, PureGo: true})
	if b := d.Image.Bounds(); b.Dx() != 1200 || d.Decoder != "go" {
		t.Fatalf("pure Go decoded %v with %q", b.Size(), d.Decoder)
	}
}

// TestDecodeShortBMPRefusedFromItsHeader checks that a BMP too short for the pixels it
// declares is refused by the length check, before x/image allocates the image (64 MB here).
func TestDecodeShortBMPRefusedFromItsHeader(t *testing.T) {
	data := bmpHeaderClaiming(4000, 4000, 32, 0)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := Decode(data, DecodeOptions{})
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrCorrupt) || !errors.Is(err, errTruncated) {
		t.Fatalf("err = %v, want ErrCorrupt from the length check", err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 8<<20 {
		t.Errorf("refusing it allocated %d bytes", n)
	}
}
