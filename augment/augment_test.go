package augment

import (
	"bytes"
	"image"
	"image/color"
	"image/jpeg"
	"math/rand/v2"
	"slices"
	"testing"
)

func testImage() *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, 200, 120))
	for y := range 120 {
		for x := range 200 {
			img.SetRGBA(x, y, color.RGBA{uint8(x), uint8(2 * y), 200, 255})
		}
	}
	return img
}

func TestCopiesMakesEveryKindDecodable(t *testing.T) {
	copies, err := Copies(testImage(), rand.New(rand.NewPCG(1, 2)))
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, c := range copies {
		kinds = append(kinds, c.Kind)
		img, err := jpeg.Decode(bytes.NewReader(c.Image))
		if err != nil {
			t.Fatalf("%s: %v", c.Kind, err)
		}
		w, h := img.Bounds().Dx(), img.Bounds().Dy()
		switch c.Kind {
		case "resize-50":
			if w != 100 || h != 60 {
				t.Errorf("%s is %dx%d", c.Kind, w, h)
			}
		case "crop", "rotate":
			if w >= 200 || h >= 120 || w < 150 || h < 90 {
				t.Errorf("%s is %dx%d, want a light crop of 200x120", c.Kind, w, h)
			}
		default:
			if w < 150 || h < 90 {
				t.Errorf("%s is %dx%d", c.Kind, w, h)
			}
		}
	}
	if !slices.Equal(kinds, Kinds()) {
		t.Errorf("kinds %v, want %v", kinds, Kinds())
	}
}

func TestCopiesAreReproducible(t *testing.T) {
	a, _ := Copies(testImage(), rand.New(rand.NewPCG(7, 7)))
	b, _ := Copies(testImage(), rand.New(rand.NewPCG(7, 7)))
	for i := range a {
		if !bytes.Equal(a[i].Image, b[i].Image) {
			t.Errorf("%s differs between two runs of one seed", a[i].Kind)
		}
	}
}

func TestRotateLeavesNoEmptyCorner(t *testing.T) {
	src := image.NewRGBA(image.Rect(0, 0, 100, 80))
	for i := range src.Pix {
		src.Pix[i] = 255
	}
	out := rotate(src, 3)
	for _, p := range []image.Point{{0, 0}, {out.Rect.Dx() - 1, 0}, {0, out.Rect.Dy() - 1}, {out.Rect.Dx() - 1, out.Rect.Dy() - 1}} {
		if c := out.RGBAAt(p.X, p.Y); c.R < 200 || c.A < 200 {
			t.Errorf("corner %v is %v: the rotation left it unfilled", p, c)
		}
	}
}

func TestFlipMirrors(t *testing.T) {
	src := testImage()
	out := flip(src)
	if out.RGBAAt(0, 5) != src.RGBAAt(199, 5) || out.RGBAAt(199, 7) != src.RGBAAt(0, 7) {
		t.Error("flip did not mirror left and right")
	}
}

func TestCopiesRefusesTinyImages(t *testing.T) {
	if _, err := Copies(image.NewRGBA(image.Rect(0, 0, 4, 4)), rand.New(rand.NewPCG(1, 1))); err == nil {
		t.Error("a 4x4 image was copied")
	}
}
