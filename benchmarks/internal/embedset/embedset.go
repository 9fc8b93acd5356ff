// Package embedset builds the benchmarks' real 1280-d vector sets: the 70,000 Fashion-MNIST
// images embedded with the project's default model, cached on disk by model identity, and a
// larger set made from those real vectors for scale runs.
package embedset

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"image"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"lookalike/benchmarks/internal/benchkit"
	"lookalike/embed"
	"lookalike/internal/dataset"
)

// Fashion-MNIST has 60,000 training and 10,000 test images.
const (
	FashionMNISTTrain = 60000
	FashionMNISTTest  = 10000
)

// preprocessing names how a 28x28 grey image becomes the model input; it is part of the
// cache key, so changing the method invalidates old caches.
const preprocessing = "fashion-mnist/v1: 28x28 grey, bilinear upscale (pixel centres aligned) straight to the model's " +
	"input size, no crop, grey copied to R, G and B, then the model's own normalisation"

// Set is the embedded Fashion-MNIST: Train[i] is training image i, Test[i] test image i.
type Set struct {
	Train, Test [][]float32
	// Identity is the model identity (embed.Identity) the vectors come from.
	Identity string
	// Path is the cache file.
	Path string
}

// FashionMNIST returns the embeddings of all 70,000 Fashion-MNIST images with the default
// model (embed.FindModel), reading them from cacheDir when a cache for this model identity
// exists, else embedding them (a few minutes on two cores) and writing the cache.
func FashionMNIST(ctx context.Context, log *slog.Logger, cacheDir string) (Set, error) {
	modelPath, err := embed.FindModel()
	if err != nil {
		return Set{}, fmt.Errorf("embedset: %w", err)
	}
	spec, _, err := embed.ResolveSpec(modelPath, "")
	if err != nil {
		return Set{}, fmt.Errorf("embedset: %w", err)
	}
	model, err := os.ReadFile(modelPath)
	if err != nil {
		return Set{}, fmt.Errorf("embedset: %w", err)
	}
	identity := embed.Identity(filepath.Base(modelPath), model, spec)
	sum := sha256.Sum256([]byte(identity + "\n" + preprocessing))
	path := filepath.Join(cacheDir, "fashion-mnist-"+hex.EncodeToString(sum[:8])+".fvecs")
	set := Set{Identity: identity, Path: path}

	if rows, err := benchkit.ReadFvecs(path); err == nil && len(rows) == FashionMNISTTrain+FashionMNISTTest {
		log.Info("Fashion-MNIST embeddings from the cache", "path", path, "model", identity)
		set.Train, set.Test = rows[:FashionMNISTTrain], rows[FashionMNISTTrain:]
		return set, nil
	}

	train, err := dataset.FashionMNISTTrain(0)
	if err != nil {
		return Set{}, fmt.Errorf("embedset: %w", err)
	}
	test, err := dataset.FashionMNISTTest(0)
	if err != nil {
		return Set{}, fmt.Errorf("embedset: %w", err)
	}
	images := append(train, test...)
	if len(images) != FashionMNISTTrain+FashionMNISTTest {
		return Set{}, fmt.Errorf("embedset: Fashion-MNIST has %d images, want %d", len(images), FashionMNISTTrain+FashionMNISTTest)
	}
	log.Info("embedding Fashion-MNIST (cached afterwards)", "images", len(images), "model", identity, "cache", path)
	e, err := embed.Open(ctx, embed.Config{ModelPath: modelPath, Logger: log})
	if err != nil {
		return Set{}, fmt.Errorf("embedset: %w", err)
	}
	defer e.Close()
	if e.Identity() != identity {
		return Set{}, fmt.Errorf("embedset: embedder identity %s, computed %s", e.Identity(), identity)
	}
	rows, err := embedAll(ctx, log, e, images)
	if err != nil {
		return Set{}, err
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return Set{}, fmt.Errorf("embedset: %w", err)
	}
	tmp := path + ".tmp"
	if err := benchkit.WriteFvecs(tmp, rows); err != nil {
		return Set{}, err
	}
	if err := os.WriteFile(path+".txt", []byte(identity+"\n"+preprocessing+"\n"), 0o644); err != nil {
		return Set{}, fmt.Errorf("embedset: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return Set{}, fmt.Errorf("embedset: %w", err)
	}
	set.Train, set.Test = rows[:FashionMNISTTrain], rows[FashionMNISTTrain:]
	return set, nil
}

// embedAll embeds 28x28 grey images (pixel values 0-255 as float32), keeping enough callers
// in flight for the embedder to fill every session.
func embedAll(ctx context.Context, log *slog.Logger, e *embed.Embedder, images [][]float32) ([][]float32, error) {
	spec := e.Spec()
	out := make([][]float32, len(images))
	var next, done atomic.Int64
	var firstErr error
	var once sync.Once
	fail := func(err error) { once.Do(func() { firstErr = err }) }
	start := time.Now()
	var wg sync.WaitGroup
	for range 2 * runtime.NumCPU() {
		wg.Go(func() {
			prep, err := embed.NewPreprocessor(spec)
			if err != nil {
				fail(err)
				return
			}
			canvas := image.NewRGBA(image.Rect(0, 0, spec.Width, spec.Height))
			tensor := make([]float32, spec.TensorLen())
			for {
				i := int(next.Add(1)) - 1
				if i >= len(images) || ctx.Err() != nil {
					return
				}
				if err := upscaleGrey(canvas, images[i], 28, 28); err != nil {
					fail(err)
					return
				}
				if err := prep.Normalize(tensor, canvas); err != nil {
					fail(err)
					return
				}
				v, err := e.EmbedTensor(ctx, tensor)
				if err != nil {
					fail(fmt.Errorf("embedset: image %d: %w", i, err))
					return
				}
				out[i] = v
				if n := done.Add(1); n%10000 == 0 {
					log.Info("embedding Fashion-MNIST", "done", n, "of", len(images),
						"img_per_s", math.Round(float64(n)/time.Since(start).Seconds()))
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// upscaleGrey writes the w x h grey image src (values 0-255) into dst, stretched to dst's
// size with bilinear interpolation (pixel centres aligned, edges clamped), grey in R, G, B.
func upscaleGrey(dst *image.RGBA, src []float32, w, h int) error {
	if len(src) != w*h {
		return errors.New("embedset: image size does not match")
	}
	dw, dh := dst.Rect.Dx(), dst.Rect.Dy()
	sx, sy := float64(w)/float64(dw), float64(h)/float64(dh)
	for y := range dh {
		fy := max(0, min(float64(h-1), (float64(y)+0.5)*sy-0.5))
		y0 := int(fy)
		y1 := min(y0+1, h-1)
		wy := fy - float64(y0)
		row := dst.Pix[y*dst.Stride:]
		for x := range dw {
			fx := max(0, min(float64(w-1), (float64(x)+0.5)*sx-0.5))
			x0 := int(fx)
			x1 := min(x0+1, w-1)
			wx := fx - float64(x0)
			top := float64(src[y0*w+x0])*(1-wx) + float64(src[y0*w+x1])*wx
			bot := float64(src[y1*w+x0])*(1-wx) + float64(src[y1*w+x1])*wx
			v := byte(math.Round(max(0, min(255, top*(1-wy)+bot*wy))))
			p := row[4*x : 4*x+4 : 4*x+4]
			p[0], p[1], p[2], p[3] = v, v, v, 255
		}
	}
	return nil
}

// Synthetic returns n unit vectors made from the real ones, for scale runs where the real
// set is too small: the first min(n, len(real)) are the real vectors themselves; each
// further one is a random convex mix of two random real vectors a and b, (1-t)*a + t*b with
// t uniform in [0, 0.5) (so it stays nearer a than b), plus Gaussian noise of standard
// deviation noise per component, re-normalised. The same seed gives the same vectors.
func Synthetic(real [][]float32, n int, noise float64, seed uint64) [][]float32 {
	dim := len(real[0])
	out := make([][]float32, n)
	flat := make([]float32, n*dim)
	for i := range out {
		out[i] = flat[i*dim : (i+1)*dim : (i+1)*dim]
	}
	copied := min(n, len(real))
	for i := range copied {
		copy(out[i], real[i])
	}
	workers := runtime.NumCPU()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := copied + w; i < n; i += workers {
				// One generator per vector: the result does not depend on the worker count.
				rng := rand.New(rand.NewPCG(seed, uint64(i)))
				a, b := real[rng.IntN(len(real))], real[rng.IntN(len(real))]
				t := float32(rng.Float64() / 2)
				v := out[i]
				var ss float64
				for d := range v {
					x := (1-t)*a[d] + t*b[d] + float32(rng.NormFloat64()*noise)
					v[d] = x
					ss += float64(x) * float64(x)
				}
				inv := float32(1 / math.Sqrt(ss))
				for d := range v {
					v[d] *= inv
				}
			}
		})
	}
	wg.Wait()
	return out
}
