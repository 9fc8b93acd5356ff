// Command embedbench measures embedding throughput: images per second end to end (bytes in,
// L2-normalised vector out, through embed.Embedder's decode workers and batching) beside raw
// model inference on ready tensors, and splits one image's cost into decode, resize and
// inference. It also writes the embeddings of every photo it read to
// <out>/tmp/photo-embeddings.fvecs, which annbench (-set photos) and servebench reuse.
//
//	embedbench [-collections clothing,abo,grocery] [-limit N] -out benchmarks/results
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"lookalike/benchmarks/internal/benchkit"
	"lookalike/embed"
	"lookalike/internal/dataset"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, log, os.Args[1:]); err != nil {
		log.Error("embedbench failed", "err", err)
		os.Exit(1)
	}
}

type collection struct {
	name   string
	images [][]byte
	bytes  int64
}

func run(ctx context.Context, log *slog.Logger, args []string) error {
	fs := flag.NewFlagSet("embedbench", flag.ContinueOnError)
	names := fs.String("collections", "clothing,abo,grocery", "shared photo collections to read, in order")
	timed := fs.String("timed", "clothing,abo", "collections whose throughput is reported")
	limit := fs.Int("limit", 0, "photos per collection (0: all)")
	stageSample := fs.Int("stage-sample", 100, "photos per collection timed stage by stage")
	rawTime := fs.Duration("raw-time", 3*time.Second, "how long to time raw inference per batch size")
	outDir := fs.String("out", "benchmarks/results", "results folder")
	if err := fs.Parse(args); err != nil {
		return err
	}
	machine := benchkit.DescribeMachine(ctx, ".")

	var cols []collection
	for _, name := range strings.Split(*names, ",") {
		photos, err := dataset.LoadPhotos(name)
		if err != nil {
			return fmt.Errorf("embedbench: %w", err)
		}
		if *limit > 0 && len(photos) > *limit {
			photos = photos[:*limit]
		}
		c := collection{name: name}
		for _, p := range photos {
			b, err := os.ReadFile(p.Path)
			if err != nil {
				return fmt.Errorf("embedbench: %w", err)
			}
			c.images = append(c.images, b)
			c.bytes += int64(len(b))
		}
		cols = append(cols, c)
	}

	e, err := embed.Open(ctx, embed.Config{Logger: log})
	if err != nil {
		return fmt.Errorf("embedbench: open embedder (needs the model in ../shared/models and ONNX Runtime; make setup): %w", err)
	}
	defer e.Close()
	spec := e.Spec()
	prep, err := embed.NewPreprocessor(spec)
	if err != nil {
		return fmt.Errorf("embedbench: %w", err)
	}

	stages := benchkit.Table{
		Title: "one image, stage by stage (one goroutine, batch 1, ms per image, mean)",
		Note: fmt.Sprintf("Each stage timed separately on the first %d photos of each collection; inference is one "+
			"RunBatch of one ready tensor with %d ONNX Runtime threads.", *stageSample, runtime.NumCPU()),
		Header: []string{"collection", "photos", "mean size", "decode ms", "resize+crop ms", "normalise ms", "inference ms", "sum ms"},
	}
	ends := benchkit.Table{
		Title: "throughput, images per second",
		Note: "End to end: Embedder.EmbedBatch over every photo of the collection, already in memory (decode workers " +
			"and the model's batching on all cores). Raw: RunBatch on ready tensors, no decoding or resizing.",
		Header: []string{"collection", "photos", "end-to-end img/s", "raw inference img/s (batch 1)", "raw inference img/s (batch 16)", "end-to-end / raw (batch 16)"},
	}
	var all [][]float32
	raw1, rawN, err := rawInference(ctx, e, prep, cols[0].images[0], *rawTime)
	if err != nil {
		return err
	}
	for _, c := range cols {
		start := time.Now()
		vecs, errs := e.EmbedBatch(ctx, c.images)
		elapsed := time.Since(start)
		for i, err := range errs {
			if err != nil {
				return fmt.Errorf("embedbench: %s photo %d: %w", c.name, i, err)
			}
		}
		all = append(all, vecs...)
		if !strings.Contains(","+*timed+",", ","+c.name+",") {
			log.Info("embedded", "collection", c.name, "photos", len(vecs))
			continue
		}
		ips := float64(len(c.images)) / elapsed.Seconds()
		ends.Add(c.name, len(c.images), fmt.Sprintf("%.1f", ips), fmt.Sprintf("%.1f", raw1), fmt.Sprintf("%.1f", rawN),
			fmt.Sprintf("%.2f", ips/rawN))
		log.Info("end to end", "collection", c.name, "images_per_s", ips)

		st, err := stageTimes(ctx, e, prep, c.images[:min(*stageSample, len(c.images))])
		if err != nil {
			return err
		}
		stages.Add(c.name, len(c.images), fmt.Sprintf("%.0f KiB", float64(c.bytes)/float64(len(c.images))/1024),
			ms(st[0]), ms(st[1]), ms(st[2]), ms(st[3]), ms(st[0]+st[1]+st[2]+st[3]))
	}

	if err := benchkit.WriteFvecs(filepath.Join(mustMkdir(*outDir, "tmp"), "photo-embeddings.fvecs"), all); err != nil {
		return err
	}
	var md strings.Builder
	fmt.Fprintf(&md, "## Embedding throughput\n\n%s- model: %s (%s), input %dx%d\n- decoder: %s\n\n",
		machine.Markdown(), filepath.Base(e.ModelPath()), e.Identity(), spec.Width, spec.Height, decoderName(cols[0].images[0], e))
	md.WriteString(ends.Markdown())
	md.WriteString(stages.Markdown())
	return os.WriteFile(filepath.Join(*outDir, "embed.md"), []byte(md.String()), 0o644)
}

func mustMkdir(parts ...string) string {
	dir := filepath.Join(parts...)
	_ = os.MkdirAll(dir, 0o755) // WriteFvecs reports the failure with the path
	return dir
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d.Microseconds())/1000) }

func decoderName(img []byte, e *embed.Embedder) string {
	d, err := embed.Decode(img, e.DecodeOptions())
	if err != nil {
		return "unknown"
	}
	return fmt.Sprintf("%s (a %dx%d JPEG decoded at 1/%.0f scale)", d.Decoder, d.Width, d.Height, d.ScaleDenom)
}

// stageTimes returns the mean decode, resize, normalise and batch-1 inference time per image.
func stageTimes(ctx context.Context, e *embed.Embedder, prep *embed.Preprocessor, images [][]byte) ([4]time.Duration, error) {
	var sum [4]time.Duration
	tensor := make([]float32, e.Spec().TensorLen())
	for i, img := range images {
		t0 := time.Now()
		d, err := embed.Decode(img, e.DecodeOptions())
		if err != nil {
			return sum, fmt.Errorf("embedbench: decode photo %d: %w", i, err)
		}
		t1 := time.Now()
		canvas, err := prep.Resize(d)
		if err != nil {
			return sum, fmt.Errorf("embedbench: resize photo %d: %w", i, err)
		}
		t2 := time.Now()
		if err := prep.Normalize(tensor, canvas); err != nil {
			return sum, fmt.Errorf("embedbench: normalise photo %d: %w", i, err)
		}
		t3 := time.Now()
		if _, err := e.RunBatch(ctx, tensor, 1); err != nil {
			return sum, fmt.Errorf("embedbench: infer photo %d: %w", i, err)
		}
		t4 := time.Now()
		sum[0] += t1.Sub(t0)
		sum[1] += t2.Sub(t1)
		sum[2] += t3.Sub(t2)
		sum[3] += t4.Sub(t3)
	}
	for i := range sum {
		sum[i] /= time.Duration(len(images))
	}
	return sum, nil
}

// rawInference times RunBatch on ready tensors at batch 1 and at the embedder's MaxBatch.
func rawInference(ctx context.Context, e *embed.Embedder, prep *embed.Preprocessor, img []byte, each time.Duration) (float64, float64, error) {
	d, err := embed.Decode(img, e.DecodeOptions())
	if err != nil {
		return 0, 0, fmt.Errorf("embedbench: %w", err)
	}
	L := e.Spec().TensorLen()
	one := make([]float32, L)
	if err := prep.Into(one, d); err != nil {
		return 0, 0, fmt.Errorf("embedbench: %w", err)
	}
	var rates []float64
	for _, n := range []int{1, e.MaxBatch()} {
		tensors := make([]float32, 0, n*L)
		for range n {
			tensors = append(tensors, one...)
		}
		if _, err := e.RunBatch(ctx, tensors, n); err != nil { // warm-up
			return 0, 0, fmt.Errorf("embedbench: raw inference: %w", err)
		}
		images := 0
		start := time.Now()
		for time.Since(start) < each {
			if _, err := e.RunBatch(ctx, tensors, n); err != nil {
				return 0, 0, fmt.Errorf("embedbench: raw inference: %w", err)
			}
			images += n
		}
		rates = append(rates, float64(images)/time.Since(start).Seconds())
	}
	return rates[0], rates[1], nil
}
