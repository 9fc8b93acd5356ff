package main

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/jpeg"
	"os"

	"golang.org/x/image/draw"
)

func runRecompress(ctx context.Context, a *app, args []string) error {
	fs := newFlagSet(a, "recompress", "[flags] IN OUT.jpg",
		"Re-encode an image as JPEG, optionally scaled: a quick way to make the near-duplicate a\n"+
			"marketplace seller would upload (same photo, different bytes) to try 'lookalike search'\n"+
			"or 'lookalike dedup' against.")
	quality := fs.Int("quality", 60, "JPEG quality 1..100")
	scale := fs.Float64("scale", 1, "resize factor, e.g. 0.5 for half size (0 < scale <= 4)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return usagef("want IN and OUT, got %d arguments", fs.NArg())
	}
	if *quality < 1 || *quality > 100 {
		return usagef("--quality must be in 1..100, got %d", *quality)
	}
	if *scale <= 0 || *scale > 4 {
		return usagef("--scale must be in (0, 4], got %g", *scale)
	}
	in, out := fs.Arg(0), fs.Arg(1)
	data, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	src, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("decode %s: %w", in, err)
	}
	img := src
	if *scale != 1 {
		b := src.Bounds()
		w, h := max(1, int(float64(b.Dx())**scale)), max(1, int(float64(b.Dy())**scale))
		dst := image.NewRGBA(image.Rect(0, 0, w, h))
		draw.CatmullRom.Scale(dst, dst.Bounds(), src, b, draw.Src, nil)
		img = dst
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: *quality}); err != nil {
		return fmt.Errorf("encode: %w", err)
	}
	if err := os.WriteFile(out, buf.Bytes(), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "wrote %s: %dx%d, quality %d, %d bytes (was %d)\n", out, img.Bounds().Dx(), img.Bounds().Dy(), *quality, buf.Len(), len(data))
	return ctx.Err()
}
