// Command annbench measures recall@10 and single-thread queries per second of Lookalike's HNSW
// index beside hnswlib, FAISS IndexHNSWFlat (peers/ann_peers.py, run in the same invocation)
// and github.com/coder/hnsw v0.6.1, all built with the same M and efConstruction on the same
// vectors, with Lookalike's exact index as the recall-1.0 reference. Ground truth comes from
// benchkit's own brute force, never from the code under test.
//
//	annbench -set fashion-mnist|photos [-base N] [-queries N] [-ef 10,20,...] -out benchmarks/results
//
// It writes ann-<set>.md (tables), ann-<set>.png (recall vs QPS) and ann-<set>.json (rows).
package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"math"
	"math/rand"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/coder/hnsw"

	"lookalike/benchmarks/internal/benchkit"
	"lookalike/benchmarks/internal/embedset"
	"lookalike/index"
	"lookalike/internal/dataset"
)

// config is everything one run is parameterised by.
type config struct {
	set                string
	nBase, nQueries    int
	m, efConstruction  int
	efs                []int
	k                  int
	minTime, exactTime time.Duration
	rounds             int
	replot             bool
	libraries          []string
	outDir, workDir    string
	photoVectors       string
	python             string
	nativeBin          string
	cacheDir           string
	noise              float64
	sequential         bool
	seed               int64
}

// Row is one (library, ef) measurement; the JSON file holds these.
type Row struct {
	Library        string  `json:"library"`
	EF             int     `json:"ef"`
	Recall         float64 `json:"recall"`
	QPS            float64 `json:"qps"`
	BuildSeconds   float64 `json:"build_s"`
	BytesPerVector float64 `json:"bytes_per_vector"`
	Queries        int     `json:"queries"`
}

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	cfg, err := parseFlags(os.Args[1:])
	if err == nil {
		err = run(ctx, log, cfg)
	}
	if err != nil {
		log.Error("annbench failed", "err", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("annbench", flag.ContinueOnError)
	fs.StringVar(&cfg.set, "set", "fashion-mnist", "vector set: fashion-mnist (784-d pixels, L2), fashion-mnist-1280 (the images' "+
		"1280-d embeddings, cosine), fashion-mnist-1280-1m (1M vectors made from those, -base to change), photos (the shared photos' embeddings)")
	fs.IntVar(&cfg.nBase, "base", 0, "base vectors to index (0: all)")
	fs.IntVar(&cfg.nQueries, "queries", 2000, "queries (0: all)")
	fs.IntVar(&cfg.m, "M", 16, "HNSW M for every library")
	fs.IntVar(&cfg.efConstruction, "ef-construction", 200, "HNSW efConstruction for every library")
	efs := fs.String("ef", "10,20,40,80,120,200,400,800", "efSearch values")
	fs.IntVar(&cfg.k, "k", 10, "neighbours per query")
	fs.DurationVar(&cfg.minTime, "min-time", time.Second, "time each (library, ef) over at least this long")
	fs.IntVar(&cfg.rounds, "rounds", 3, "interleaved timing rounds; each (library, ef) reports its best")
	fs.DurationVar(&cfg.exactTime, "exact-time", 3*time.Second, "time the exact index this long (on the queries it gets through)")
	libs := fs.String("libraries", "lookalike,exact,coder-hnsw,hnswlib,hnswlib-python,faiss",
		"what to measure: lookalike, exact, coder-hnsw, hnswlib (native, -march=native), hnswlib-python (Debian's build), faiss")
	fs.StringVar(&cfg.outDir, "out", "benchmarks/results", "results folder")
	fs.StringVar(&cfg.workDir, "work", "", "scratch folder (default <out>/tmp/ann-<set>)")
	fs.StringVar(&cfg.photoVectors, "photo-vectors", "", "photo embeddings .fvecs written by embedbench (default <out>/tmp/photo-embeddings.fvecs)")
	fs.StringVar(&cfg.python, "python", "/usr/bin/python3", "Python with hnswlib, faiss and numpy")
	fs.StringVar(&cfg.nativeBin, "native-bin", "", "where to compile the native hnswlib peer (default <out>/tmp/bin/hnswlib_native)")
	fs.Int64Var(&cfg.seed, "seed", 1, "seed for graph levels and sampling")
	fs.BoolVar(&cfg.replot, "replot", false, "only redraw <out>/ann-<set>.png from <out>/ann-<set>.json")
	fs.StringVar(&cfg.cacheDir, "cache", "benchmarks/results/cache", "where the Fashion-MNIST embeddings are cached (git-ignored)")
	fs.Float64Var(&cfg.noise, "synthetic-noise", 0.05, "fashion-mnist-1280-1m: norm of the Gaussian noise added to each mixed vector")
	fs.BoolVar(&cfg.sequential, "sequential", false, "build, time and free one library at a time instead of interleaving them "+
		"(for sets too large to hold every index at once)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	for _, s := range strings.Split(*efs, ",") {
		ef, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || ef <= 0 {
			return cfg, fmt.Errorf("annbench: bad -ef value %q", s)
		}
		cfg.efs = append(cfg.efs, ef)
	}
	cfg.libraries = strings.Split(*libs, ",")
	if cfg.workDir == "" {
		cfg.workDir = filepath.Join(cfg.outDir, "tmp", "ann-"+cfg.set)
	}
	if cfg.photoVectors == "" {
		cfg.photoVectors = filepath.Join(cfg.outDir, "tmp", "photo-embeddings.fvecs")
	}
	return cfg, nil
}

// vectorSet is one benchmark's data.
type vectorSet struct {
	name, description string
	base, queries     [][]float32
	metric            benchkit.Metric
}

func loadSet(ctx context.Context, log *slog.Logger, cfg config) (vectorSet, error) {
	switch cfg.set {
	case "fashion-mnist-1280", "fashion-mnist-1280-1m":
		emb, err := embedset.FashionMNIST(ctx, log, cfg.cacheDir)
		if err != nil {
			return vectorSet{}, fmt.Errorf("annbench: %w", err)
		}
		queries := firstN(emb.Test, cfg.nQueries)
		if cfg.set == "fashion-mnist-1280" {
			base := firstN(emb.Train, cfg.nBase)
			return vectorSet{
				name: "Fashion-MNIST embeddings",
				description: fmt.Sprintf("the Fashion-MNIST images embedded with the default model (%s; 28x28 grey upscaled "+
					"bilinearly to the model's 224x224 input, grey in R, G and B; 1280-d, L2-normalised): the first %d train "+
					"images as the base, the first %d test images as queries, cosine (inner product)", emb.Identity, len(base), len(queries)),
				base: base, queries: queries, metric: benchkit.InnerProduct,
			}, nil
		}
		n := cfg.nBase
		if n <= 0 {
			n = 1000000
		}
		dim := len(emb.Train[0])
		base := embedset.Synthetic(emb.Train, n, cfg.noise/math.Sqrt(float64(dim)), uint64(cfg.seed))
		return vectorSet{
			name: fmt.Sprintf("Fashion-MNIST embeddings, %s vectors", humanCount(n)),
			description: fmt.Sprintf("%d vectors made from the 60,000 Fashion-MNIST train embeddings (%s): the 60,000 "+
				"themselves, then random convex mixes (1-t)a+tb of two random train embeddings, t uniform in [0, 0.5), "+
				"plus Gaussian noise of norm about %.2f, re-normalised; queries: the first %d real test embeddings; cosine",
				n, emb.Identity, cfg.noise, len(queries)),
			base: base, queries: queries, metric: benchkit.InnerProduct,
		}, nil
	case "fashion-mnist":
		base, err := dataset.FashionMNISTTrain(cfg.nBase)
		if err != nil {
			return vectorSet{}, fmt.Errorf("annbench: %w", err)
		}
		queries, err := dataset.FashionMNISTTest(cfg.nQueries)
		if err != nil {
			return vectorSet{}, fmt.Errorf("annbench: %w", err)
		}
		return vectorSet{
			name: "Fashion-MNIST",
			description: fmt.Sprintf("Fashion-MNIST (Debian dataset-fashion-mnist): the first %d train images as the base, "+
				"the first %d test images as queries, 784-d raw pixels, Euclidean", len(base), len(queries)),
			base: base, queries: queries, metric: benchkit.L2,
		}, nil
	case "photos":
		all, err := benchkit.ReadFvecs(cfg.photoVectors)
		if err != nil {
			return vectorSet{}, fmt.Errorf("annbench: photo embeddings (run embedbench first): %w", err)
		}
		// Every tenth photo is a query and is left out of the base, so no query finds itself.
		var base, queries [][]float32
		for i, v := range all {
			if i%10 == 5 {
				queries = append(queries, v)
			} else {
				base = append(base, v)
			}
		}
		base, queries = firstN(base, cfg.nBase), firstN(queries, cfg.nQueries)
		return vectorSet{
			name: "shared photos",
			description: fmt.Sprintf("MobileNetV2 embeddings (1280-d, L2-normalised) of the shared photos: %d base, "+
				"%d held-out queries (every tenth photo), cosine (inner product)", len(base), len(queries)),
			base: base, queries: queries, metric: benchkit.InnerProduct,
		}, nil
	}
	return vectorSet{}, fmt.Errorf("annbench: unknown set %q", cfg.set)
}

func firstN(rows [][]float32, n int) [][]float32 {
	if n <= 0 || n >= len(rows) {
		return rows
	}
	return rows[:n]
}

func run(ctx context.Context, log *slog.Logger, cfg config) error {
	if cfg.replot {
		return replot(cfg)
	}
	machine := benchkit.DescribeMachine(ctx, ".")
	set, err := loadSet(ctx, log, cfg)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.workDir, 0o755); err != nil {
		return fmt.Errorf("annbench: %w", err)
	}
	log.Info("data", "set", set.name, "base", len(set.base), "queries", len(set.queries), "dim", len(set.base[0]))

	truth, err := cachedTruth(ctx, log, cfg, set)
	if err != nil {
		return err
	}

	var peerLibs []string
	for _, l := range cfg.libraries {
		if _, ok := peerLibraries[l]; ok {
			peerLibs = append(peerLibs, l)
		} else if !slices.Contains([]string{"lookalike", "lookalike-int8", "lookalike-int8-source", "coder-hnsw", "exact"}, l) {
			return fmt.Errorf("annbench: unknown library %q", l)
		}
	}
	if len(peerLibs) > 0 {
		if err := writePeerInputs(cfg, set); err != nil {
			return err
		}
	}
	var rows []Row
	if cfg.sequential {
		// One library at a time: build, time every ef, free, next.
		for _, lib := range cfg.libraries {
			if lib == "exact" {
				continue
			}
			cs, release, err := buildLibraries(ctx, log, cfg, set, []string{lib})
			if err != nil {
				return err
			}
			got, err := measureRounds(ctx, log, cfg, set, truth, cs)
			release()
			if err != nil {
				return err
			}
			rows = append(rows, got...)
		}
	} else {
		cs, release, err := buildLibraries(ctx, log, cfg, set, cfg.libraries)
		if err != nil {
			return err
		}
		rows, err = measureRounds(ctx, log, cfg, set, truth, cs)
		release()
		if err != nil {
			return err
		}
	}
	if slices.Contains(cfg.libraries, "exact") {
		prev := runtime.GOMAXPROCS(1)
		exact, err := buildExact(cfg, set)
		if err == nil {
			var res benchkit.PassResult
			if res, err = exact.measure(0, min(cfg.minTime, cfg.exactTime), cfg.exactTime); err == nil {
				row := scored(exact, 0, res, cfg, set, truth)
				log.Info("measured", "library", exact.name, "recall", row.Recall, "qps", row.QPS, "queries", row.Queries)
				rows = append(rows, row)
			}
		}
		runtime.GOMAXPROCS(prev)
		if err != nil {
			return err
		}
	}
	return writeResults(cfg, set, machine, rows)
}

// buildLibraries builds the libraries in libs (peers first, each peer program alone) and
// returns them with a function that stops the peers and drops the Go indexes.
func buildLibraries(ctx context.Context, log *slog.Logger, cfg config, set vectorSet, libs []string) ([]*contender, func(), error) {
	var contenders []*contender
	var procs []*peerProcess
	release := func() {
		for _, p := range procs {
			p.close(log)
		}
		clear(contenders)
		runtime.GC()
	}
	var peerLibs []string
	for _, l := range libs {
		if _, ok := peerLibraries[l]; ok {
			peerLibs = append(peerLibs, l)
		}
	}
	if len(peerLibs) > 0 {
		var err error
		if procs, err = startPeers(ctx, log, cfg, set, peerLibs); err != nil {
			return nil, nil, err
		}
		for _, p := range procs {
			contenders = append(contenders, p.contenders...)
		}
	}
	// Every Go build and measurement runs on one thread, as the peers do.
	prev := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(prev)
	for _, lib := range libs {
		var c *contender
		var err error
		switch lib {
		case "lookalike", "lookalike-int8", "lookalike-int8-source":
			c, err = buildLookalike(cfg, set, lib)
		case "coder-hnsw":
			c, err = buildCoder(cfg, set)
		default:
			continue
		}
		if err != nil {
			release()
			return nil, nil, err
		}
		log.Info("built", "library", c.name, "seconds", c.buildSeconds, "bytes_per_vector", c.bytesPerVector)
		contenders = append(contenders, c)
	}
	return contenders, release, nil
}

// contender is one built index under test. measure times it at one ef, over at least minTime
// (maxTime cuts a slow first pass short), and returns the first pass's ids.
type contender struct {
	name           string
	buildSeconds   float64
	bytesPerVector float64
	measure        func(ef int, minTime, maxTime time.Duration) (benchkit.PassResult, error)
}

// measureRounds times every contender at every ef, cfg.rounds times, interleaved and in a
// rotating order, keeping each one's best QPS: the machine is shared, and load from other
// processes then lowers the figures of whoever ran during it rather than of one library.
// Recall comes from the first round's ids (searches are deterministic).
func measureRounds(ctx context.Context, log *slog.Logger, cfg config, set vectorSet, truth benchkit.Truth,
	contenders []*contender) ([]Row, error) {
	prev := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(prev)
	best := map[string]*Row{}
	var order []string
	for round := range cfg.rounds {
		for _, ef := range cfg.efs {
			for i := range contenders {
				c := contenders[(i+round)%len(contenders)]
				if err := ctx.Err(); err != nil {
					return nil, err
				}
				res, err := c.measure(ef, cfg.minTime, time.Duration(math.MaxInt64))
				if err != nil {
					return nil, err
				}
				key := fmt.Sprintf("%s/%d", c.name, ef)
				if r, ok := best[key]; ok {
					r.QPS = max(r.QPS, res.QPS)
					continue
				}
				row := scored(c, ef, res, cfg, set, truth)
				best[key] = &row
				order = append(order, key)
				log.Info("measured", "library", c.name, "ef", ef, "recall", row.Recall, "qps", row.QPS, "round", round)
			}
		}
	}
	// Report in library order, then ef order.
	var rows []Row
	for _, c := range contenders {
		for _, key := range order {
			if strings.HasPrefix(key, c.name+"/") {
				rows = append(rows, *best[key])
			}
		}
	}
	return rows, nil
}

func scored(c *contender, ef int, res benchkit.PassResult, cfg config, set vectorSet, truth benchkit.Truth) Row {
	n := res.Answered
	sub := benchkit.Truth{IDs: truth.IDs[:n], Distances: truth.Distances[:n]}
	return Row{
		Library: c.name, EF: ef, QPS: res.QPS, BuildSeconds: c.buildSeconds, BytesPerVector: c.bytesPerVector, Queries: n,
		Recall: benchkit.Recall(sub, set.base, set.queries[:n], res.IDs, cfg.k, set.metric),
	}
}

// cachedTruth computes exact ground truth on all cores, reusing the previous run's when the
// vectors are byte-identical (it costs minutes on two cores for the full set).
func cachedTruth(ctx context.Context, log *slog.Logger, cfg config, set vectorSet) (benchkit.Truth, error) {
	key := fmt.Sprintf("%s k=%d metric=%s hash=%x\n", set.name, cfg.k, set.metric, hashVectors(set.base, set.queries))
	idsPath, keyPath := filepath.Join(cfg.workDir, "truth.ivecs"), filepath.Join(cfg.workDir, "truth.key")
	if old, err := os.ReadFile(keyPath); err == nil && string(old) == key {
		if ids, err := benchkit.ReadIvecs(idsPath); err == nil && len(ids) == len(set.queries) {
			t := benchkit.Truth{IDs: ids, Distances: make([][]float64, len(ids))}
			for qi, row := range ids {
				for _, id := range row {
					t.Distances[qi] = append(t.Distances[qi], set.metric.Distance(set.queries[qi], set.base[id]))
				}
			}
			log.Info("ground truth reused", "file", idsPath)
			return t, nil
		}
	}
	start := time.Now()
	t, err := benchkit.ExactTruth(ctx, set.base, set.queries, cfg.k, set.metric, runtime.NumCPU())
	if err != nil {
		return t, err
	}
	log.Info("ground truth computed", "seconds", time.Since(start).Seconds())
	if err := benchkit.WriteIvecs(idsPath, t.IDs); err != nil {
		return t, err
	}
	if err := os.WriteFile(keyPath, []byte(key), 0o644); err != nil {
		return t, fmt.Errorf("annbench: %w", err)
	}
	return t, nil
}

func hashVectors(sets ...[][]float32) uint64 {
	h := fnv.New64a()
	for _, rows := range sets {
		fmt.Fprintf(h, "%d;", len(rows))
		for _, r := range rows {
			h.Write(unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(r))), 4*len(r)))
		}
	}
	return h.Sum64()
}

// peerProcess is one running peer program (the native hnswlib binary, or ann_peers.py):
// commands go to its stdin, JSON lines come back.
type peerProcess struct {
	queries    int
	cmd        *exec.Cmd
	in         io.WriteCloser
	out        *bufio.Scanner
	contenders []*contender
}

type peerReply struct {
	Event          string  `json:"event"`
	Library        string  `json:"library"`
	QPS            float64 `json:"qps"`
	BuildSeconds   float64 `json:"build_s"`
	BytesPerVector float64 `json:"bytes_per_vector"`
}

// peerLibrary maps a -libraries name to the program that measures it, the name that
// program knows it by, and the row it gets in the tables.
type peerLibrary struct {
	native bool   // the compiled hnswlib peer; otherwise ann_peers.py
	peer   string // the library name the peer program answers to
	row    string
}

var peerLibraries = map[string]peerLibrary{
	"hnswlib":        {native: true, peer: "hnswlib", row: "hnswlib"},
	"hnswlib-python": {peer: "hnswlib", row: "hnswlib-python"},
	"faiss":          {peer: "faiss", row: "faiss-hnswflat"},
}

// writePeerInputs writes the vectors the peer programs read.
func writePeerInputs(cfg config, set vectorSet) error {
	if err := benchkit.WriteFvecs(filepath.Join(cfg.workDir, "base.fvecs"), set.base); err != nil {
		return err
	}
	return benchkit.WriteFvecs(filepath.Join(cfg.workDir, "queries.fvecs"), set.queries)
}

// startPeers starts the native hnswlib program and/or ann_peers.py for the peer libraries in
// libs, each building its indexes before it returns.
func startPeers(ctx context.Context, log *slog.Logger, cfg config, set vectorSet, libs []string) ([]*peerProcess, error) {
	common := []string{"--workdir", cfg.workDir, "--metric", set.metric.String(),
		"--M", strconv.Itoa(cfg.m), "--ef-construction", strconv.Itoa(cfg.efConstruction),
		"--seed", strconv.FormatInt(cfg.seed, 10)}
	var native, python []string
	for _, l := range libs {
		if peerLibraries[l].native {
			native = append(native, l)
		} else {
			python = append(python, l)
		}
	}
	var procs []*peerProcess
	closeAll := func() {
		for _, p := range procs {
			p.close(log)
		}
	}
	// The native peer is started and built first, alone, so that its build time is not
	// shared with the Python builds.
	if len(native) > 0 {
		bin, err := buildNativeHnswlib(ctx, log, cfg)
		if err != nil {
			return nil, err
		}
		p, err := startPeer(ctx, log, cfg, set, bin, common, native)
		if err != nil {
			return nil, err
		}
		procs = append(procs, p)
	}
	if len(python) > 0 {
		script := filepath.Join("benchmarks", "peers", "ann_peers.py")
		var names []string
		for _, l := range python {
			names = append(names, peerLibraries[l].peer)
		}
		args := append([]string{script}, common...)
		args = append(args, "--libraries", strings.Join(names, ","))
		p, err := startPeer(ctx, log, cfg, set, cfg.python, args, python)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("%w (make bench installs python3-hnswlib python3-faiss python3-numpy)", err)
		}
		procs = append(procs, p)
	}
	return procs, nil
}

// nativeSource is the C++ peer annbench compiles at bench time.
const nativeSource = "benchmarks/peers/hnswlib_native.cpp"

// buildNativeHnswlib compiles the native hnswlib peer with -O3 -march=native into the work
// folder, unless a binary newer than the source (and built on this machine) is already there.
func buildNativeHnswlib(ctx context.Context, log *slog.Logger, cfg config) (string, error) {
	bin := cfg.nativeBin
	if bin == "" {
		bin = filepath.Join(cfg.outDir, "tmp", "bin", "hnswlib_native")
	}
	src, err := os.Stat(nativeSource)
	if err != nil {
		return "", fmt.Errorf("annbench: native hnswlib peer: %w", err)
	}
	if b, err := os.Stat(bin); err == nil && b.ModTime().After(src.ModTime()) {
		return bin, nil
	}
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		return "", fmt.Errorf("annbench: %w", err)
	}
	args := []string{"-O3", "-march=native", "-std=c++17", "-o", bin, nativeSource}
	log.Info("compiling the native hnswlib peer", "cmd", "g++ "+strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, "g++", args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("annbench: compile %s (needs g++ and libhnswlib-dev; make bench installs them): %w", nativeSource, err)
	}
	return bin, nil
}

// startPeer starts one peer program and waits for it to build every library it was given.
func startPeer(ctx context.Context, log *slog.Logger, cfg config, set vectorSet, name string, args []string,
	libs []string) (*peerProcess, error) {
	p := &peerProcess{queries: len(set.queries), cmd: exec.CommandContext(ctx, name, args...)}
	p.cmd.Stderr = os.Stderr
	// One thread, whatever the BLAS or OpenMP defaults would pick.
	p.cmd.Env = append(os.Environ(), "OMP_NUM_THREADS=1", "OPENBLAS_NUM_THREADS=1")
	var err error
	if p.in, err = p.cmd.StdinPipe(); err != nil {
		return nil, fmt.Errorf("annbench: %w", err)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("annbench: %w", err)
	}
	p.out = bufio.NewScanner(stdout)
	log.Info("starting peer", "program", name, "libraries", libs)
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("annbench: start peer %s: %w", name, err)
	}
	for {
		r, err := p.read()
		if err != nil {
			p.close(log)
			return nil, fmt.Errorf("annbench: peer %s: %w", name, err)
		}
		if r.Event == "ready" {
			return p, nil
		}
		var lib peerLibrary
		for _, l := range libs {
			if peerLibraries[l].peer == r.Library {
				lib = peerLibraries[l]
			}
		}
		if lib.row == "" {
			p.close(log)
			return nil, fmt.Errorf("annbench: peer %s built %q, which was not asked for", name, r.Library)
		}
		log.Info("built", "library", lib.row, "seconds", r.BuildSeconds, "bytes_per_vector", r.BytesPerVector)
		p.contenders = append(p.contenders, &contender{
			name: lib.row, buildSeconds: r.BuildSeconds, bytesPerVector: r.BytesPerVector,
			measure: func(ef int, minTime, _ time.Duration) (benchkit.PassResult, error) {
				return p.measure(cfg, lib, ef, minTime)
			},
		})
	}
}

func (p *peerProcess) read() (peerReply, error) {
	var r peerReply
	if !p.out.Scan() {
		if err := p.out.Err(); err != nil {
			return r, err
		}
		return r, io.ErrUnexpectedEOF
	}
	if err := json.Unmarshal(p.out.Bytes(), &r); err != nil {
		return r, fmt.Errorf("reply %q: %w", p.out.Text(), err)
	}
	return r, nil
}

func (p *peerProcess) measure(cfg config, lib peerLibrary, ef int, minTime time.Duration) (benchkit.PassResult, error) {
	idsPath := filepath.Join(cfg.workDir, fmt.Sprintf("%s-ef%d.ivecs", lib.row, ef))
	if _, err := fmt.Fprintf(p.in, "%s %d %d %.3f %s\n", lib.peer, ef, cfg.k, minTime.Seconds(), idsPath); err != nil {
		return benchkit.PassResult{}, fmt.Errorf("annbench: peer: %w", err)
	}
	r, err := p.read()
	if err != nil || r.Event != "measured" {
		return benchkit.PassResult{}, fmt.Errorf("annbench: peer measuring %s ef=%d: %v %w", lib.row, ef, r.Event, err)
	}
	ids, err := benchkit.ReadIvecs(idsPath)
	if err != nil {
		return benchkit.PassResult{}, err
	}
	if len(ids) != p.queries {
		return benchkit.PassResult{}, fmt.Errorf("annbench: %s answered %d of %d queries", lib.row, len(ids), p.queries)
	}
	return benchkit.PassResult{IDs: ids, QPS: r.QPS, Answered: len(ids)}, nil
}

func (p *peerProcess) close(log *slog.Logger) {
	p.in.Close()
	if err := p.cmd.Wait(); err != nil {
		log.Warn("peer exited", "program", p.cmd.Path, "err", err)
	}
}

// heapInUse is the live heap after a full collection: the memory an index holds is the growth
// of this across its build.
func heapInUse() int64 {
	// Twice: sync.Pool contents survive one collection in the victim cache, and an index's
	// scratch pools must not leak into the next index's figure.
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

func indexMetric(m benchkit.Metric) index.Metric {
	if m == benchkit.InnerProduct {
		return index.InnerProduct
	}
	return index.L2
}

// buildLookalike builds index.HNSW: "lookalike" with float32 vectors, "lookalike-int8" with
// int8 codes and the full vectors inside the index, "lookalike-int8-source" with int8 codes
// and the full vectors read from the benchmark's own copy (a Config.Vectors source), so its
// memory figure is what the index holds without them.
func buildLookalike(cfg config, set vectorSet, variant string) (*contender, error) {
	icfg := index.Config{
		Metric: indexMetric(set.metric), M: cfg.m, EFConstruction: cfg.efConstruction, EFSearch: cfg.efs[0], Seed: cfg.seed,
	}
	if variant != "lookalike" {
		icfg.Quantize = index.QuantizeInt8
	}
	if variant == "lookalike-int8-source" {
		icfg.Vectors = func(k index.Key) []float32 {
			if int(k) < len(set.base) {
				return set.base[k]
			}
			return nil
		}
	}
	before := heapInUse()
	start := time.Now()
	h := index.NewHNSW(len(set.base[0]), icfg)
	for i, v := range set.base {
		// A fresh copy per Add, dropped afterwards, so the memory figure counts what the index
		// itself keeps and not the benchmark's own slice.
		if err := h.Add(index.Key(i), slices.Clone(v)); err != nil {
			return nil, fmt.Errorf("annbench: %s add %d: %w", variant, i, err)
		}
	}
	build := time.Since(start)
	return &contender{
		name: variant, buildSeconds: build.Seconds(),
		bytesPerVector: float64(heapInUse()-before) / float64(len(set.base)),
		measure: func(ef int, minTime, maxTime time.Duration) (benchkit.PassResult, error) {
			opt := index.SearchOptions{EF: ef}
			return benchkit.TimeQueries(set.queries, func(q []float32) []int32 {
				return neighborIDs(h.Search(q, cfg.k, opt))
			}, minTime, maxTime), nil
		},
	}, nil
}

func buildExact(cfg config, set vectorSet) (*contender, error) {
	before := heapInUse()
	start := time.Now()
	e := index.NewExact(len(set.base[0]), indexMetric(set.metric))
	for i, v := range set.base {
		if err := e.Add(index.Key(i), slices.Clone(v)); err != nil {
			return nil, fmt.Errorf("annbench: exact add %d: %w", i, err)
		}
	}
	build := time.Since(start)
	return &contender{
		name: "lookalike-exact", buildSeconds: build.Seconds(),
		bytesPerVector: float64(heapInUse()-before) / float64(len(set.base)),
		measure: func(_ int, minTime, maxTime time.Duration) (benchkit.PassResult, error) {
			return benchkit.TimeQueries(set.queries, func(q []float32) []int32 {
				return neighborIDs(e.Search(q, cfg.k, index.SearchOptions{}))
			}, minTime, maxTime), nil
		},
	}, nil
}

func buildCoder(cfg config, set vectorSet) (*contender, error) {
	before := heapInUse()
	start := time.Now()
	g := hnsw.NewGraph[uint32]()
	g.M = cfg.m
	// coder/hnsw's Ml is the chance of rising a level; 1/M is the paper's (and hnswlib's) choice.
	g.Ml = 1 / float64(cfg.m)
	g.Rng = rand.New(rand.NewSource(cfg.seed))
	g.Distance = hnsw.EuclideanDistance
	if set.metric == benchkit.InnerProduct {
		g.Distance = hnsw.CosineDistance
	}
	// coder/hnsw builds with EfSearch: set it to efConstruction while inserting.
	g.EfSearch = cfg.efConstruction
	for i, v := range set.base {
		g.Add(hnsw.MakeNode(uint32(i), slices.Clone(v)))
	}
	build := time.Since(start)
	return &contender{
		name: "coder-hnsw", buildSeconds: build.Seconds(),
		bytesPerVector: float64(heapInUse()-before) / float64(len(set.base)),
		measure: func(ef int, minTime, maxTime time.Duration) (benchkit.PassResult, error) {
			// Its result heap is capped at the k it is asked for, so ask for max(k, ef)
			// candidates and keep the k closest: the most recall it can give at this ef.
			want := max(ef, cfg.k)
			g.EfSearch = want
			return benchkit.TimeQueries(set.queries, func(q []float32) []int32 {
				nodes := g.Search(q, want)
				slices.SortFunc(nodes, func(a, b hnsw.Node[uint32]) int {
					return cmp.Compare(g.Distance(q, a.Value), g.Distance(q, b.Value))
				})
				ids := make([]int32, 0, cfg.k)
				for _, n := range nodes[:min(len(nodes), cfg.k)] {
					ids = append(ids, int32(n.Key))
				}
				return ids
			}, minTime, maxTime), nil
		},
	}, nil
}

func neighborIDs(ns []index.Neighbor) []int32 {
	ids := make([]int32, len(ns))
	for i, n := range ns {
		ids[i] = int32(n.Key)
	}
	return ids
}

var errNoRows = errors.New("annbench: nothing was measured")

func writeResults(cfg config, set vectorSet, machine benchkit.Machine, rows []Row) error {
	if len(rows) == 0 {
		return errNoRows
	}
	slug := "ann-" + cfg.set
	raw, err := json.MarshalIndent(rows, "", " ")
	if err != nil {
		return fmt.Errorf("annbench: %w", err)
	}
	if err := os.WriteFile(filepath.Join(cfg.outDir, slug+".json"), raw, 0o644); err != nil {
		return fmt.Errorf("annbench: %w", err)
	}

	var libs []string
	for _, r := range rows {
		if !slices.Contains(libs, r.Library) {
			libs = append(libs, r.Library)
		}
	}
	var md strings.Builder
	fmt.Fprintf(&md, "## ANN index: %s\n\n%s", set.name, machine.Markdown())
	fmt.Fprintf(&md, "- data: %s\n- every library: M=%d, efConstruction=%d, k=%d, built and queried on one thread; "+
		"each (library, ef) timed over at least %s of repeated passes over the queries, in %d interleaved rounds keeping the best QPS (the machine is shared); peers called with one batched call per pass\n"+
		"- recall@10 against exact brute-force ground truth (a result counts when it is within the 10th true distance, as the public ANN benchmarks count ties)\n\n",
		set.description, cfg.m, cfg.efConstruction, cfg.k, cfg.minTime, cfg.rounds)

	md.WriteString("Rows:\n\n")
	for _, l := range libs {
		if note, ok := libraryNotes[l]; ok {
			fmt.Fprintf(&md, "- `%s`: %s\n", l, note)
		}
	}
	md.WriteString("\n")

	recall := benchkit.Table{Title: "recall@10 and queries per second by efSearch", Header: []string{"efSearch"}}
	for _, l := range libs {
		if l != "lookalike-exact" {
			recall.Header = append(recall.Header, l+" recall", l+" QPS")
		}
	}
	for _, ef := range cfg.efs {
		cells := []any{ef}
		for _, l := range libs {
			if l == "lookalike-exact" {
				continue
			}
			if r, ok := find(rows, l, ef); ok {
				cells = append(cells, fmt.Sprintf("%.4f", r.Recall), fmt.Sprintf("%.0f", r.QPS))
			} else {
				cells = append(cells, "", "")
			}
		}
		recall.Add(cells...)
	}
	md.WriteString(recall.Markdown())

	build := benchkit.Table{
		Title:  "build and memory",
		Note:   "Memory per vector, vectors included: growth of the Go heap after a full GC across the build (Go), or of the process RSS (peers).",
		Header: []string{"library", "build seconds", "vectors/s", "bytes per vector"},
	}
	for _, l := range libs {
		for _, r := range rows {
			if r.Library == l {
				build.Add(l, fmt.Sprintf("%.1f", r.BuildSeconds), fmt.Sprintf("%.0f", float64(len(set.base))/r.BuildSeconds),
					fmt.Sprintf("%.0f", r.BytesPerVector))
				break
			}
		}
	}
	md.WriteString(build.Markdown())

	if r, ok := find(rows, "lookalike-exact", 0); ok {
		fmt.Fprintf(&md, "Exact reference (lookalike `index.Exact`, brute force): recall@10 %.4f, %.1f QPS over %d queries.\n\n",
			r.Recall, r.QPS, r.Queries)
	}
	md.WriteString(targetLine(rows))
	md.WriteString(memoryLine(rows, len(set.base[0])))

	png := slug + ".png"
	fmt.Fprintf(&md, "![recall vs QPS](%s)\n", png)
	if err := os.WriteFile(filepath.Join(cfg.outDir, slug+".md"), []byte(md.String()), 0o644); err != nil {
		return fmt.Errorf("annbench: %w", err)
	}

	return writePlot(cfg, set.name, rows)
}

func replot(cfg config) error {
	raw, err := os.ReadFile(filepath.Join(cfg.outDir, "ann-"+cfg.set+".json"))
	if err != nil {
		return fmt.Errorf("annbench: %w", err)
	}
	var rows []Row
	if err := json.Unmarshal(raw, &rows); err != nil {
		return fmt.Errorf("annbench: %w", err)
	}
	names := map[string]string{"fashion-mnist": "Fashion-MNIST", "photos": "shared photos",
		"fashion-mnist-1280": "Fashion-MNIST embeddings", "fashion-mnist-1280-1m": "Fashion-MNIST embeddings, 1M vectors"}
	return writePlot(cfg, names[cfg.set], rows)
}

// minPlotRecall is the left end of the plot's recall axis.
const minPlotRecall = 0.85

func writePlot(cfg config, setName string, rows []Row) error {
	var curves []benchkit.Curve
	for _, r := range rows {
		if r.Library == "lookalike-exact" {
			continue
		}
		if len(curves) == 0 || curves[len(curves)-1].Name != r.Library {
			curves = append(curves, benchkit.Curve{Name: r.Library})
		}
		c := &curves[len(curves)-1]
		c.Recall, c.QPS = append(c.Recall, r.Recall), append(c.QPS, r.QPS)
	}
	title := fmt.Sprintf("%s, M=%d efC=%d, one thread", setName, cfg.m, cfg.efConstruction)
	return benchkit.WriteRecallQPSPlot(filepath.Join(cfg.outDir, "ann-"+cfg.set+".png"), title, minPlotRecall, curves)
}

func find(rows []Row, lib string, ef int) (Row, bool) {
	for _, r := range rows {
		if r.Library == lib && r.EF == ef {
			return r, true
		}
	}
	return Row{}, false
}

// targetQPSRatio is the target for QPS at recall@10 >= 0.95 against native hnswlib.
const targetQPSRatio = 1.2

// targetLine compares each Lookalike variant with (native) hnswlib at the lowest ef where each
// reaches recall 0.95, says how far int8 recall falls below float32 recall at equal ef, and
// what the int8 index without full vectors holds per vector against the float32 vector.
func targetLine(rows []Row) string {
	first := func(lib string) (Row, bool) {
		for _, r := range rows {
			if r.Library == lib && r.Recall >= 0.95 {
				return r, true
			}
		}
		return Row{}, false
	}
	var b strings.Builder
	peer, okPeer := first("hnswlib")
	for _, lib := range []string{"lookalike", "lookalike-int8", "lookalike-int8-source"} {
		ours, ok := first(lib)
		switch {
		case !slices.ContainsFunc(rows, func(r Row) bool { return r.Library == lib }):
			continue
		case !ok || !okPeer:
			fmt.Fprintf(&b, "- Target (QPS at recall@10 >= 0.95 vs hnswlib), %s: not reached by both in this run.\n", lib)
			continue
		}
		fmt.Fprintf(&b, "- QPS at recall@10 >= 0.95 (lowest ef reaching it), %s: %.0f QPS (ef %d, recall %.4f) vs hnswlib %.0f QPS "+
			"(ef %d, recall %.4f): **%.2fx** native hnswlib (target >= %.1fx).\n",
			lib, ours.QPS, ours.EF, ours.Recall, peer.QPS, peer.EF, peer.Recall, ours.QPS/peer.QPS, targetQPSRatio)
	}
	for _, lib := range []string{"lookalike-int8", "lookalike-int8-source"} {
		worst, worstEF, n := 0.0, 0, 0
		for _, r := range rows {
			if r.Library != lib {
				continue
			}
			if f, ok := find(rows, "lookalike", r.EF); ok {
				n++
				if d := f.Recall - r.Recall; n == 1 || d > worst {
					worst, worstEF = d, r.EF
				}
			}
		}
		if n > 0 {
			verdict := "within"
			if worst > 0.005 {
				verdict = "NOT within"
			}
			fmt.Fprintf(&b, "- Recall@10 of %s against float32 lookalike at equal ef: at most %.4f lower (ef %d), **%s** the 0.005 allowed.\n",
				lib, worst, worstEF, verdict)
		}
	}
	b.WriteString("\n")
	return b.String()
}

// memoryLine relates the int8 index without full vectors to the float32 vector itself.
func memoryLine(rows []Row, dim int) string {
	for _, r := range rows {
		if r.Library == "lookalike-int8-source" {
			return fmt.Sprintf("Memory per vector held by the int8 index whose full vectors come from a source (Config.Vectors): "+
				"%.0f bytes, **%.2fx** the %d bytes of the float32 vector (target <= 0.4x); an index holding its own full vectors "+
				"adds those %d bytes (lookalike-int8).\n\n", r.BytesPerVector, r.BytesPerVector/float64(4*dim), 4*dim, 4*dim)
		}
	}
	return ""
}

// libraryNotes says what each row of the tables is.
var libraryNotes = map[string]string{
	"hnswlib": "hnswlib's own C++ headers (Debian libhnswlib-dev), compiled on this machine with g++ -O3 -march=native " +
		"(benchmarks/peers/hnswlib_native.cpp), one searchKnn call per query",
	"hnswlib-python": "Debian's python3-hnswlib (the same hnswlib, built for baseline x86-64: SSE, no AVX), one batched knn_query per pass",
	"faiss-hnswflat": "Debian's python3-faiss IndexHNSWFlat (built without AVX), one batched search per pass",
	"lookalike":      "index.HNSW with float32 vectors (the default Config)",
	"lookalike-int8": "index.HNSW with Config.Quantize = QuantizeInt8: int8 codes in the graph, the full vectors kept in the " +
		"index for the exact re-rank of the best candidates",
	"lookalike-int8-source": "index.HNSW with int8 codes (as lookalike-int8) and Config.Vectors reading the benchmark's own copy " +
		"of the vectors for the re-rank: the index holds no full vectors, so its bytes per vector leave them out",
	"coder-hnsw":      "github.com/coder/hnsw v0.6.1",
	"lookalike-exact": "index.Exact, brute force",
}

// humanCount writes 1000000 as "1M" and 60000 as "60k".
func humanCount(n int) string {
	switch {
	case n%1000000 == 0:
		return fmt.Sprintf("%dM", n/1000000)
	case n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return strconv.Itoa(n)
}
