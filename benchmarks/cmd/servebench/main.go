// Command servebench starts real `lookalike serve` processes on 127.0.0.1 and measures them
// over gRPC: UpsertStream ingest rate, the server process's resident memory per photo,
// SearchById and SearchByImage throughput and p50/p95/p99 latency at several numbers of
// concurrent clients, and the recall@10 of served searches against exact ground truth, beside
// the server's own graph (read back from the snapshot it saves at shutdown) searched directly.
//
// Each variant is one server with its own data folder and extra serve flags: by default
// float32 vectors and --quantize int8. The variants' servers run side by side and their load
// levels are interleaved (every variant at one level, then the next level; -rounds repeats
// the whole sequence in a rotated order), so load from other processes on a shared machine
// falls on every variant alike: compare variants within one run.
//
// The catalogue (-source real, the default) has a real distribution: the 70,000 Fashion-MNIST
// images embedded with the default model (benchmarks/internal/embedset, cached on disk by
// model identity), then, up to -items, random convex mixes of two of those plus small noise,
// re-normalised, made as the 1M ANN set is (embedset.Synthetic). -source photos is the older
// catalogue: the ~2,200 shared photos' embeddings, each reused under many ids with Gaussian
// noise added.
//
//	servebench -items 100000 -clients 1,4,16 -duration 5s -out benchmarks/results
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"lookalike/benchmarks/internal/benchkit"
	"lookalike/benchmarks/internal/embedset"
	"lookalike/catalog"
	"lookalike/index"
	"lookalike/internal/dataset"
	pb "lookalike/proto/lookalike/v1"
)

type config struct {
	items          int
	source         string
	cacheDir       string
	mixNoise       float64
	noise          float64
	clients        []int
	rpcs           []string
	duration       time.Duration
	imageDuration  time.Duration
	rounds         int
	recallQueries  int
	recallEFs      []int
	localIndex     bool
	bin            string
	serveArgs      string
	photoVectors   string
	outDir, work   string
	seed           int64
	indexSeed      int64
	startupTimeout time.Duration
	restart        bool
	keepData       bool
	variants       []variant
}

// variant is one server under test: extra serve flags and, optionally, another binary.
type variant struct {
	name string
	args []string
	bin  string
}

const (
	rpcByID    = "SearchById"
	rpcByImage = "SearchByImage"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg, err := parseFlags(os.Args[1:])
	if err == nil {
		err = run(ctx, log, cfg)
	}
	if err != nil {
		log.Error("servebench failed", "err", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (config, error) {
	var cfg config
	fs := flagSet(&cfg)
	clients := fs.String("clients", "1,4,16", "concurrent clients per load level")
	efs := fs.String("recall-ef", "0", "efSearch values for the recall comparison (0: the server's default)")
	rpcs := fs.String("rpcs", rpcByID+","+rpcByImage, "what to load: SearchById, SearchByImage")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	var err error
	if cfg.clients, err = ints(*clients); err != nil {
		return cfg, err
	}
	if cfg.recallEFs, err = ints(*efs); err != nil {
		return cfg, err
	}
	for _, r := range strings.Split(*rpcs, ",") {
		r = strings.TrimSpace(r)
		if r != rpcByID && r != rpcByImage {
			return cfg, fmt.Errorf("servebench: unknown rpc %q (SearchById, SearchByImage)", r)
		}
		cfg.rpcs = append(cfg.rpcs, r)
	}
	if cfg.source != "real" && cfg.source != "photos" {
		return cfg, fmt.Errorf("servebench: -source %q: real or photos", cfg.source)
	}
	if cfg.rounds < 1 {
		return cfg, errors.New("servebench: -rounds must be at least 1")
	}
	if len(cfg.variants) == 0 {
		cfg.variants = defaultVariants
	}
	seen := map[string]bool{}
	for _, v := range cfg.variants {
		if seen[v.name] {
			return cfg, fmt.Errorf("servebench: two variants named %q", v.name)
		}
		seen[v.name] = true
	}
	if cfg.work == "" {
		cfg.work = filepath.Join(cfg.outDir, "tmp", "serve")
	}
	if cfg.photoVectors == "" {
		cfg.photoVectors = filepath.Join(cfg.outDir, "tmp", "photo-embeddings.fvecs")
	}
	return cfg, nil
}

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v < 0 {
			return nil, fmt.Errorf("servebench: bad number %q", f)
		}
		out = append(out, v)
	}
	return out, nil
}

// instance is one variant's running server and what was measured on it.
type instance struct {
	variant
	data    string
	srv     *server
	conn    *grpc.ClientConn
	client  pb.LookalikeClient
	params  *pb.IndexParams
	ingest  float64
	memory  []memorySample
	cells   map[string]*benchkit.Load // by rpc/clients
	recall  []recallRow
	graphBP float64 // the snapshot graph's index.Stats bytes per photo
}

type memorySample struct {
	when string
	mem  memory
}

func run(ctx context.Context, log *slog.Logger, cfg config) error {
	machine := benchkit.DescribeMachine(ctx, ".")
	vectors, description, err := catalogue(ctx, log, cfg)
	if err != nil {
		return err
	}
	var images [][]byte
	if slices.Contains(cfg.rpcs, rpcByImage) {
		if images, err = queryImages(); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(cfg.work); err != nil {
		return fmt.Errorf("servebench: %w", err)
	}
	if err := os.MkdirAll(cfg.work, 0o755); err != nil {
		return fmt.Errorf("servebench: %w", err)
	}

	var insts []*instance
	defer func() {
		for _, in := range insts {
			in.stop(log)
		}
	}()
	for _, v := range cfg.variants {
		in := &instance{variant: v, data: filepath.Join(cfg.work, "data-"+v.name), cells: map[string]*benchkit.Load{}}
		insts = append(insts, in)
		if err := in.start(ctx, log, cfg); err != nil {
			return err
		}
		in.sampleMemory(log, "empty")
		if in.ingest, err = ingest(ctx, in.client, vectors); err != nil {
			return fmt.Errorf("servebench: %s: %w", in.name, err)
		}
		log.Info("ingested", "variant", in.name, "items", len(vectors), "items_per_s", in.ingest)
		if err := in.checkCount(ctx, len(vectors)); err != nil {
			return err
		}
		in.sampleMemory(log, "after ingest")
		if cfg.restart {
			// SIGTERM saves the snapshot; the new process loads it, as a restarted server does.
			in.stop(log)
			if err := in.start(ctx, log, cfg); err != nil {
				return err
			}
			if err := in.checkCount(ctx, len(vectors)); err != nil {
				return err
			}
			in.sampleMemory(log, "after restart")
		}
	}

	rng := rand.New(rand.NewSource(cfg.seed))
	for round := range cfg.rounds {
		for _, rpc := range cfg.rpcs {
			for _, c := range cfg.clients {
				for j := range insts {
					in := insts[(j+round)%len(insts)]
					call, d := in.caller(rpc, len(vectors), images, cfg)
					r := benchkit.ClosedLoop(ctx, c, d, rng.Int63(), call)
					key := fmt.Sprintf("%s/%d", rpc, c)
					if in.cells[key] == nil {
						in.cells[key] = &benchkit.Load{}
					}
					in.cells[key].Merge(r)
					log.Info(rpc, "variant", in.name, "clients", c, "round", round, "qps", r.QPS(), "errors", r.Errors)
				}
			}
		}
	}
	for _, in := range insts {
		in.sampleMemory(log, "after load")
	}

	var rq recallQueries
	var local *index.HNSW
	if cfg.recallQueries > 0 {
		if rq, err = recallSet(ctx, cfg, vectors); err != nil {
			return err
		}
		if cfg.localIndex {
			if local, err = buildLocal(log, cfg, vectors, insts[0].params); err != nil {
				return err
			}
		}
		for _, in := range insts {
			if in.recall, err = servedRecall(ctx, log, in, cfg, vectors, rq, local); err != nil {
				return err
			}
		}
	}
	// The servers' own graphs, read back from the snapshots they save at shutdown, tell a
	// gap in the served recall apart: a graph built differently, or a loss in the serving path.
	for _, in := range insts {
		in.stop(log)
		if err := snapshotRecall(log, in, cfg, vectors, rq); err != nil {
			return err
		}
		if !cfg.keepData {
			// A catalogue's data file is hundreds of MB of scratch; the server log stays.
			if err := os.RemoveAll(in.data); err != nil {
				log.Warn("could not remove a server's data", "err", err)
			}
		}
	}
	md := report(machine, cfg, description, len(vectors), insts, local != nil)
	return os.WriteFile(filepath.Join(cfg.outDir, "serve.md"), []byte(md), 0o644)
}

// catalogue returns the items' vectors and a sentence saying how they were made.
func catalogue(ctx context.Context, log *slog.Logger, cfg config) ([][]float32, string, error) {
	if cfg.source == "photos" {
		photos, err := benchkit.ReadFvecs(cfg.photoVectors)
		if err != nil {
			return nil, "", fmt.Errorf("servebench: photo embeddings (run embedbench first): %w", err)
		}
		return perturbedCatalogue(photos, cfg.items, cfg.noise, cfg.seed),
			fmt.Sprintf("%d items, each a real 1280-d MobileNetV2 embedding of one of the %d shared photos "+
				"(photo i %% %d) plus Gaussian noise (sigma %.3g per component) and re-normalised, under distinct ids "+
				"(the shared photos are too few for 100,000 distinct items; an easier distribution than real data)",
				cfg.items, len(photos), len(photos), cfg.noise), nil
	}
	emb, err := embedset.FashionMNIST(ctx, log, cfg.cacheDir)
	if err != nil {
		return nil, "", fmt.Errorf("servebench: %w", err)
	}
	real := append(append([][]float32(nil), emb.Train...), emb.Test...)
	dim := len(real[0])
	vectors := embedset.Synthetic(real, cfg.items, cfg.mixNoise/math.Sqrt(float64(dim)), uint64(cfg.seed))
	mixed := max(0, cfg.items-len(real))
	return vectors, fmt.Sprintf("%d items: the %d Fashion-MNIST images (train and test) embedded with the default model (%s; "+
		"28x28 grey upscaled to the model's input, %d-d, L2-normalised; cached in %s), then %d random convex mixes "+
		"(1-t)a+tb of two random real embeddings, t uniform in [0, 0.5), plus Gaussian noise of norm about %.2f, "+
		"re-normalised (embedset.Synthetic, as the 1M ANN set is made)",
		len(vectors), min(len(real), cfg.items), emb.Identity, dim, filepath.Base(emb.Path), mixed, cfg.mixNoise), nil
}

// perturbedCatalogue makes n unit vectors: photo i%len(photos) plus N(0, sigma^2) noise per
// component, re-normalised. The noise keeps distinct ids from being exact duplicates.
func perturbedCatalogue(photos [][]float32, n int, sigma float64, seed int64) [][]float32 {
	rng := rand.New(rand.NewSource(seed))
	out := make([][]float32, n)
	for i := range out {
		out[i] = benchkit.Noisy(rng, photos[i%len(photos)], sigma)
	}
	return out
}

func queryImages() ([][]byte, error) {
	var images [][]byte
	for _, col := range []string{dataset.PhotosClothing, dataset.PhotosABO} {
		photos, err := dataset.LoadPhotos(col)
		if err != nil {
			return nil, fmt.Errorf("servebench: %w", err)
		}
		for i, p := range photos {
			if col == dataset.PhotosClothing && i >= 200 {
				break
			}
			b, err := os.ReadFile(p.Path)
			if err != nil {
				return nil, fmt.Errorf("servebench: %w", err)
			}
			images = append(images, b)
		}
	}
	return images, nil
}

// caller returns the request loop body and duration of one load level.
func (in *instance) caller(rpc string, items int, images [][]byte, cfg config) (func(context.Context, *rand.Rand) error, time.Duration) {
	if rpc == rpcByImage {
		return func(ctx context.Context, rng *rand.Rand) error {
			_, err := in.client.SearchByImage(ctx, &pb.SearchByImageRequest{Image: images[rng.Intn(len(images))], K: 10})
			return err
		}, cfg.imageDuration
	}
	return func(ctx context.Context, rng *rand.Rand) error {
		_, err := in.client.SearchById(ctx, &pb.SearchByIdRequest{Id: benchkit.CatalogueID(rng.Intn(items)), K: 10})
		return err
	}, cfg.duration
}

// start starts the variant's server on a free port, dials it and waits until it answers.
func (in *instance) start(ctx context.Context, log *slog.Logger, cfg config) error {
	bin := cfg.bin
	if in.bin != "" {
		bin = in.bin
	}
	srv, err := startServer(ctx, log, bin, cfg.serveArgs, in.args, in.data, filepath.Join(cfg.work, "server-"+in.name+".log"))
	if err != nil {
		return err
	}
	in.srv = srv
	in.conn, err = grpc.NewClient(srv.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		return fmt.Errorf("servebench: dial %s: %w", srv.addr, err)
	}
	in.client = pb.NewLookalikeClient(in.conn)
	return waitReady(ctx, in.client, cfg.startupTimeout, srv)
}

func (in *instance) stop(log *slog.Logger) {
	if in.conn != nil {
		_ = in.conn.Close()
		in.conn = nil
	}
	if in.srv != nil {
		in.srv.stop(log)
	}
}

func (in *instance) checkCount(ctx context.Context, items int) error {
	stats, err := in.client.Stats(ctx, &pb.StatsRequest{})
	if err != nil {
		return fmt.Errorf("servebench: %s: stats: %w", in.name, err)
	}
	if stats.GetCount() != uint64(items) {
		return fmt.Errorf("servebench: %s holds %d items after ingesting %d", in.name, stats.GetCount(), items)
	}
	in.params = stats.GetIndex()
	return nil
}

func (in *instance) sampleMemory(log *slog.Logger, when string) {
	m, err := readMemory(in.srv.cmd.Process.Pid)
	if err != nil {
		log.Warn("could not read the server's memory", "variant", in.name, "err", err)
		return
	}
	in.memory = append(in.memory, memorySample{when: when, mem: m})
	log.Info("server memory", "variant", in.name, "when", when, "rss_mb", m.rss>>20, "anon_mb", m.anon>>20, "file_mb", m.file>>20)
}

// memory is a process's resident memory from /proc/PID/status, in bytes.
type memory struct {
	rss, anon, file, peak int64
}

func readMemory(pid int) (memory, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memory{}, err
	}
	defer f.Close()
	return parseStatus(f)
}

// parseStatus reads VmRSS, VmHWM, RssAnon and RssFile (kB) from a /proc/PID/status file.
func parseStatus(r io.Reader) (memory, error) {
	var m memory
	fields := map[string]*int64{"VmRSS": &m.rss, "VmHWM": &m.peak, "RssAnon": &m.anon, "RssFile": &m.file}
	found := 0
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		dst, want := fields[name]
		if !ok || !want {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return m, fmt.Errorf("servebench: /proc status line %q", sc.Text())
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return m, fmt.Errorf("servebench: /proc status line %q: %w", sc.Text(), err)
		}
		*dst = kb << 10
		found++
	}
	if err := sc.Err(); err != nil {
		return m, err
	}
	if found != len(fields) {
		return m, errors.New("servebench: /proc status lacks VmRSS, VmHWM, RssAnon or RssFile")
	}
	return m, nil
}

type server struct {
	stopped bool
	cmd     *exec.Cmd
	addr    string
	log     string
	done    chan error
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("servebench: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// startServer starts bin with serveArgs ({addr} and {data} filled in) and extra appended,
// its output appended to logPath.
func startServer(ctx context.Context, log *slog.Logger, bin, serveArgs string, extra []string, data, logPath string) (*server, error) {
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	args := strings.Fields(strings.NewReplacer("{addr}", addr, "{data}", data).Replace(serveArgs))
	args = append(args, extra...)
	s := &server{addr: addr, log: logPath, done: make(chan error, 1)}
	logFile, err := os.OpenFile(s.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("servebench: %w", err)
	}
	s.cmd = exec.CommandContext(ctx, bin, args...)
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	s.cmd.Cancel = func() error { return s.cmd.Process.Signal(syscall.SIGTERM) }
	s.cmd.WaitDelay = 10 * time.Second
	if err := s.cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("servebench: start %s (make build builds it): %w", bin, err)
	}
	log.Info("server started", "bin", bin, "args", args, "log", s.log, "pid", s.cmd.Process.Pid)
	go func() { s.done <- s.cmd.Wait(); logFile.Close() }()
	return s, nil
}

func (s *server) stop(log *slog.Logger) {
	if s.stopped {
		return
	}
	s.stopped = true
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		log.Info("server stopped", "err", err)
	case <-time.After(60 * time.Second):
		_ = s.cmd.Process.Kill()
		log.Warn("server killed after 60s")
	}
}

func (s *server) tail() string {
	b, _ := os.ReadFile(s.log)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

func waitReady(ctx context.Context, client pb.LookalikeClient, timeout time.Duration, s *server) error {
	deadline := time.Now().Add(timeout)
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := client.Stats(cctx, &pb.StatsRequest{})
		cancel()
		if err == nil {
			return nil
		}
		select {
		case exitErr := <-s.done:
			return fmt.Errorf("servebench: server exited before answering (%v); its log:\n%s", exitErr, s.tail())
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("servebench: server not answering Stats after %s: %w; its log:\n%s", timeout, err, s.tail())
		}
	}
}

// ingest sends every vector over one UpsertStream and returns items acknowledged per second.
func ingest(ctx context.Context, client pb.LookalikeClient, vectors [][]float32) (float64, error) {
	start := time.Now()
	stream, err := client.UpsertStream(ctx)
	if err != nil {
		return 0, fmt.Errorf("servebench: open UpsertStream: %w", err)
	}
	sendErr := make(chan error, 1)
	go func() {
		for i, v := range vectors {
			req := &pb.UpsertRequest{
				Id:       benchkit.CatalogueID(i),
				Content:  &pb.UpsertRequest_Vector{Vector: &pb.Vector{Values: v}},
				Category: "bench",
			}
			if err := stream.Send(req); err != nil {
				sendErr <- fmt.Errorf("servebench: send item %d: %w", i, err)
				return
			}
		}
		sendErr <- stream.CloseSend()
	}()
	got := 0
	for {
		res, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("servebench: UpsertStream after %d results: %w", got, err)
		}
		if res.GetOutcome() == pb.Outcome_OUTCOME_FAILED {
			return 0, fmt.Errorf("servebench: item %s failed: %s", res.GetId(), res.GetErrorMessage())
		}
		got++
	}
	if err := <-sendErr; err != nil {
		return 0, err
	}
	if got != len(vectors) {
		return 0, fmt.Errorf("servebench: %d results for %d items", got, len(vectors))
	}
	return float64(got) / time.Since(start).Seconds(), nil
}

// recallQueries is the query set and its exact truth, shared by every variant.
type recallQueries struct {
	ids     []int
	queries [][]float32
	truth   benchkit.Truth
}

// recallSet picks random catalogue items as queries and computes their exact 10 nearest
// other items (the query item itself excluded, as SearchById excludes it).
func recallSet(ctx context.Context, cfg config, vectors [][]float32) (recallQueries, error) {
	rng := rand.New(rand.NewSource(cfg.seed + 7))
	qids := rng.Perm(len(vectors))[:min(cfg.recallQueries, len(vectors))]
	queries := make([][]float32, len(qids))
	for i, id := range qids {
		queries[i] = vectors[id]
	}
	full, err := benchkit.ExactTruth(ctx, vectors, queries, recallK+1, benchkit.InnerProduct, 2)
	if err != nil {
		return recallQueries{}, err
	}
	truth := benchkit.Truth{IDs: make([][]int32, len(qids)), Distances: make([][]float64, len(qids))}
	for i, id := range qids {
		for j, n := range full.IDs[i] {
			if int(n) != id && len(truth.IDs[i]) < recallK {
				truth.IDs[i] = append(truth.IDs[i], n)
				truth.Distances[i] = append(truth.Distances[i], full.Distances[i][j])
			}
		}
	}
	return recallQueries{ids: qids, queries: queries, truth: truth}, nil
}

const recallK = 10

// recallRow is one ef's recall@10 for one variant; negative where not measured.
type recallRow struct {
	ef                       int
	byID, byVector, snapshot float64
	local, localFiltered     float64
}

func (rq recallQueries) recall(vectors [][]float32, ids [][]int32) float64 {
	return benchkit.Recall(rq.truth, vectors, rq.queries, ids, recallK, benchkit.InnerProduct)
}

func efOrDefault(ef int, params *pb.IndexParams) int {
	if ef == 0 {
		return int(params.GetEfSearch())
	}
	return ef
}

// buildLocal builds a float32 index.HNSW with the server's M and efConstruction, inserting in
// the same order with level seed cfg.indexSeed (the catalogue's is 0).
func buildLocal(log *slog.Logger, cfg config, vectors [][]float32, params *pb.IndexParams) (*index.HNSW, error) {
	start := time.Now()
	local := index.NewHNSW(len(vectors[0]), index.Config{
		Metric: index.InnerProduct, M: int(params.GetM()), EFConstruction: int(params.GetEfConstruction()),
		EFSearch: int(params.GetEfSearch()), Seed: cfg.indexSeed,
	})
	for i, v := range vectors {
		if err := local.Add(index.Key(i), v); err != nil {
			return nil, fmt.Errorf("servebench: local index: %w", err)
		}
	}
	log.Info("local index built", "seconds", time.Since(start).Seconds())
	return local, nil
}

// servedRecall measures recall@10 of one server's SearchById and SearchByVector (and of the
// local index, when built) at each ef.
func servedRecall(ctx context.Context, log *slog.Logger, in *instance, cfg config, vectors [][]float32,
	rq recallQueries, local *index.HNSW) ([]recallRow, error) {
	var rows []recallRow
	for _, e := range cfg.recallEFs {
		ef := efOrDefault(e, in.params)
		byID := make([][]int32, len(rq.ids))
		byVec := make([][]int32, len(rq.ids))
		own := make([][]int32, len(rq.ids))
		ownFiltered := make([][]int32, len(rq.ids))
		for i, id := range rq.ids {
			resp, err := in.client.SearchById(ctx, &pb.SearchByIdRequest{Id: benchkit.CatalogueID(id), K: recallK, Ef: int32(ef)})
			if err != nil {
				return nil, fmt.Errorf("servebench: %s: SearchById %s: %w", in.name, benchkit.CatalogueID(id), err)
			}
			if byID[i], err = resultIDs(resp, -1, recallK); err != nil {
				return nil, err
			}
			resp, err = in.client.SearchByVector(ctx, &pb.SearchByVectorRequest{Vector: vectors[id], K: recallK + 1, Ef: int32(ef)})
			if err != nil {
				return nil, fmt.Errorf("servebench: %s: SearchByVector: %w", in.name, err)
			}
			if byVec[i], err = resultIDs(resp, id, recallK); err != nil {
				return nil, err
			}
			if local != nil {
				own[i] = dropSelf(local.Search(vectors[id], recallK+1, index.SearchOptions{EF: ef}), id, 0)
				notSelf := func(key index.Key) bool { return int(key) != id }
				ownFiltered[i] = dropSelf(local.Search(vectors[id], recallK, index.SearchOptions{EF: ef, Filter: notSelf}), -1, 0)
			}
		}
		row := recallRow{ef: ef, byID: rq.recall(vectors, byID), byVector: rq.recall(vectors, byVec), local: -1, localFiltered: -1}
		if local != nil {
			row.local, row.localFiltered = rq.recall(vectors, own), rq.recall(vectors, ownFiltered)
		}
		rows = append(rows, row)
		log.Info("recall", "variant", in.name, "ef", ef, "served_by_id", row.byID, "served_by_vector", row.byVector, "local", row.local)
	}
	return rows, nil
}

// dropSelf turns neighbours into catalogue positions (key minus offset), dropping self
// (unless -1), keeping at most recallK.
func dropSelf(ns []index.Neighbor, self int, offset int) []int32 {
	var ids []int32
	for _, n := range ns {
		if p := int(n.Key) - offset; p != self && len(ids) < recallK {
			ids = append(ids, int32(p))
		}
	}
	return ids
}

// resultIDs turns served results back into catalogue positions, dropping self (unless -1),
// keeping at most k.
func resultIDs(resp *pb.SearchResponse, self, k int) ([]int32, error) {
	var ids []int32
	for _, r := range resp.GetResults() {
		n, err := strconv.Atoi(strings.TrimPrefix(r.GetProduct().GetId(), "bench-"))
		if err != nil {
			return nil, fmt.Errorf("servebench: result id %q: %w", r.GetProduct().GetId(), err)
		}
		if n != self && len(ids) < k {
			ids = append(ids, int32(n))
		}
	}
	return ids, nil
}

// snapshotRecall loads the graph a stopped server saved and searches it directly at the same
// ef values, filling in the snapshot column of in.recall and the graph's bytes per photo. The
// store numbers keys from 1 in ingest order; that is checked before it is relied on. A graph
// of int8 codes holds no full vectors: it re-ranks on the benchmark's copy, as the server
// re-ranks on its store's.
func snapshotRecall(log *slog.Logger, in *instance, cfg config, vectors [][]float32, rq recallQueries) error {
	path := filepath.Join(in.data, catalog.SnapshotFileName)
	source := func(k index.Key) []float32 {
		if k < 1 || int(k) > len(vectors) {
			return nil
		}
		return vectors[k-1]
	}
	g, _, err := index.LoadSnapshot(path)
	if errors.Is(err, index.ErrNoVectors) {
		g, _, err = index.LoadSnapshotWith(path, index.LoadOptions{Vectors: source})
	}
	if err != nil {
		return fmt.Errorf("servebench: %s: load the server's snapshot: %w", in.name, err)
	}
	st := g.Stats()
	in.graphBP = float64(st.Bytes) / float64(max(st.Live, 1))
	for i := 0; i < len(vectors); i += max(1, len(vectors)/200) {
		// With its own full vectors the graph must hold item i's under key i+1; with codes
		// and the source, a search for item i must find a key whose source vector is item i's.
		ok := false
		if v, has := g.Vector(index.Key(i + 1)); has && !st.Quantized {
			ok = -benchkit.InnerProduct.Distance(v, vectors[i]) >= 1-1e-4
		} else if st.Quantized {
			top := g.Search(vectors[i], 1, index.SearchOptions{})
			ok = len(top) == 1 && top[0].Score >= 1-1e-4
		}
		if !ok {
			return fmt.Errorf("servebench: %s: snapshot key %d does not hold item %d's vector", in.name, i+1, i)
		}
	}
	for j, e := range cfg.recallEFs {
		if j >= len(in.recall) {
			break
		}
		ef := efOrDefault(e, in.params)
		got := make([][]int32, len(rq.ids))
		for i, id := range rq.ids {
			got[i] = dropSelf(g.Search(vectors[id], recallK+1, index.SearchOptions{EF: ef}), id, 1)
		}
		in.recall[j].snapshot = rq.recall(vectors, got)
		log.Info("snapshot recall", "variant", in.name, "ef", ef, "recall", in.recall[j].snapshot)
	}
	return nil
}

func commandLine() string {
	args := make([]string, 0, len(os.Args))
	args = append(args, "servebench")
	for _, a := range os.Args[1:] {
		if strings.ContainsAny(a, " |") {
			a = "'" + a + "'"
		}
		args = append(args, a)
	}
	return strings.Join(args, " ")
}

func perPhoto(bytes int64, items int) string {
	return thousands(float64(bytes) / float64(items))
}

// thousands formats a number rounded to an integer with comma separators.
func thousands(x float64) string {
	s := strconv.FormatInt(int64(math.Round(math.Abs(x))), 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	if math.Round(x) < 0 {
		s = "-" + s
	}
	return s
}

func report(machine benchkit.Machine, cfg config, description string, items int, insts []*instance, local bool) string {
	var md strings.Builder
	fmt.Fprintf(&md, "## Serving: `lookalike serve` on 127.0.0.1 over gRPC\n\n%s", machine.Markdown())
	fmt.Fprintf(&md, "- command: `%s`\n", commandLine())
	fmt.Fprintf(&md, "- catalogue: %s\n", description)
	p := insts[0].params
	fmt.Fprintf(&md, "- server index: M=%d, efConstruction=%d, default efSearch=%d, metric %s\n", p.GetM(), p.GetEfConstruction(), p.GetEfSearch(), p.GetMetric())
	md.WriteString("- variants, each its own server and data folder, all running side by side (an idle one costs no CPU):\n")
	for _, in := range insts {
		bin := cfg.bin
		if in.bin != "" {
			bin = in.bin
		}
		fmt.Fprintf(&md, "  - `%s`: `%s %s`\n", in.name, bin, strings.TrimSpace(cfg.serveArgs+" "+strings.Join(in.args, " ")))
	}
	md.WriteString("- the machine is shared with other work and clients and servers share its cores: compare the variants within this run, " +
		"whose load levels are interleaved\n\n")

	mem := benchkit.Table{
		Title: "ingest and memory",
		Note: "One UpsertStream of ready vectors (no embedding) per server, the client sending while the server answers; the rate counts items acknowledged. " +
			"Memory is the server process's resident set from /proc/PID/status (VmRSS), split into anonymous memory " +
			"(Go heap and runtime: graph, codes, metadata, freed memory not yet returned to the OS, the embedder's buffers once SearchByImage has run) " +
			"and file-backed pages (the binary, ONNX Runtime and the bbolt store's mmapped pages the process has touched, which the kernel can drop and read again). " +
			"'empty' is the server ready before the ingest; 'after restart' a fresh process that loaded the graph snapshot the first one saved at shutdown; " +
			"'after load' follows the load levels below. Per photo is (RSS - the empty server's RSS) / items. " +
			"The graph column is index.Stats().Bytes per photo of the server's snapshot loaded in the benchmark (links, codes or vectors, key tables).",
		Header: []string{"variant", "items", "ingest items/s"},
	}
	var whens []string
	for _, in := range insts {
		for _, s := range in.memory {
			if !slices.Contains(whens, s.when) {
				whens = append(whens, s.when)
			}
		}
	}
	for _, w := range whens {
		mem.Header = append(mem.Header, "MB "+w+": RSS (anon + file)")
	}
	perWhen := []string{}
	for _, w := range whens {
		if w != "empty" && w != "after ingest" {
			perWhen = append(perWhen, w)
			mem.Header = append(mem.Header, "bytes per photo "+w+": RSS (anon + file)")
		}
	}
	mem.Header = append(mem.Header, "peak RSS MB", "graph bytes per photo")
	mb := func(b int64) string { return fmt.Sprintf("%.0f", float64(b)/(1<<20)) }
	for _, in := range insts {
		row := []any{in.name, items, fmt.Sprintf("%.0f", in.ingest)}
		sample := map[string]memory{}
		var peak int64
		for _, s := range in.memory {
			sample[s.when] = s.mem
			peak = max(peak, s.mem.peak)
		}
		for _, w := range whens {
			m, ok := sample[w]
			if !ok {
				row = append(row, "-")
				continue
			}
			row = append(row, fmt.Sprintf("%s (%s + %s)", mb(m.rss), mb(m.anon), mb(m.file)))
		}
		empty, haveEmpty := sample["empty"]
		for _, w := range perWhen {
			m, ok := sample[w]
			if !ok || !haveEmpty {
				row = append(row, "-")
				continue
			}
			row = append(row, fmt.Sprintf("%s (%s + %s)", perPhoto(m.rss-empty.rss, items),
				perPhoto(m.anon-empty.anon, items), perPhoto(m.file-empty.file, items)))
		}
		row = append(row, mb(peak), thousands(in.graphBP))
		mem.Add(row...)
	}
	md.WriteString(mem.Markdown())

	load := benchkit.Table{
		Title: "latency and throughput under load",
		Note: fmt.Sprintf("Each client sends its next request as soon as the last one returns (closed loop), "+
			"%s per SearchById level and %s per SearchByImage level and round, %d round(s) with the variants interleaved, "+
			"latencies pooled over the rounds; k=10, the server's default ef. "+
			"SearchById picks a random catalogue id; SearchByImage sends a random shared photo (clothing and abo, JPEG bytes as stored), "+
			"which the server decodes and embeds. Client and server share the machine's cores.",
			cfg.duration, cfg.imageDuration, cfg.rounds),
		Header: []string{"rpc", "clients", "variant", "requests", "errors", "QPS", "p50 ms", "p95 ms", "p99 ms"},
	}
	for _, rpc := range cfg.rpcs {
		for _, c := range cfg.clients {
			for _, in := range insts {
				r := in.cells[fmt.Sprintf("%s/%d", rpc, c)]
				if r == nil {
					continue
				}
				q := fmt.Sprintf("%.0f", r.QPS())
				if rpc == rpcByImage {
					q = fmt.Sprintf("%.1f", r.QPS())
				}
				load.Add(rpc, c, in.name, len(r.Latencies), r.Errors, q, benchkit.Millis(benchkit.Percentile(r.Latencies, 50)),
					benchkit.Millis(benchkit.Percentile(r.Latencies, 95)), benchkit.Millis(benchkit.Percentile(r.Latencies, 99)))
			}
		}
	}
	md.WriteString(load.Markdown())
	if slices.Contains(cfg.rpcs, rpcByID) {
		most := cfg.clients[0]
		for _, c := range cfg.clients {
			most = max(most, c)
		}
		var parts []string
		for _, in := range insts {
			if r := in.cells[fmt.Sprintf("%s/%d", rpcByID, most)]; r != nil {
				p99 := benchkit.Percentile(r.Latencies, 99)
				verdict := "met"
				if p99 >= 5*time.Millisecond {
					verdict = "not met"
				}
				parts = append(parts, fmt.Sprintf("%s %s ms (**%s**)", in.name, benchkit.Millis(p99), verdict))
			}
		}
		fmt.Fprintf(&md, "SearchById p99 at %d clients (target < 5 ms on 100k real-distribution photos): %s.\n\n", most, strings.Join(parts, ", "))
	}

	if cfg.recallQueries > 0 {
		rec := benchkit.Table{
			Title: "recall@10: served search vs the server's own graph",
			Note: fmt.Sprintf("%d random catalogue items as queries, the same for every variant; truth by exact brute force over all %d vectors, "+
				"the query item excluded. SearchById excludes the query item itself; SearchByVector asks for k+1 and the benchmark drops self. "+
				"\"server's graph\" is the snapshot the server saved at shutdown, loaded with index.LoadSnapshot and searched in the benchmark "+
				"(k+1, self dropped; an int8 graph re-ranks on the benchmark's copy of the vectors): equal to served means no loss in the service layer.",
				cfg.recallQueries, items),
			Header: []string{"variant", "ef", "served SearchById", "served SearchByVector", "server's graph"},
		}
		if local {
			rec.Note += fmt.Sprintf(" \"local float32 index\" is an index.HNSW built in the benchmark with the server's M and efConstruction, "+
				"the same insertion order and level seed %d (the catalogue's is 0).", cfg.indexSeed)
			rec.Header = append(rec.Header, "local float32 index (k+1, self dropped)", "local float32 index (Filter excludes self)")
		}
		for _, in := range insts {
			for _, r := range in.recall {
				row := []any{in.name, r.ef, fmt.Sprintf("%.4f", r.byID), fmt.Sprintf("%.4f", r.byVector), fmt.Sprintf("%.4f", r.snapshot)}
				if local {
					row = append(row, fmt.Sprintf("%.4f", r.local), fmt.Sprintf("%.4f", r.localFiltered))
				}
				rec.Add(row...)
			}
		}
		md.WriteString(rec.Markdown())
	}
	return md.String()
}
