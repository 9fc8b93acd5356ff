package embed

import (
	"errors"
	"image"
	"image/color"
	"os"
	"testing"
)

// FuzzDecode feeds arbitrary bytes through Decode and the preprocessing Embed runs after it.
// Whatever the input, the result is an image that preprocesses, or one of the three
// decoding errors; never a panic, never an unbounded allocation (the limits are small).
// The seeds cover each format, the bad inputs of TestDecodeBadInputs and an EXIF header.
func FuzzDecode(f *testing.F) {
	small := twoColour(16, 12, color.NRGBA{255, 0, 0, 255}, color.NRGBA{0, 0, 255, 128})
	jpg := encodeJPEG(f, small, 80)
	f.Add(jpg)
	f.Add(jpg[:len(jpg)/2])
	f.Add(withEXIFOrientation(jpg, 6, false))
	f.Add(withEXIFOrientation(jpg, 3, true))
	f.Add(encodePNG(f, small))
	f.Add(pngHeaderClaiming(30000, 30000))
	f.Add(pngHeaderClaiming(5, 5))
	f.Add([]byte("GIF89a\x10\x00\x10\x00"))
	f.Add([]byte("RIFF\x04\x00\x00\x00WEBP"))
	f.Add(encodeBMP(f, small))
	f.Add(bmpV4(small))
	f.Add(bmpHeaderClaiming(5, 5, 8, 0))
	f.Add(bmpHeaderClaiming(5000, 5000, 24, 0))
	f.Add([]byte{})
	f.Add([]byte("plain text"))
	for _, name := range []string{"cmyk.jpg", "lossy.webp", "lossless_alpha.webp"} {
		b, err := os.ReadFile("testdata/" + name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	spec := DefaultSpec()
	spec.Width, spec.Height, spec.Resize.ShorterSide = 32, 32, 36
	p, err := NewPreprocessor(spec)
	if err != nil {
		f.Fatal(err)
	}
	tensor := make([]float32, spec.TensorLen())
	lim := Limits{MaxBytes: 1 << 20, MaxPixels: 1 << 20}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, pure := range []bool{false, true} {
			d, err := Decode(data, DecodeOptions{Limits: lim, PureGo: pure, MinShortSide: 36})
			if err != nil {
				if !errors.Is(err, ErrUnsupportedFormat) && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrTooLarge) {
					t.Fatalf("error outside the three kinds: %v", err)
				}
				continue
			}
			if d.Image == nil || d.Image.Bounds().Empty() {
				t.Fatalf("no error and no image")
			}
			if int64(d.Width)*int64(d.Height) > lim.MaxPixels {
				t.Fatalf("accepted %dx%d over the pixel limit", d.Width, d.Height)
			}
			if err := p.Into(tensor, d); err != nil {
				t.Fatalf("preprocess a decoded image: %v", err)
			}
			_ = d.Upright().Bounds()
		}
	})
}

// FuzzJPEGOrientation checks the EXIF parser alone (Decode's recover would hide its panics):
// any bytes give an orientation from 1 to 8.
func FuzzJPEGOrientation(f *testing.F) {
	jpg := encodeJPEG(f, image.NewGray(image.Rect(0, 0, 8, 8)), 90)
	for o := uint16(0); o <= 9; o++ {
		f.Add(withEXIFOrientation(jpg, o, o%2 == 0))
	}
	f.Add([]byte{0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x10, 'E', 'x', 'i', 'f', 0, 0, 'M', 'M', 0, 42, 0xFF, 0xFF, 0xFF, 0xFF})
	f.Add([]byte{0xFF, 0xD8})
	f.Fuzz(func(t *testing.T, data []byte) {
		if o := jpegOrientation(data); o < 1 || o > 8 {
			t.Fatalf("orientation %d", o)
		}
	})
}
