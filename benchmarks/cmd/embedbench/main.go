// Command embedbench measures embedding throughput: images per second end to end (bytes in,
// L2-normalised vector out, through embed.Embedder's decode workers and batching) beside raw
// model inference on ready tensors in the same run, splits one image's cost into decode,
// preprocess and inference, and compares thread, session, batch and decode-worker settings
// end to end. It also writes the embeddings of every photo it read to
// <out>/tmp/photo-embeddings.fvecs, which annbench (-set photos) and servebench reuse.
//
//	embedbench [-collections clothing,abo,grocery] [-limit N] -out benchmarks/results
//	embedbench -threads 1 -sessions 2 -max-batch 1 ...   # the embedder's settings (0: defaults)
//	embedbench -sweep '2/1/16/2/2ms;1/2/1/2/2ms' -sweep-photos 240   # settings to compare
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
	"strconv"
	"strings"
	"sync"
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

// setting is one embedder configuration: the knobs that decide how the cores are shared
// between ONNX Runtime and the decoders. Zero fields take embed's defaults.
type setting struct {
	threads, sessions, maxBatch, workers int
	maxWait                              time.Duration
}

// defaultSweep covers intra-op threads 1 vs 2, one or two sessions, batches of 1, 4 and 16,
// one to three decode workers, and waiting for a batch or not, on a 2-core machine. The
// first setting is embed's old default, the second its current one.
const defaultSweep = "2/1/16/2/2ms;1/2/4/2/-1;1/2/1/2/-1;1/2/4/2/2ms;1/2/16/2/-1;1/2/4/1/-1;1/2/4/3/-1;" +
	"1/1/1/2/-1;2/1/1/2/-1;2/1/4/2/-1;2/2/1/2/-1"

// parseSetting reads "threads/sessions/maxbatch/workers/maxwait", maxwait a Go duration
// or -1 for none.
func parseSetting(s string) (setting, error) {
	f := strings.Split(strings.TrimSpace(s), "/")
	if len(f) != 5 {
		return setting{}, fmt.Errorf("setting %q: want threads/sessions/maxbatch/workers/maxwait", s)
	}
	var st setting
	for i, p := range []*int{&st.threads, &st.sessions, &st.maxBatch, &st.workers} {
		v, err := strconv.Atoi(f[i])
		if err != nil || v < 1 {
			return setting{}, fmt.Errorf("setting %q: field %d is not a positive integer", s, i+1)
		}
		*p = v
	}
	if f[4] == "-1" {
		st.maxWait = -1
	} else {
		d, err := time.ParseDuration(f[4])
		if err != nil || d <= 0 {
			return setting{}, fmt.Errorf("setting %q: max wait %q is not a positive duration or -1", s, f[4])
		}
		st.maxWait = d
	}
	return st, nil
}

func (s setting) config(log *slog.Logger) embed.Config {
	return embed.Config{Threads: s.threads, Sessions: s.sessions, MaxBatch: s.maxBatch,
		DecodeWorkers: s.workers, MaxWait: s.maxWait, Logger: log}
}

func describe(c embed.Config) string {
	wait := c.MaxWait.String()
	if c.MaxWait <= 0 {
		wait = "none"
	}
	return fmt.Sprintf("%d thread(s) x %d session(s), batch <= %d, wait %s, %d decode worker(s)",
		c.Threads, c.Sessions, c.MaxBatch, wait, c.DecodeWorkers)
}

func run(ctx context.Context, log *slog.Logger, args []string) error {
	fs := flag.NewFlagSet("embedbench", flag.ContinueOnError)
	names := fs.String("collections", "clothing,abo,grocery", "shared photo collections to read, in order")
	timed := fs.String("timed", "clothing,abo", "collections whose throughput is reported")
	limit := fs.Int("limit", 0, "photos per collection (0: all)")
	stageSample := fs.Int("stage-sample", 100, "photos per collection timed stage by stage")
	rawTime := fs.Duration("raw-time", 2*time.Second, "how long to time raw inference per setting and batch size")
	outDir := fs.String("out", "benchmarks/results", "results folder")
	var base setting
	fs.IntVar(&base.threads, "threads", 0, "ONNX Runtime intra-op threads per session (0: embed's default)")
	fs.IntVar(&base.sessions, "sessions", 0, "model sessions (0: embed's default)")
	fs.IntVar(&base.maxBatch, "max-batch", 0, "largest batch (0: embed's default)")
	fs.IntVar(&base.workers, "decode-workers", 0, "images decoded at once (0: embed's default)")
	fs.DurationVar(&base.maxWait, "max-wait", 0, "how long a batch waits for company (0: embed's default, negative: none)")
	sweep := fs.String("sweep", defaultSweep, "settings compared end to end, ';'-separated threads/sessions/maxbatch/workers/maxwait (empty: none)")
	sweepPhotos := fs.Int("sweep-photos", 240, "photos of the first timed collection each sweep setting embeds")
	sweepRounds := fs.Int("sweep-rounds", 2, "interleaved rounds of the sweep; each setting keeps its best")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var sweepSettings []setting
	if strings.TrimSpace(*sweep) != "" {
		for _, s := range strings.Split(*sweep, ";") {
			st, err := parseSetting(s)
			if err != nil {
				return fmt.Errorf("embedbench: -sweep: %w", err)
			}
			sweepSettings = append(sweepSettings, st)
		}
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

	e, err := embed.Open(ctx, base.config(log))
	if err != nil {
		return fmt.Errorf("embedbench: open embedder (needs the model in ../shared/models and ONNX Runtime; make setup): %w", err)
	}
	defer e.Close()
	cfg := e.Config()
	spec := e.Spec()
	prep, err := embed.NewPreprocessor(spec)
	if err != nil {
		return fmt.Errorf("embedbench: %w", err)
	}
	one, err := readyTensor(e, prep, cols[0].images[0])
	if err != nil {
		return err
	}

	// Raw inference first, while nothing else of ours runs: the embedder's own thread count
	// and the other way to use the cores (one thread per session, one session per core).
	ncpu := runtime.NumCPU()
	rawSettings := []setting{{threads: ncpu, sessions: 1}, {threads: 1, sessions: ncpu}}
	if cfg.Threads != ncpu && cfg.Threads != 1 {
		rawSettings = append(rawSettings, setting{threads: cfg.Threads, sessions: 1})
	}
	batches := []int{1, 4, 16}
	raws := benchkit.Table{
		Title: "raw inference on ready tensors, images per second",
		Note: fmt.Sprintf("RunBatch on a ready tensor, no decoding or resizing, each cell timed for %v; with several sessions, "+
			"one caller per session runs at once.", *rawTime),
		Header: []string{"ONNX Runtime setting", "batch 1", "batch 4", "batch 16"},
	}
	bestRaw, bestRawWhat := 0.0, ""
	rawAt := map[[2]int]float64{} // threads, batch -> img/s with one session
	for _, rs := range rawSettings {
		rates, err := rawInference(ctx, log, rs, one, batches, *rawTime)
		if err != nil {
			return err
		}
		row := []any{fmt.Sprintf("%d thread(s) x %d session(s)", rs.threads, rs.sessions)}
		for i, r := range rates {
			row = append(row, fmt.Sprintf("%.1f", r))
			if r > bestRaw {
				bestRaw, bestRawWhat = r, fmt.Sprintf("%d thread(s) x %d session(s), batch %d", rs.threads, rs.sessions, batches[i])
			}
			if rs.sessions == 1 {
				rawAt[[2]int{rs.threads, batches[i]}] = r
			}
		}
		raws.Add(row...)
		log.Info("raw inference", "threads", rs.threads, "sessions", rs.sessions, "images_per_s", rates)
	}
	sameRaw, sameRawOK := rawAt[[2]int{cfg.Threads, 1}]

	ends := benchkit.Table{
		Title: "throughput, images per second",
		Note: fmt.Sprintf("End to end: Embedder.EmbedBatch over every photo of the collection, already in memory, with the "+
			"embedder's defaults (%s). Raw: the best rate of the raw table below (%s), in the same run.",
			describe(cfg), bestRawWhat),
		Header: []string{"collection", "photos", "end-to-end img/s", "best raw inference img/s", "end-to-end / best raw"},
	}
	if sameRawOK {
		ends.Header = append(ends.Header, fmt.Sprintf("end-to-end / raw at %d thread(s), batch 1", cfg.Threads))
	}
	stages := benchkit.Table{
		Title: "one image, stage by stage (one goroutine, batch 1, ms per image, mean)",
		Note: fmt.Sprintf("Each stage timed separately on the first %d photos of each collection. Preprocess is resize, "+
			"centre crop and normalise into the tensor in one pass (the fused resampler); inference is one RunBatch of one "+
			"ready tensor with %d ONNX Runtime thread(s).", *stageSample, cfg.Threads),
		Header: []string{"collection", "photos", "mean size", "decode ms", "preprocess ms", "inference ms", "sum ms"},
	}
	var all [][]float32
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
		if !isTimed(*timed, c.name) {
			log.Info("embedded", "collection", c.name, "photos", len(vecs))
			continue
		}
		ips := float64(len(c.images)) / elapsed.Seconds()
		row := []any{c.name, len(c.images), fmt.Sprintf("%.1f", ips), fmt.Sprintf("%.1f", bestRaw), fmt.Sprintf("%.2f", ips/bestRaw)}
		if sameRawOK {
			row = append(row, fmt.Sprintf("%.2f", ips/sameRaw))
		}
		ends.Add(row...)
		log.Info("end to end", "collection", c.name, "images_per_s", ips, "of_best_raw", ips/bestRaw)

		st, err := stageTimes(ctx, e, prep, c.images[:min(*stageSample, len(c.images))])
		if err != nil {
			return err
		}
		stages.Add(c.name, len(c.images), fmt.Sprintf("%.0f KiB", float64(c.bytes)/float64(len(c.images))/1024),
			benchkit.Millis(st[0]), benchkit.Millis(st[1]), benchkit.Millis(st[2]), benchkit.Millis(st[0]+st[1]+st[2]))
	}
	if err := e.Close(); err != nil {
		return fmt.Errorf("embedbench: %w", err)
	}

	var sweepTable *benchkit.Table
	if len(sweepSettings) > 0 {
		var sc *collection
		for i := range cols {
			if isTimed(*timed, cols[i].name) {
				sc = &cols[i]
				break
			}
		}
		if sc == nil {
			return fmt.Errorf("embedbench: -sweep needs a timed collection")
		}
		images := sc.images[:min(*sweepPhotos, len(sc.images))]
		best, single, err := sweepRun(ctx, log, sweepSettings, images, *sweepRounds)
		if err != nil {
			return err
		}
		sweepTable = &benchkit.Table{
			Title: "settings compared end to end, images per second",
			Note: fmt.Sprintf("EmbedBatch over the first %d %s photos per setting, %d interleaved rounds in rotating order, "+
				"best round kept (the machine is shared). Threads are ONNX Runtime's intra-op threads per session. "+
				"One caller: Embed on the first %d of them one after the other, as a single client of the server "+
				"calls it (1000 / this = ms per image). With the default -sweep, the first row is embed's old default and the second its current one.", len(images), sc.name, *sweepRounds,
				min(sequentialPhotos, len(images))),
			Header: []string{"threads", "sessions", "max batch", "max wait", "decode workers", "end-to-end img/s", "/ best raw", "one caller img/s"},
		}
		for i, s := range sweepSettings {
			wait := s.maxWait.String()
			if s.maxWait < 0 {
				wait = "none"
			}
			sweepTable.Add(s.threads, s.sessions, s.maxBatch, wait, s.workers, fmt.Sprintf("%.1f", best[i]),
				fmt.Sprintf("%.2f", best[i]/bestRaw), fmt.Sprintf("%.1f", single[i]))
		}
	}

	if err := benchkit.WriteFvecs(filepath.Join(mustMkdir(*outDir, "tmp"), "photo-embeddings.fvecs"), all); err != nil {
		return err
	}
	var md strings.Builder
	fmt.Fprintf(&md, "## Embedding throughput\n\n%s- model: %s (%s), input %dx%d\n- decoder: %s\n- embedder: %s\n\n",
		machine.Markdown(), filepath.Base(e.ModelPath()), e.Identity(), spec.Width, spec.Height,
		decoderName(cols[0].images[0], e), describe(cfg))
	md.WriteString(ends.Markdown())
	md.WriteString(raws.Markdown())
	md.WriteString(stages.Markdown())
	if sweepTable != nil {
		md.WriteString(sweepTable.Markdown())
	}
	return os.WriteFile(filepath.Join(*outDir, "embed.md"), []byte(md.String()), 0o644)
}

func isTimed(timed, name string) bool { return strings.Contains(","+timed+",", ","+name+",") }

func mustMkdir(parts ...string) string {
	dir := filepath.Join(parts...)
	_ = os.MkdirAll(dir, 0o755) // WriteFvecs reports the failure with the path
	return dir
}

func decoderName(img []byte, e *embed.Embedder) string {
	d, err := embed.Decode(img, e.DecodeOptions())
	if err != nil {
		return "unknown"
	}
	return fmt.Sprintf("%s (a %dx%d JPEG decoded at 1/%.0f scale)", d.Decoder, d.Width, d.Height, d.ScaleDenom)
}

func readyTensor(e *embed.Embedder, prep *embed.Preprocessor, img []byte) ([]float32, error) {
	d, err := embed.Decode(img, e.DecodeOptions())
	if err != nil {
		return nil, fmt.Errorf("embedbench: %w", err)
	}
	t := make([]float32, e.Spec().TensorLen())
	if err := prep.Into(t, d); err != nil {
		return nil, fmt.Errorf("embedbench: %w", err)
	}
	return t, nil
}

// stageTimes returns the mean decode, preprocess and batch-1 inference time per image.
func stageTimes(ctx context.Context, e *embed.Embedder, prep *embed.Preprocessor, images [][]byte) ([3]time.Duration, error) {
	var sum [3]time.Duration
	tensor := make([]float32, e.Spec().TensorLen())
	for i, img := range images {
		t0 := time.Now()
		d, err := embed.Decode(img, e.DecodeOptions())
		if err != nil {
			return sum, fmt.Errorf("embedbench: decode photo %d: %w", i, err)
		}
		t1 := time.Now()
		if err := prep.Into(tensor, d); err != nil {
			return sum, fmt.Errorf("embedbench: preprocess photo %d: %w", i, err)
		}
		t2 := time.Now()
		if _, err := e.RunBatch(ctx, tensor, 1); err != nil {
			return sum, fmt.Errorf("embedbench: infer photo %d: %w", i, err)
		}
		t3 := time.Now()
		sum[0] += t1.Sub(t0)
		sum[1] += t2.Sub(t1)
		sum[2] += t3.Sub(t2)
	}
	for i := range sum {
		sum[i] /= time.Duration(len(images))
	}
	return sum, nil
}

// rawInference opens an embedder with the setting's threads and sessions and times RunBatch
// on copies of one ready tensor at each batch size, one caller per session.
func rawInference(ctx context.Context, log *slog.Logger, s setting, one []float32, batches []int, each time.Duration) ([]float64, error) {
	s.maxBatch = batches[len(batches)-1]
	e, err := embed.Open(ctx, s.config(log))
	if err != nil {
		return nil, fmt.Errorf("embedbench: raw inference: %w", err)
	}
	defer e.Close()
	var rates []float64
	for _, n := range batches {
		tensors := make([]float32, 0, n*len(one))
		for range n {
			tensors = append(tensors, one...)
		}
		if _, err := e.RunBatch(ctx, tensors, n); err != nil { // warm-up
			return nil, fmt.Errorf("embedbench: raw inference: %w", err)
		}
		var mu sync.Mutex
		var firstErr error
		images := 0
		var wg sync.WaitGroup
		start := time.Now()
		for range e.Config().Sessions {
			wg.Add(1)
			go func() {
				defer wg.Done()
				done := 0
				var err error
				for time.Since(start) < each && err == nil {
					if _, err = e.RunBatch(ctx, tensors, n); err == nil {
						done += n
					}
				}
				mu.Lock()
				images += done
				if err != nil && firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}()
		}
		wg.Wait()
		if firstErr != nil {
			return nil, fmt.Errorf("embedbench: raw inference: %w", firstErr)
		}
		rates = append(rates, float64(images)/time.Since(start).Seconds())
	}
	return rates, nil
}

// sweepRun times, for every setting, EmbedBatch over images and one caller embedding the
// first sequentialPhotos of them one after the other (what a single client of the server
// sees), in rounds of rotating order, and returns each setting's best rates.
func sweepRun(ctx context.Context, log *slog.Logger, settings []setting, images [][]byte, rounds int) (batch, single []float64, err error) {
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	best := make([]float64, len(settings))
	single = make([]float64, len(settings))
	for r := range max(1, rounds) {
		for j := range settings {
			i := (j + r) % len(settings)
			e, err := embed.Open(ctx, settings[i].config(quiet))
			if err != nil {
				return nil, nil, fmt.Errorf("embedbench: sweep: %w", err)
			}
			_, _ = e.EmbedBatch(ctx, images[:min(8, len(images))]) // warm-up: first-run allocations
			start := time.Now()
			_, errs := e.EmbedBatch(ctx, images)
			ips := float64(len(images)) / time.Since(start).Seconds()
			seq := images[:min(sequentialPhotos, len(images))]
			start = time.Now()
			for _, img := range seq {
				if _, err := e.Embed(ctx, img); err != nil {
					errs = append(errs, err)
				}
			}
			one := float64(len(seq)) / time.Since(start).Seconds()
			cerr := e.Close()
			for k, err := range errs {
				if err != nil {
					return nil, nil, fmt.Errorf("embedbench: sweep photo %d: %w", k, err)
				}
			}
			if cerr != nil {
				return nil, nil, fmt.Errorf("embedbench: sweep: %w", cerr)
			}
			best[i] = max(best[i], ips)
			single[i] = max(single[i], one)
			log.Info("sweep", "round", r+1, "setting", describe(e.Config()), "images_per_s", fmt.Sprintf("%.1f", ips),
				"one_caller_images_per_s", fmt.Sprintf("%.1f", one))
		}
	}
	return best, single, nil
}

// sequentialPhotos is how many photos the sweep embeds one at a time from one caller.
const sequentialPhotos = 60
