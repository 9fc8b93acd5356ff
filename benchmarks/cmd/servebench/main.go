// Command servebench starts a real `lookalike serve` on 127.0.0.1 and measures it over gRPC:
// UpsertStream ingest rate, SearchById and SearchByImage throughput and p50/p95/p99 latency at
// several numbers of concurrent clients, and the recall@10 of served SearchById against exact
// ground truth beside a locally built index.HNSW with the server's parameters on the same
// vectors, at the same ef.
//
// The catalogue is made of real MobileNetV2 embeddings of the shared photos (written by
// embedbench), each reused under many distinct ids with small Gaussian noise added and the
// vector re-normalised, because the shared photos number about two thousand and the
// benchmark wants a catalogue of 100,000.
//
//	servebench -items 100000 -clients 1,4,16 -duration 5s -out benchmarks/results
package main

import (
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
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"lookalike/benchmarks/internal/benchkit"
	"lookalike/catalog"
	"lookalike/index"
	"lookalike/internal/dataset"
	pb "lookalike/proto/lookalike/v1"
)

type config struct {
	items          int
	noise          float64
	clients        []int
	duration       time.Duration
	imageDuration  time.Duration
	recallQueries  int
	recallEFs      []int
	bin            string
	serveArgs      string
	photoVectors   string
	outDir, work   string
	seed           int64
	indexSeed      int64
	startupTimeout time.Duration
}

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

func run(ctx context.Context, log *slog.Logger, cfg config) error {
	machine := benchkit.DescribeMachine(ctx, ".")
	photos, err := benchkit.ReadFvecs(cfg.photoVectors)
	if err != nil {
		return fmt.Errorf("servebench: photo embeddings (run embedbench first): %w", err)
	}
	vectors := perturbedCatalogue(photos, cfg.items, cfg.noise, cfg.seed)
	images, err := queryImages()
	if err != nil {
		return err
	}

	if err := os.RemoveAll(cfg.work); err != nil {
		return fmt.Errorf("servebench: %w", err)
	}
	if err := os.MkdirAll(cfg.work, 0o755); err != nil {
		return fmt.Errorf("servebench: %w", err)
	}
	srv, err := startServer(ctx, log, cfg)
	if err != nil {
		return err
	}
	defer srv.stop(log)

	conn, err := grpc.NewClient(srv.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		return fmt.Errorf("servebench: dial %s: %w", srv.addr, err)
	}
	defer conn.Close()
	client := pb.NewLookalikeClient(conn)
	if err := waitReady(ctx, client, cfg.startupTimeout, srv); err != nil {
		return err
	}

	ingestRate, err := ingest(ctx, client, vectors)
	if err != nil {
		return err
	}
	log.Info("ingested", "items", len(vectors), "items_per_s", ingestRate)
	stats, err := client.Stats(ctx, &pb.StatsRequest{})
	if err != nil {
		return fmt.Errorf("servebench: stats: %w", err)
	}
	params := stats.GetIndex()
	if stats.GetCount() != uint64(len(vectors)) {
		return fmt.Errorf("servebench: server holds %d items after ingesting %d", stats.GetCount(), len(vectors))
	}

	load := benchkit.Table{
		Title: "latency and throughput under load",
		Note: fmt.Sprintf("Each client sends its next request as soon as the last one returns (closed loop), "+
			"%s per SearchById level and %s per SearchByImage level; k=10, the server's default ef (%d). "+
			"SearchById picks a random catalogue id; SearchByImage sends a random shared photo (clothing and abo, JPEG bytes as stored), "+
			"which the server decodes and embeds. Client and server share the machine's cores.",
			cfg.duration, cfg.imageDuration, params.GetEfSearch()),
		Header: []string{"rpc", "clients", "requests", "errors", "QPS", "p50 ms", "p95 ms", "p99 ms"},
	}
	rng := rand.New(rand.NewSource(cfg.seed))
	for _, c := range cfg.clients {
		r := loadLevel(ctx, c, cfg.duration, rng.Int63(), func(ctx context.Context, rng *rand.Rand) error {
			_, err := client.SearchById(ctx, &pb.SearchByIdRequest{Id: itemID(rng.Intn(len(vectors))), K: 10})
			return err
		})
		load.Add("SearchById", c, r.requests, r.errors, fmt.Sprintf("%.0f", r.qps), benchkit.Millis(r.p50), benchkit.Millis(r.p95), benchkit.Millis(r.p99))
		log.Info("SearchById", "clients", c, "qps", r.qps, "p99", r.p99, "errors", r.errors)
	}
	for _, c := range cfg.clients {
		r := loadLevel(ctx, c, cfg.imageDuration, rng.Int63(), func(ctx context.Context, rng *rand.Rand) error {
			_, err := client.SearchByImage(ctx, &pb.SearchByImageRequest{Image: images[rng.Intn(len(images))], K: 10})
			return err
		})
		load.Add("SearchByImage", c, r.requests, r.errors, fmt.Sprintf("%.1f", r.qps), benchkit.Millis(r.p50), benchkit.Millis(r.p95), benchkit.Millis(r.p99))
		log.Info("SearchByImage", "clients", c, "qps", r.qps, "p99", r.p99, "errors", r.errors)
	}

	recall, rq, err := compareRecall(ctx, log, client, cfg, vectors, params)
	if err != nil {
		return err
	}
	// The server's own graph, read back from the snapshot it saves at shutdown, tells a gap
	// in the served recall apart: a graph built differently, or a loss in the serving path.
	srv.stop(log)
	snapshot, err := snapshotRecall(log, cfg, vectors, params, rq)
	if err != nil {
		return err
	}
	// The catalogue's data file is hundreds of MB of scratch; the server log stays.
	if err := os.RemoveAll(filepath.Join(cfg.work, "data")); err != nil {
		log.Warn("could not remove the server's data", "err", err)
	}

	var md strings.Builder
	fmt.Fprintf(&md, "## Serving: `lookalike serve` on 127.0.0.1 over gRPC\n\n%s", machine.Markdown())
	fmt.Fprintf(&md, "- catalogue: %d items, each a real 1280-d MobileNetV2 embedding of one of the %d shared photos "+
		"(photo i %% %d) plus Gaussian noise (sigma %.3g per component) and re-normalised, under distinct ids "+
		"(the shared photos are too few for 100,000 distinct items)\n"+
		"- server index: M=%d, efConstruction=%d, default efSearch=%d, metric %s\n\n",
		len(vectors), len(photos), len(photos), cfg.noise, params.GetM(), params.GetEfConstruction(), params.GetEfSearch(), params.GetMetric())
	ing := benchkit.Table{
		Title:  "ingest",
		Note:   "One UpsertStream carrying ready vectors (no embedding), client sending while the server answers; the rate counts items acknowledged.",
		Header: []string{"items", "items/s"},
	}
	ing.Add(len(vectors), fmt.Sprintf("%.0f", ingestRate))
	md.WriteString(ing.Markdown())
	md.WriteString(load.Markdown())
	md.WriteString(recall.Markdown())
	md.WriteString(snapshot.Markdown())
	return os.WriteFile(filepath.Join(cfg.outDir, "serve.md"), []byte(md.String()), 0o644)
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

func neighborIDs(ns []index.Neighbor) []int32 {
	ids := make([]int32, len(ns))
	for i, n := range ns {
		ids[i] = int32(n.Key)
	}
	return ids
}

func itemID(i int) string { return fmt.Sprintf("bench-%06d", i) }

// perturbedCatalogue makes n unit vectors: photo i%len(photos) plus N(0, sigma^2) noise per
// component, re-normalised. The noise keeps distinct ids from being exact duplicates.
func perturbedCatalogue(photos [][]float32, n int, sigma float64, seed int64) [][]float32 {
	rng := rand.New(rand.NewSource(seed))
	out := make([][]float32, n)
	for i := range out {
		src := photos[i%len(photos)]
		v := make([]float32, len(src))
		var ss float64
		for j, x := range src {
			y := float64(x) + rng.NormFloat64()*sigma
			v[j] = float32(y)
			ss += y * y
		}
		inv := float32(1 / math.Sqrt(ss))
		for j := range v {
			v[j] *= inv
		}
		out[i] = v
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

func startServer(ctx context.Context, log *slog.Logger, cfg config) (*server, error) {
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	data := filepath.Join(cfg.work, "data")
	args := strings.Fields(strings.NewReplacer("{addr}", addr, "{data}", data).Replace(cfg.serveArgs))
	s := &server{addr: addr, log: filepath.Join(cfg.work, "server.log"), done: make(chan error, 1)}
	logFile, err := os.Create(s.log)
	if err != nil {
		return nil, fmt.Errorf("servebench: %w", err)
	}
	s.cmd = exec.CommandContext(ctx, cfg.bin, args...)
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	s.cmd.Cancel = func() error { return s.cmd.Process.Signal(syscall.SIGTERM) }
	s.cmd.WaitDelay = 10 * time.Second
	if err := s.cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("servebench: start %s (make build builds it): %w", cfg.bin, err)
	}
	log.Info("server started", "bin", cfg.bin, "args", args, "log", s.log)
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
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		log.Warn("server killed after 30s")
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
				Id:       itemID(i),
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

type levelResult struct {
	requests, errors int
	qps              float64
	p50, p95, p99    time.Duration
}

// loadLevel runs clients closed-loop callers of call for d and summarises their latencies.
func loadLevel(ctx context.Context, clients int, d time.Duration, seed int64,
	call func(context.Context, *rand.Rand) error) levelResult {
	var mu sync.Mutex
	var all []time.Duration
	errs := 0
	var wg sync.WaitGroup
	start := time.Now()
	stopAt := start.Add(d)
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewSource(seed + int64(c)))
			var mine []time.Duration
			bad := 0
			for time.Now().Before(stopAt) && ctx.Err() == nil {
				t0 := time.Now()
				if err := call(ctx, rng); err != nil {
					bad++
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			all = append(all, mine...)
			errs += bad
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	return levelResult{
		requests: len(all), errors: errs, qps: float64(len(all)) / elapsed.Seconds(),
		p50: benchkit.Percentile(all, 50), p95: benchkit.Percentile(all, 95), p99: benchkit.Percentile(all, 99),
	}
}

// compareRecall measures recall@10 of served SearchById and of a local index.HNSW built with
// the server's parameters on the same vectors, both against exact truth, at the same ef. The
// query item itself is excluded from both, as SearchById excludes it.
func compareRecall(ctx context.Context, log *slog.Logger, client pb.LookalikeClient, cfg config,
	vectors [][]float32, params *pb.IndexParams) (benchkit.Table, recallQueries, error) {
	rng := rand.New(rand.NewSource(cfg.seed + 7))
	qids := rng.Perm(len(vectors))[:min(cfg.recallQueries, len(vectors))]
	queries := make([][]float32, len(qids))
	for i, id := range qids {
		queries[i] = vectors[id]
	}
	const k = 10
	full, err := benchkit.ExactTruth(ctx, vectors, queries, k+1, benchkit.InnerProduct, 2)
	if err != nil {
		return benchkit.Table{}, recallQueries{}, err
	}
	truth := benchkit.Truth{IDs: make([][]int32, len(qids)), Distances: make([][]float64, len(qids))}
	for i, id := range qids {
		for j, n := range full.IDs[i] {
			if int(n) != id && len(truth.IDs[i]) < k {
				truth.IDs[i] = append(truth.IDs[i], n)
				truth.Distances[i] = append(truth.Distances[i], full.Distances[i][j])
			}
		}
	}

	start := time.Now()
	local := index.NewHNSW(len(vectors[0]), index.Config{
		Metric: index.InnerProduct, M: int(params.GetM()), EFConstruction: int(params.GetEfConstruction()),
		EFSearch: int(params.GetEfSearch()), Seed: cfg.indexSeed,
	})
	for i, v := range vectors {
		if err := local.Add(index.Key(i), v); err != nil {
			return benchkit.Table{}, recallQueries{}, fmt.Errorf("servebench: local index: %w", err)
		}
	}
	log.Info("local index built", "seconds", time.Since(start).Seconds())

	tab := benchkit.Table{
		Title: "recall@10: served search vs the index on its own",
		Note: fmt.Sprintf("%d random catalogue items as queries; truth by exact brute force over all %d vectors, the query item excluded. "+
			"\"index\" is a local index.HNSW built in the benchmark with the server's M and efConstruction on the same vectors; "+
			"the two graphs are built separately, with the same insertion order and level seed (%d; the catalogue's is 0), so with seed 0 they should match exactly. "+
			"SearchById excludes the query item itself; the SearchByVector and index columns show whether a gap comes from the graph or from how self is excluded.",
			len(qids), len(vectors), cfg.indexSeed),
		Header: []string{"ef", "served SearchById", "served SearchByVector (k+1, self dropped)",
			"index.HNSW (k+1, self dropped)", "index.HNSW (Filter excludes self)", "SearchById - index"},
	}
	for _, ef := range cfg.recallEFs {
		if ef == 0 {
			ef = int(params.GetEfSearch())
		}
		served := make([][]int32, len(qids))
		servedVec := make([][]int32, len(qids))
		own := make([][]int32, len(qids))
		ownFiltered := make([][]int32, len(qids))
		for i, id := range qids {
			resp, err := client.SearchById(ctx, &pb.SearchByIdRequest{Id: itemID(id), K: k, Ef: int32(ef)})
			if err != nil {
				return tab, recallQueries{}, fmt.Errorf("servebench: SearchById %s: %w", itemID(id), err)
			}
			if served[i], err = resultIDs(resp, -1, k); err != nil {
				return tab, recallQueries{}, err
			}
			resp, err = client.SearchByVector(ctx, &pb.SearchByVectorRequest{Vector: vectors[id], K: k + 1, Ef: int32(ef)})
			if err != nil {
				return tab, recallQueries{}, fmt.Errorf("servebench: SearchByVector: %w", err)
			}
			if servedVec[i], err = resultIDs(resp, id, k); err != nil {
				return tab, recallQueries{}, err
			}
			for _, n := range local.Search(vectors[id], k+1, index.SearchOptions{EF: ef}) {
				if int(n.Key) != id && len(own[i]) < k {
					own[i] = append(own[i], int32(n.Key))
				}
			}
			notSelf := func(key index.Key) bool { return int(key) != id }
			ownFiltered[i] = neighborIDs(local.Search(vectors[id], k, index.SearchOptions{EF: ef, Filter: notSelf}))
		}
		recall := func(ids [][]int32) float64 {
			return benchkit.Recall(truth, vectors, queries, ids, k, benchkit.InnerProduct)
		}
		rs, rv, ri, rf := recall(served), recall(servedVec), recall(own), recall(ownFiltered)
		tab.Add(ef, fmt.Sprintf("%.4f", rs), fmt.Sprintf("%.4f", rv), fmt.Sprintf("%.4f", ri), fmt.Sprintf("%.4f", rf),
			fmt.Sprintf("%+.4f", rs-ri))
		log.Info("recall", "ef", ef, "served_by_id", rs, "served_by_vector", rv, "index", ri, "index_filtered", rf)
	}
	return tab, recallQueries{ids: qids, queries: queries, truth: truth}, nil
}

// recallQueries is the query set and truth compareRecall used, for snapshotRecall.
type recallQueries struct {
	ids     []int
	queries [][]float32
	truth   benchkit.Truth
}

// snapshotRecall loads the graph the server saved at shutdown and searches it directly at
// the same ef values. The store numbers keys from 1 in ingest order; that is checked on the
// vectors before it is relied on.
func snapshotRecall(log *slog.Logger, cfg config, vectors [][]float32, params *pb.IndexParams, rq recallQueries) (benchkit.Table, error) {
	path := filepath.Join(cfg.work, "data", catalog.SnapshotFileName)
	g, _, err := index.LoadHNSW(path)
	if err != nil {
		return benchkit.Table{}, fmt.Errorf("servebench: load the server's snapshot: %w", err)
	}
	for i := 0; i < len(vectors); i += max(1, len(vectors)/200) {
		v, ok := g.Vector(index.Key(i + 1))
		if cosine := -benchkit.InnerProduct.Distance(v, vectors[i]); !ok || cosine < 1-1e-4 {
			return benchkit.Table{}, fmt.Errorf("servebench: snapshot key %d does not hold item %d's vector", i+1, i)
		}
	}
	tab := benchkit.Table{
		Title: "recall@10 of the server's own graph, searched directly",
		Note: "The graph the server saved at shutdown (" + catalog.SnapshotFileName + "), loaded with index.LoadHNSW and searched " +
			"in the benchmark (k+1, self dropped) for the same queries: equal to served SearchById means no loss in the service layer.",
		Header: []string{"ef", "server's graph recall@10"},
	}
	const k = 10
	for _, ef := range cfg.recallEFs {
		if ef == 0 {
			ef = int(params.GetEfSearch())
		}
		got := make([][]int32, len(rq.ids))
		for i, id := range rq.ids {
			for _, n := range g.Search(vectors[id], k+1, index.SearchOptions{EF: ef}) {
				if int(n.Key)-1 != id && len(got[i]) < k {
					got[i] = append(got[i], int32(n.Key)-1)
				}
			}
		}
		r := benchkit.Recall(rq.truth, vectors, rq.queries, got, k, benchkit.InnerProduct)
		tab.Add(ef, fmt.Sprintf("%.4f", r))
		log.Info("snapshot recall", "ef", ef, "recall", r)
	}
	return tab, nil
}
