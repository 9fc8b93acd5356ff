// Command backendbench compares the catalogue's backends on one catalogue of real-distribution
// photo vectors: the embedded backend (bbolt + our HNSW) and Weaviate on one node and on three
// nodes (every shard on all three), each started here on loopback. For each it measures the
// ingest rate, SearchById latency at several concurrent clients, recall@10 against exact
// search, and memory per photo, and writes benchmarks/results/backends.md.
//
// The clients call the catalogue in process (the gRPC layer in front is the same for every
// backend and is measured by servebench), so the figures are the core plus its backend; for
// Weaviate that includes the HTTP round trips to the nodes, which share the machine's cores
// with the clients.
package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"lookalike/benchmarks/internal/benchkit"
	"lookalike/benchmarks/internal/embedset"
	"lookalike/catalog"
	"lookalike/embed"
	"lookalike/internal/weaviatetest"
	"lookalike/weaviate"
)

type config struct {
	photos, queries int
	clients         []int
	duration        time.Duration
	backends        []string
	out, work       string
	cache           string
}

func main() {
	var cfg config
	var clients, backends string
	flag.IntVar(&cfg.photos, "photos", 100000, "catalogue size: the 60,000 Fashion-MNIST train embeddings, then mixes of them")
	flag.IntVar(&cfg.queries, "queries", 500, "real test embeddings used as recall queries")
	flag.StringVar(&clients, "clients", "1,4,16", "concurrent SearchById clients per level")
	flag.DurationVar(&cfg.duration, "duration", 5*time.Second, "time per client level")
	flag.StringVar(&backends, "backends", "embedded,weaviate-1,weaviate-3", "backends to measure")
	flag.StringVar(&cfg.out, "out", "benchmarks/results", "where backends.md goes")
	flag.StringVar(&cfg.work, "work", "benchmarks/results/tmp/backends", "scratch directory (data of each backend)")
	flag.StringVar(&cfg.cache, "cache", "benchmarks/results/cache", "embedding cache directory")
	flag.Parse()
	for _, c := range strings.Split(clients, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(c))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "backendbench: bad -clients %q\n", clients)
			os.Exit(2)
		}
		cfg.clients = append(cfg.clients, n)
	}
	cfg.backends = strings.Split(backends, ",")
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(context.Background(), log, cfg); err != nil {
		log.Error("backendbench failed", "err", err)
		os.Exit(1)
	}
}

// result is one backend's figures.
type result struct {
	name           string
	ingestPerSec   float64
	p50, p99       []time.Duration // by client level
	qps            []float64
	recall         float64
	bytesPerPhoto  float64 // everything: the Lookalike process and the nodes
	memoryMeasured string
	// coreBytes is the growth of this process's Go heap: for Weaviate, what the catalogue
	// itself holds (its product table) beside the nodes.
	coreBytes float64
}

func run(ctx context.Context, log *slog.Logger, cfg config) error {
	// Stamped before the run: the tree may change while it runs.
	machine := benchkit.DescribeMachine(ctx, ".")
	set, err := embedset.FashionMNIST(ctx, log, cfg.cache)
	if err != nil {
		return err
	}
	dim := len(set.Train[0])
	base := embedset.Synthetic(set.Train, cfg.photos, 0.05/math.Sqrt(float64(dim)), 1)
	queries := set.Test[:min(cfg.queries, len(set.Test))]
	truth, err := benchkit.ExactTruth(ctx, base, queries, 10, benchkit.InnerProduct, runtime.NumCPU())
	if err != nil {
		return err
	}
	emb, err := embed.Open(ctx, embed.Config{})
	if err != nil {
		return err
	}
	defer emb.Close()
	if err := os.RemoveAll(cfg.work); err != nil {
		return err
	}
	var results []result
	for _, name := range cfg.backends {
		dir := filepath.Join(cfg.work, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		r, err := measure(ctx, log, cfg, name, dir, emb, base, queries, truth)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		results = append(results, r)
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
	}
	return write(cfg, machine, set.Identity, results)
}

func measure(ctx context.Context, log *slog.Logger, cfg config, name, dir string, emb *embed.Embedder,
	base, queries [][]float32, truth benchkit.Truth) (result, error) {
	r := result{name: name}
	var backend catalog.Backend
	var cluster *weaviatetest.Cluster
	heapBefore := heapInUse()
	switch {
	case name == "embedded":
		b, err := catalog.OpenEmbedded(ctx, catalog.EmbeddedConfig{DataDir: dir, ModelIdentity: emb.Identity(), Dim: emb.Dim()})
		if err != nil {
			return r, err
		}
		backend = b
		r.memoryMeasured = "Go heap growth after a full GC (graph and table; the bbolt file is mmapped, outside it)"
	case strings.HasPrefix(name, "weaviate-"):
		nodes, err := strconv.Atoi(strings.TrimPrefix(name, "weaviate-"))
		if err != nil {
			return r, err
		}
		bin, err := weaviatetest.Binary()
		if err != nil {
			return r, err
		}
		if cluster, err = weaviatetest.StartIn(dir, bin, nodes); err != nil {
			return r, err
		}
		defer cluster.Stop()
		b, err := weaviate.Open(ctx, weaviate.Config{
			URLs: cluster.URLs(), ModelIdentity: emb.Identity(), Dim: emb.Dim(), Replicas: nodes, Shards: 1,
			Logger: log,
		})
		if err != nil {
			return r, err
		}
		backend = b
		r.memoryMeasured = fmt.Sprintf("resident memory of the %d weaviate-server processes, summed, plus the Lookalike process's heap growth", nodes)
	default:
		return r, fmt.Errorf("unknown backend %q", name)
	}
	c, err := catalog.Open(ctx, catalog.Config{Backend: backend, Embedder: emb, Logger: log})
	if err != nil {
		return r, err
	}
	defer c.Close()

	start := time.Now()
	const batch = 500
	for i := 0; i < len(base); i += batch {
		var ws []catalog.Write
		for j := i; j < min(i+batch, len(base)); j++ {
			ws = append(ws, catalog.Write{ID: strconv.Itoa(j), Photos: []catalog.PhotoWrite{{Vector: base[j]}}})
		}
		for _, res := range c.UpsertBatch(ctx, ws) {
			if res.Err != nil {
				return r, fmt.Errorf("upsert %s: %w", res.ID, res.Err)
			}
		}
		if (i/batch)%40 == 0 {
			log.Info("ingesting", "backend", name, "done", i, "of", len(base))
		}
	}
	r.ingestPerSec = float64(len(base)) / time.Since(start).Seconds()
	log.Info("ingested", "backend", name, "photos", len(base), "per_s", r.ingestPerSec)

	r.coreBytes = (float64(heapInUse()) - float64(heapBefore)) / float64(len(base))
	r.bytesPerPhoto = r.coreBytes
	if cluster != nil {
		var rss uint64
		for _, n := range cluster.Nodes {
			rss += vmRSS(n.PID())
		}
		r.bytesPerPhoto += float64(rss) / float64(len(base))
	}

	results := make([][]int32, len(queries))
	for i, q := range queries {
		rs, err := c.SearchByVector(ctx, q, catalog.SearchOptions{K: 10})
		if err != nil {
			return r, err
		}
		for _, x := range rs {
			id, _ := strconv.Atoi(x.Product.ID)
			results[i] = append(results[i], int32(id))
		}
	}
	r.recall = benchkit.Recall(truth, base, queries, results, 10, benchkit.InnerProduct)

	for _, clients := range cfg.clients {
		var firstErr error
		var errMu sync.Mutex
		load := benchkit.ClosedLoop(ctx, clients, cfg.duration, 9, func(ctx context.Context, rng *rand.Rand) error {
			_, err := c.SearchByID(ctx, strconv.Itoa(rng.Intn(len(base))), catalog.SearchOptions{K: 10})
			if err != nil {
				errMu.Lock()
				firstErr = cmp.Or(firstErr, err)
				errMu.Unlock()
			}
			return err
		})
		if firstErr != nil {
			return r, fmt.Errorf("SearchById with %d clients: %d failed: %w", clients, load.Errors, firstErr)
		}
		r.p50 = append(r.p50, benchkit.Percentile(load.Latencies, 50))
		r.p99 = append(r.p99, benchkit.Percentile(load.Latencies, 99))
		r.qps = append(r.qps, load.QPS())
		log.Info("SearchById", "backend", name, "clients", clients, "qps", r.qps[len(r.qps)-1], "p99", r.p99[len(r.p99)-1])
	}
	return r, nil
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// vmRSS reads a process's resident set size in bytes (0 when it cannot).
func vmRSS(pid int) uint64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func write(cfg config, m benchkit.Machine, identity string, results []result) error {
	var b strings.Builder
	fmt.Fprintf(&b, "## Backends: embedded vs Weaviate\n\n%s", m.Markdown())
	fmt.Fprintf(&b, "- catalogue: %d one-photo products, 1280-d vectors of the Fashion-MNIST images embedded with %s "+
		"(the 60,000 train embeddings, then convex mixes of two of them plus noise, re-normalised, as the 1M set is made)\n", cfg.photos, identity)
	fmt.Fprintf(&b, "- every backend behind the same catalogue (catalog.Catalog) in this process; clients call it in process, "+
		"closed loop, %v per level; SearchById of a random product, k=10; Weaviate nodes on loopback, started by the benchmark "+
		"(weaviate-server %s), writes at QUORUM, reads at ONE, one shard replicated to every node\n", cfg.duration, weaviatetest.Version)
	fmt.Fprintf(&b, "- recall@10 of SearchByVector for %d real test embeddings against exact search\n", cfg.queries)
	fmt.Fprintf(&b, "- `go run ./benchmarks/cmd/backendbench -photos %d`\n\n", cfg.photos)

	t := benchkit.Table{Header: []string{"backend", "ingest photos/s", "recall@10", "bytes per photo", "of which in the Lookalike process"}}
	for _, r := range results {
		t.Add(r.name, fmt.Sprintf("%.0f", r.ingestPerSec), fmt.Sprintf("%.4f", r.recall), fmt.Sprintf("%.0f", r.bytesPerPhoto), fmt.Sprintf("%.0f", r.coreBytes))
	}
	t.Title = "ingest, recall and memory"
	b.WriteString(t.Markdown())
	b.WriteString("\nMemory: ")
	for i, r := range results {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s: %s", r.name, r.memoryMeasured)
	}
	b.WriteString(".\n\n")

	lt := benchkit.Table{Title: "SearchById latency", Header: []string{"backend", "clients", "QPS", "p50 ms", "p99 ms"}}
	for _, r := range results {
		for i, c := range cfg.clients {
			lt.Add(r.name, c, fmt.Sprintf("%.0f", r.qps[i]), benchkit.Millis(r.p50[i]), benchkit.Millis(r.p99[i]))
		}
	}
	b.WriteString(lt.Markdown())
	if err := os.MkdirAll(cfg.out, 0o755); err != nil {
		return err
	}
	path := filepath.Join(cfg.out, "backends.md")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return err
	}
	fmt.Print(b.String())
	return nil
}
