package embed

import (
	"context"
	"fmt"
	"image"

	"golang.org/x/image/draw"
)

// KeptQuality is the JPEG quality of kept photos.
const KeptQuality = 90

// AnalyzeOptions says what Analyze derives besides the vector.
type AnalyzeOptions struct {
	// Keep asks for the kept photo (Analysis.Kept).
	Keep bool
}

// Analysis is everything derived from one photo, all from one decode.
type Analysis struct {
	// Vector is the L2-normalised embedding, exactly what Embed returns for the same bytes.
	Vector []float32
	// PHash is a 64-bit DCT perceptual hash of the decoded, EXIF-oriented pixels, and
	// PHashMirror the same hash of the picture mirrored left to right, so that a mirrored
	// copy can be told from a different picture.
	PHash       uint64
	PHashMirror uint64
	// Kept is the photo as the model sees it before cropping, JPEG-encoded (nil unless asked).
	Kept []byte
}

// Analyze decodes a photo once and returns its embedding, its perceptual hash and, when
// asked, the kept photo. Errors are those of Embed.
//
// The hash and the kept photo are made in the caller's goroutine while the model runs on
// the photo's tensor, within the same decode slot, so they add CPU work but little latency.
// The kept photo is the decoded image turned upright and composited over white, resized
// with the bilinear kernel (x/image's BiLinear levels) so that its shorter side is the
// Spec's Resize.ShorterSide, or its largest view's when larger (the whole Width x Height for
// ResizeStretch, each side capped at the source's), never enlarged; a large JPEG is resized
// from its DCT-scaled decode, which is never smaller than that. It is encoded with
// libjpeg-turbo, 4:2:0 chroma.
func (e *Embedder) Analyze(ctx context.Context, image []byte, opt AnalyzeOptions) (Analysis, error) {
	return e.analyze(ctx, image, derive{phash: true, keep: opt.Keep})
}

// derive says what analyze computes besides the vector.
type derive struct {
	phash, keep bool
}

// analyze is Embed and Analyze: decode and preprocess in a decode slot, queue the tensor,
// derive what was asked from the decoded pixels while the model runs, then wait for the
// vector.
func (e *Embedder) analyze(ctx context.Context, image []byte, want derive) (Analysis, error) {
	if e.isClosed() {
		return Analysis{}, ErrClosed
	}
	// Checked first so that a caller who has given up gets the same error every time, not
	// whichever of the two ready cases below the select happens to pick.
	if err := ctx.Err(); err != nil {
		return Analysis{}, fmt.Errorf("embed: waiting to decode: %w", err)
	}
	select {
	case e.decodes <- struct{}{}:
	case <-ctx.Done():
		return Analysis{}, fmt.Errorf("embed: waiting to decode: %w", ctx.Err())
	}
	w := e.workers.Get().(*prepWorker)
	d, err := Decode(image, e.DecodeOptions())
	var reqs []*request
	if err == nil {
		reqs, err = e.submitViews(ctx, w, d)
	}
	if err != nil {
		<-e.decodes
		if len(reqs) == 0 {
			e.workers.Put(w) // else a queued view may still be read; leave it to the GC
		}
		return Analysis{}, err
	}
	var a Analysis
	var keepErr error
	if want.phash {
		a.PHash, a.PHashMirror = phashDecoded(d)
	}
	if want.keep {
		a.Kept, keepErr = w.keep(d, e.spec)
	}
	<-e.decodes
	vec, inFlight, err := e.awaitViews(ctx, reqs)
	if !inFlight {
		e.workers.Put(w) // a cancelled request may still be read by a batch; leave it to the GC
	}
	if err != nil {
		return Analysis{}, err
	}
	if keepErr != nil {
		return Analysis{}, keepErr
	}
	a.Vector = vec
	return a, nil
}

// maxKeptSide is the longest side a JPEG can have (65535, less libjpeg's margin); a kept
// panorama longer than that is shrunk to fit rather than refused.
const maxKeptSide = 65500

// keptSize is the stored-frame size of the kept photo of a w x h stored image shown at EXIF
// orientation o.
func keptSize(s Spec, w, h, o int) (int, int) {
	var tw, th int
	// With views, the largest view's shorter side, so that a view re-embedded from the kept
	// photo is not cut from an enlarged one.
	switch short, side := min(w, h), max(s.Resize.ShorterSide, s.maxShorterSide()); {
	case s.Resize.Policy == ResizeStretch:
		tw, th = s.Width, s.Height
		if o >= 5 { // the stored frame is the shown one turned a quarter
			tw, th = th, tw
		}
		tw, th = min(tw, w), min(th, h)
	case short <= side:
		tw, th = w, h
	case w <= h:
		tw, th = side, max(1, int(float64(h)*float64(side)/float64(w)+0.5))
	default:
		tw, th = max(1, int(float64(w)*float64(side)/float64(h)+0.5)), side
	}
	if long := max(tw, th); long > maxKeptSide {
		f := float64(maxKeptSide) / float64(long)
		tw, th = max(1, min(maxKeptSide, int(float64(tw)*f+0.5))), max(1, min(maxKeptSide, int(float64(th)*f+0.5)))
	}
	return tw, th
}

// keep makes the kept photo of d: resized in the stored frame, then turned, as Resize does,
// because turning the small image is cheaper. It runs on the worker's Preprocessor (free
// once the tensor is written) and canvases.
func (w *prepWorker) keep(d Decoded, s Spec) ([]byte, error) {
	src := d.Image
	sb := src.Bounds()
	o := d.orientation()
	tw, th := keptSize(s, sb.Dx(), sb.Dy(), o)
	dst := reuseRGBA(&w.kept, tw, th)
	// A JPEG has no alpha, and RGBA.Opaque would read every pixel to find that out.
	opaque := d.Format == FormatJPEG || isOpaque(src)
	switch {
	case tw == sb.Dx() && th == sb.Dy():
		copyOverWhite(dst, src, opaque)
	case w.prep.resampleRGBA(dst, src, opaque):
		// The fused resampler's horizontal pass: about three times x/image's speed, same levels.
	default:
		op := draw.Src
		if !opaque {
			fillWhite(dst)
			op = draw.Over
		}
		draw.BiLinear.Scale(dst, dst.Rect, src, sb, op, nil)
	}
	if o != 1 {
		sw, sh := orientedSize(tw, th, o)
		up := reuseRGBA(&w.keptUp, sw, sh)
		orientInto(up, dst, o)
		dst = up
	}
	return turboEncode(dst, KeptQuality)
}

// copyOverWhite copies src into dst, of the same size, composited over white.
func copyOverWhite(dst *image.RGBA, src image.Image, opaque bool) {
	op := draw.Src
	if !opaque {
		fillWhite(dst)
		op = draw.Over
	}
	draw.Draw(dst, dst.Rect, src, src.Bounds().Min, op)
}

// reuseRGBA returns *img resized to w x h, reusing its pixels when they are large enough;
// the contents are undefined.
func reuseRGBA(img **image.RGBA, w, h int) *image.RGBA {
	if *img == nil || cap((*img).Pix) < 4*w*h {
		*img = image.NewRGBA(image.Rect(0, 0, w, h))
		return *img
	}
	m := *img
	m.Pix, m.Stride, m.Rect = m.Pix[:4*w*h], 4*w, image.Rect(0, 0, w, h)
	return m
}
