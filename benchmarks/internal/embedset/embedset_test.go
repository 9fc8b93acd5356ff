package embedset

import (
	"image"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestUpscaleGrey(t *testing.T) {
	dst := image.NewRGBA(image.Rect(0, 0, 224, 224))
	flat := make([]float32, 28*28)
	for i := range flat {
		flat[i] = 77
	}
	if err := upscaleGrey(dst, flat, 28, 28); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(dst.Pix); i += 4 {
		if p := dst.Pix[i : i+4]; p[0] != 77 || p[1] != 77 || p[2] != 77 || p[3] != 255 {
			t.Fatalf("a flat image upscaled to %v at %d", p, i/4)
		}
	}
	// A left-to-right ramp stays monotone, and the corners keep the corner pixels.
	for y := range 28 {
		for x := range 28 {
			flat[y*28+x] = float32(x * 9)
		}
	}
	if err := upscaleGrey(dst, flat, 28, 28); err != nil {
		t.Fatal(err)
	}
	row := dst.Pix[100*dst.Stride:]
	for x := 1; x < 224; x++ {
		if row[4*x] < row[4*(x-1)] {
			t.Fatalf("ramp not monotone at x=%d", x)
		}
	}
	if row[0] != 0 || row[4*223] != 27*9 {
		t.Fatalf("edges %d and %d, want 0 and %d", row[0], row[4*223], 27*9)
	}
	if err := upscaleGrey(dst, flat[:10], 28, 28); err == nil {
		t.Fatal("accepted an image of the wrong size")
	}
}

func TestSynthetic(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	real := make([][]float32, 50)
	for i := range real {
		real[i] = make([]float32, 16)
		var ss float64
		for d := range real[i] {
			real[i][d] = float32(rng.Float64())
			ss += float64(real[i][d] * real[i][d])
		}
		for d := range real[i] {
			real[i][d] /= float32(math.Sqrt(ss))
		}
	}
	a := Synthetic(real, 500, 0.01, 7)
	b := Synthetic(real, 500, 0.01, 7)
	if len(a) != 500 {
		t.Fatalf("%d vectors", len(a))
	}
	for i := range a {
		if !slices.Equal(a[i], b[i]) {
			t.Fatalf("vector %d differs between two runs with the same seed", i)
		}
		if i < len(real) && !slices.Equal(a[i], real[i]) {
			t.Fatalf("vector %d is not the real vector", i)
		}
		var ss float64
		for _, x := range a[i] {
			ss += float64(x) * float64(x)
		}
		if math.Abs(ss-1) > 1e-4 {
			t.Fatalf("vector %d has squared norm %v", i, ss)
		}
	}
	if slices.Equal(a[100], a[101]) {
		t.Fatal("two synthetic vectors are equal")
	}
}
