// Command webp writes the WebP test images: lossy.webp (64x48, left half red, right half
// blue) and lossless_alpha.webp (the same with a fully transparent right half). Run from
// the repository root: go run ./embed/testdata/gen/webp embed/testdata
//
// Go ignores testdata/, so go.mod does not require its encoder; add it for the run with
// `go get github.com/gen2brain/webp@v0.5.5` and leave go.mod unchanged afterwards.
package main

import (
	"image"
	"image/color"
	"log"
	"os"
	"path/filepath"

	"github.com/gen2brain/webp"
)

func main() {
	dir := "."
	if len(os.Args) > 1 {
		dir = os.Args[1]
	}
	opaque := image.NewNRGBA(image.Rect(0, 0, 64, 48))
	alpha := image.NewNRGBA(image.Rect(0, 0, 64, 48))
	for y := 0; y < 48; y++ {
		for x := 0; x < 64; x++ {
			if x < 32 {
				opaque.Set(x, y, color.NRGBA{255, 0, 0, 255})
				alpha.Set(x, y, color.NRGBA{255, 0, 0, 255})
			} else {
				opaque.Set(x, y, color.NRGBA{0, 0, 255, 255})
				alpha.Set(x, y, color.NRGBA{0, 0, 255, 0})
			}
		}
	}
	write(filepath.Join(dir, "lossy.webp"), opaque, webp.Options{Quality: 90})
	write(filepath.Join(dir, "lossless_alpha.webp"), alpha, webp.Options{Lossless: true, Exact: true})
}

func write(path string, img image.Image, opt webp.Options) {
	f, err := os.Create(path)
	if err != nil {
		log.Fatal(err)
	}
	if err := webp.Encode(f, img, opt); err != nil {
		log.Fatal(err)
	}
	if err := f.Close(); err != nil {
		log.Fatal(err)
	}
}
