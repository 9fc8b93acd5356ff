// Command photobench measures what products with several photos cost: product-level search
// latency for products of 1, 4 and 16 photos at the same number of photos, and what keeping
// photos costs (bytes per photo, ingest rate with and without). It runs the catalogue in
// process (no gRPC), with the real model, a real bbolt file and the real HNSW graph, and
// writes benchmarks/results/photos.md.
//
//	go run ./benchmarks/cmd/photobench -photo-vectors benchmarks/results/tmp/photo-embeddings.fvecs
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"math/rand"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"lookalike/benchmarks/internal/benchkit"
	"lookalike/catalog"
	"lookalike/embed"
	"lookalike/index"
	"lookalike/internal/dataset"
)

type config struct {
	photos       []int
	perProduct   []int
	queries      int
	k            int
	sigma        float64
	photoVectors string
	keepLimit    int
	keepCost     bool
	quantize     index.Quantization
	out          string
	name         string
	work         string
}

func main() {
	var cfg config
	var per, photos string
	flag.StringVar(&photos, "photos", "100000", "photos in each catalogue, a catalogue per count and photos per product (comma-separated)")
	flag.StringVar(&per, "per-product", "1,4,16", "photos per product, one catalogue each")
	flag.IntVar(&cfg.queries, "queries", 1000, "timed queries per catalogue and kind")
	flag.IntVar(&cfg.k, "k", 10, "products per search")
	flag.Float64Var(&cfg.sigma, "sigma", 0.01, "per-component noise that makes one real vector into a product's photos")
	flag.StringVar(&cfg.photoVectors, "photo-vectors", "", "real 1280-d photo embeddings (.fvecs, from embedbench); embedded here when empty")
	flag.IntVar(&cfg.keepLimit, "keep-photos", 0, "photos for the keep-cost run (0: all grocery photos)")
	flag.BoolVar(&cfg.keepCost, "keep-cost", true, "also measure what keeping photos costs")
	quantize := flag.String("quantize", "none", "the graph's vectors: none (float32) or int8")
	flag.StringVar(&cfg.out, "out", "benchmarks/results", "where the results file goes")
	flag.StringVar(&cfg.name, "name", "photos.md", "the results file's name")
	flag.StringVar(&cfg.work, "work", "", "scratch directory (default: a temporary one, removed)")
	flag.Parse()
	for _, list := range []struct {
		flag, value string
		into        *[]int
	}{{"per-product", per, &cfg.perProduct}, {"photos", photos, &cfg.photos}} {
		for _, f := range strings.Split(list.value, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				fmt.Fprintf(os.Stderr, "photobench: bad -%s %q\n", list.flag, list.value)
				os.Exit(2)
			}
			*list.into = append(*list.into, n)
		}
	}
	q, err := index.ParseQuantization(*quantize)
	if err != nil {
		fmt.Fprintln(os.Stderr, "photobench:", err)
		os.Exit(2)
	}
	cfg.quantize = q
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if err := run(context.Background(), log, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "photobench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger, cfg config) error {
	machine := benchkit.DescribeMachine(ctx, ".")
	work := cfg.work
	if work == "" {
		dir, err := os.MkdirTemp("", "photobench")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		work = dir
	}
	emb, err := embed.Open(ctx, embed.Config{})
	if err != nil {
		return err
	}
	defer emb.Close()

	real, err := realVectors(ctx, emb, cfg.photoVectors)
	if err != nil {
		return err
	}
	search := benchkit.Table{
		Title: "Product-level search latency",
		Note: fmt.Sprintf("%s photos in each catalogue, grouped into products of N photos: each product is one of %d real photo "+
			"embeddings (shared datasets) plus N(0, %.2g²) noise per component for each of its photos, re-normalised. Queries are "+
			"other real embeddings plus the same noise; k = %d products; one client, in process (catalog.SearchByVector / SearchByID), "+
			"HNSW M=16, efConstruction=200, ef=64, graph vectors %s. 'more like this' queries with every photo of the product and merges by product.",
			joinCounts(cfg.photos, " or "), len(real), cfg.sigma, cfg.k, graphVectors(cfg.quantize)),
		Header: []string{"photos", "photos per product", "products", "build s", "search p50 ms", "search p99 ms", "more-like-this p50 ms", "more-like-this p99 ms", "distinct products per result"},
	}
	dedup := benchkit.Table{
		Title: "A duplicate scan over the whole catalogue",
		Note: "catalog.FindDuplicates with the default policy (look-alike 0.90, 10 neighbours per photo, ef 64) over the same " +
			"catalogues, on every core; allocated is what the scan allocated in all (runtime.MemStats.TotalAlloc before and after), " +
			"catalogue heap the Go heap in use after a collection before the scan (graph and metadata; the store's vectors are " +
			"in bbolt's mmapped file, outside it), scan heap the most the live heap reached during the scan (what a collection found " +
			"reachable, sampled every 100 ms; garbage not yet collected does not count).",
		Header: []string{"photos per product", "photos", "scan s", "photos/s", "clusters", "pairs", "allocated MB", "catalogue heap MB", "scan heap MB"},
	}
	for _, photos := range cfg.photos {
		for _, per := range cfg.perProduct {
			row, drow, err := searchLatency(ctx, log, emb, real, cfg, photos, per, filepath.Join(work, fmt.Sprint(photos, "-per-", per)))
			if err != nil {
				return err
			}
			search.Rows = append(search.Rows, row)
			dedup.Rows = append(dedup.Rows, drow)
		}
	}
	var keep benchkit.Table
	if cfg.keepCost {
		keep, err = keepCost(ctx, log, emb, cfg, work)
		if err != nil {
			return err
		}
	}
	var b strings.Builder
	b.WriteString("## Products with several photos\n\n")
	b.WriteString(machine.Markdown())
	fmt.Fprintf(&b, "- command: `photobench %s`\n\n", strings.Join(os.Args[1:], " "))
	b.WriteString(search.Markdown())
	b.WriteString("\n")
	b.WriteString(dedup.Markdown())
	if cfg.keepCost {
		b.WriteString("\n")
		b.WriteString(keep.Markdown())
	}
	if err := os.MkdirAll(cfg.out, 0o755); err != nil {
		return err
	}
	path := filepath.Join(cfg.out, cfg.name)
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return err
	}
	fmt.Print(b.String())
	log.Info("wrote", "path", path)
	return nil
}

// realVectors reads the shared photos' embeddings, or embeds them when no file is given.
func realVectors(ctx context.Context, emb *embed.Embedder, path string) ([][]float32, error) {
	if path != "" {
		return benchkit.ReadFvecs(path)
	}
	var out [][]float32
	for _, col := range []string{dataset.PhotosGrocery, dataset.PhotosClothing, dataset.PhotosABO} {
		photos, err := dataset.LoadPhotos(col)
		if err != nil {
			return nil, err
		}
		for _, p := range photos {
			b, err := os.ReadFile(p.Path)
			if err != nil {
				return nil, err
			}
			v, err := emb.Embed(ctx, b)
			if err != nil {
				continue
			}
			out = append(out, v)
		}
	}
	return out, nil
}

func searchLatency(ctx context.Context, log *slog.Logger, emb *embed.Embedder, real [][]float32, cfg config, photos, per int, dir string) ([]string, []string, error) {
	cat, err := catalog.Open(ctx, catalog.Config{DataDir: dir, Embedder: emb, Logger: log, Index: catalog.IndexParams{Quantize: cfg.quantize}})
	if err != nil {
		return nil, nil, err
	}
	defer cat.Close()
	rng := rand.New(rand.NewSource(int64(per)))
	products := photos / per
	start := time.Now()
	const batch = 500
	var writes []catalog.Write
	for i := range products {
		base := real[i%len(real)]
		w := catalog.Write{ID: fmt.Sprintf("p%07d", i), Category: fmt.Sprint("c", i%20)}
		for j := range per {
			w.Photos = append(w.Photos, catalog.PhotoWrite{ID: fmt.Sprint("ph", j), Vector: benchkit.Noisy(rng, base, cfg.sigma)})
		}
		writes = append(writes, w)
		if len(writes) == batch || i == products-1 {
			for _, r := range cat.UpsertBatch(ctx, writes) {
				if r.Err != nil {
					return nil, nil, r.Err
				}
			}
			writes = writes[:0]
		}
	}
	build := time.Since(start)
	log.Info("catalogue built", "photos_per_product", per, "products", products, "took", build.Round(time.Millisecond))

	var bySearch, byID []time.Duration
	distinct := 0
	for q := range cfg.queries {
		query := benchkit.Noisy(rng, real[rng.Intn(len(real))], cfg.sigma)
		t0 := time.Now()
		rs, err := cat.SearchByVector(ctx, query, catalog.SearchOptions{K: cfg.k})
		bySearch = append(bySearch, time.Since(t0))
		if err != nil {
			return nil, nil, err
		}
		seen := map[string]bool{}
		for _, r := range rs {
			seen[r.Product.ID] = true
		}
		distinct += len(seen)
		id := fmt.Sprintf("p%07d", rng.Intn(products))
		t0 = time.Now()
		if _, err := cat.SearchByID(ctx, id, catalog.SearchOptions{K: cfg.k}); err != nil {
			return nil, nil, err
		}
		byID = append(byID, time.Since(t0))
		_ = q
	}
	slices.Sort(bySearch)
	slices.Sort(byID)

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	peak := benchkit.WatchHeap(100 * time.Millisecond)
	clusters, pairs := 0, 0
	t0 := time.Now()
	err = cat.FindDuplicates(ctx, catalog.DuplicateOptions{}, func(cl catalog.Cluster) error {
		clusters++
		pairs += len(cl.Edges)
		return nil
	})
	scan := time.Since(t0)
	scanHeap := peak()
	runtime.ReadMemStats(&after)
	if err != nil {
		return nil, nil, err
	}
	dedupRow := []string{fmt.Sprint(per), fmt.Sprint(products * per), fmt.Sprintf("%.1f", scan.Seconds()),
		fmt.Sprintf("%.0f", float64(photos)/scan.Seconds()), fmt.Sprint(clusters), fmt.Sprint(pairs),
		fmt.Sprintf("%.0f", float64(after.TotalAlloc-before.TotalAlloc)/1e6),
		fmt.Sprintf("%.0f", float64(before.HeapInuse)/1e6), fmt.Sprintf("%.0f", float64(scanHeap)/1e6)}
	return []string{
		fmt.Sprint(products * per), fmt.Sprint(per), fmt.Sprint(products), fmt.Sprintf("%.1f", build.Seconds()),
		benchkit.Millis(benchkit.Percentile(bySearch, 50)), benchkit.Millis(benchkit.Percentile(bySearch, 99)),
		benchkit.Millis(benchkit.Percentile(byID, 50)), benchkit.Millis(benchkit.Percentile(byID, 99)),
		fmt.Sprintf("%.2f of %d", float64(distinct)/float64(cfg.queries), cfg.k),
	}, dedupRow, nil
}

// keepCost ingests the grocery photos (one product per grocery product) twice, keeping
// photos and not, and reports the kept bytes and both ingest rates.
func keepCost(ctx context.Context, log *slog.Logger, emb *embed.Embedder, cfg config, work string) (benchkit.Table, error) {
	photos, err := dataset.LoadPhotos(dataset.PhotosGrocery)
	if err != nil {
		return benchkit.Table{}, err
	}
	if cfg.keepLimit > 0 && len(photos) > cfg.keepLimit {
		photos = photos[:cfg.keepLimit]
	}
	var writes []catalog.Write
	byLabel := map[string]int{}
	var srcBytes int64
	for _, p := range photos {
		b, err := os.ReadFile(p.Path)
		if err != nil {
			return benchkit.Table{}, err
		}
		srcBytes += int64(len(b))
		i, ok := byLabel[p.Label]
		if !ok || len(writes[i].Photos) == 64 {
			i = len(writes)
			byLabel[p.Label] = i
			writes = append(writes, catalog.Write{ID: fmt.Sprint(p.Label, "-", i)})
		}
		writes[i].Photos = append(writes[i].Photos, catalog.PhotoWrite{Image: b, ImageURL: p.Path})
	}
	t := benchkit.Table{
		Title: "What keeping photos costs",
		Note: fmt.Sprintf("The %d grocery photos (originals %.0f KB on average) ingested through catalog.UpsertBatch in batches "+
			"of 8 products into a fresh catalogue, real model, fsynced bbolt. A kept photo is the upload resized to a shorter "+
			"side of 256 and encoded as JPEG at quality %d.", len(photos), float64(srcBytes)/float64(len(photos))/1024, embed.KeptQuality),
		Header: []string{"keep photos", "photos/s", "kept photos", "kept bytes per photo", "store file MB"},
	}
	for _, keep := range []bool{false, true} {
		dir := filepath.Join(work, fmt.Sprint("keep-", keep))
		cat, err := catalog.Open(ctx, catalog.Config{DataDir: dir, Embedder: emb, KeepPhotos: keep, Logger: log})
		if err != nil {
			return t, err
		}
		start := time.Now()
		for i := 0; i < len(writes); i += 8 {
			for _, r := range cat.UpsertBatch(ctx, writes[i:min(i+8, len(writes))]) {
				if r.Err != nil {
					cat.Close()
					return t, r.Err
				}
			}
		}
		took := time.Since(start)
		st, err := cat.Stats(ctx)
		if err != nil {
			cat.Close()
			return t, err
		}
		if err := cat.Close(); err != nil {
			return t, err
		}
		info, err := os.Stat(filepath.Join(dir, catalog.StoreFileName))
		if err != nil {
			return t, err
		}
		per := "-"
		if st.KeptPhotos > 0 {
			per = fmt.Sprintf("%.0f", float64(st.KeptBytes)/float64(st.KeptPhotos))
		}
		t.Add(keep, fmt.Sprintf("%.0f", float64(st.Photos)/took.Seconds()), st.KeptPhotos, per, fmt.Sprintf("%.1f", float64(info.Size())/1e6))
	}
	return t, nil
}

// joinCounts writes counts as a reader would: 100,000 or 1,000,000.
func joinCounts(counts []int, sep string) string {
	var out []string
	for _, n := range counts {
		digits := strconv.Itoa(n)
		var b strings.Builder
		for i, d := range digits {
			if i > 0 && (len(digits)-i)%3 == 0 {
				b.WriteByte(',')
			}
			b.WriteRune(d)
		}
		out = append(out, b.String())
	}
	return strings.Join(out, sep)
}

// graphVectors names what the graph holds per photo.
func graphVectors(q index.Quantization) string {
	if q == index.QuantizeNone {
		return "float32"
	}
	return q.String()
}
