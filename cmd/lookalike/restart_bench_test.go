//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"lookalike/catalog"
	"lookalike/embed"
	pb "lookalike/proto/lookalike/v1"
	"lookalike/server"
)

// Environment of BenchmarkRestartAfterKill.
const (
	restartPhotosEnv     = "LOOKALIKE_RESTART_PHOTOS"             // photos stored (default 100,000)
	restartPerProductEnv = "LOOKALIKE_RESTART_PHOTOS_PER_PRODUCT" // photos per product (default 4)
)

// BenchmarkRestartAfterKill measures how long `lookalike serve` (the binary, built from this
// tree into a temporary directory, with the default model and HNSW parameters) takes after a
// kill -9 from its start to health SERVING, on a data directory of LOOKALIKE_RESTART_PHOTOS
// ready vectors (default 100,000; clustered around 1,000 random centres, as product photos
// are, rather than uniform noise), LOOKALIKE_RESTART_PHOTOS_PER_PRODUCT to a product:
//
//   - no-snapshot: killed before any graph snapshot was saved, so the graph is rebuilt from
//     the store;
//   - snapshot: killed with a snapshot covering the whole store, so the graph is loaded;
//   - snapshot+bound: killed after catalog.DefaultSnapshotChanges more photos were written since
//     the snapshot (the most a crash leaves with the default --snapshot-changes), so the graph
//     is loaded and caught up from the change log.
//
// It reports seconds to SERVING per restart, checks that the server then answers a search
// for the last photo written with that photo (whether its graph holds it yet or not), and
// reports seconds until the graph holds every photo (a start with many changes to bring in
// serves first and catches its graph up in the background), and logs the server's own
// account (model, store, graph). It is a benchmark, never part of `go test ./...`; scripts/restart-time.sh runs it:
//
//	go test -run '^$' -bench '^BenchmarkRestartAfterKill$' -benchtime 1x -timeout 3h ./cmd/lookalike/
func BenchmarkRestartAfterKill(b *testing.B) {
	photos := restartEnvInt(b, restartPhotosEnv, 100_000)
	perProduct := restartEnvInt(b, restartPerProductEnv, 4)
	r := newRestartBench(b)
	r.perProduct = perProduct

	// Load the data directory through a server that never saves a snapshot, then kill it.
	srv := r.start(b, "-1s")
	if _, err := srv.waitServing(); err != nil {
		b.Fatalf("%v\n%s", err, srv.logs.String())
	}
	start := time.Now()
	r.ingest(srv, 0, photos, perProduct)
	took := time.Since(start)
	// Logged by the first case: a parent benchmark's own log is not shown.
	loaded := fmt.Sprintf("loaded %d photos (%d to a product) through UpsertStream in %v (%.0f photos/s)",
		photos, perProduct, took.Round(time.Millisecond), float64(photos)/took.Seconds())
	srv.kill9(b)
	if _, err := os.Stat(r.snapshot()); !errors.Is(err, os.ErrNotExist) {
		b.Fatalf("a graph snapshot exists after the load (%v); the no-snapshot case would not be one", err)
	}

	b.Run("no-snapshot", func(b *testing.B) {
		b.Log(loaded)
		var sum, graph time.Duration
		for i := range b.N {
			if err := os.Remove(r.snapshot()); err != nil && !errors.Is(err, os.ErrNotExist) {
				b.Fatal(err)
			}
			// The last one stops gracefully, saving the snapshot the next case needs
			// (rather than building the graph once more only to save it).
			serving, complete := r.measure(b, "no snapshot", photos, i == b.N-1)
			sum, graph = sum+serving, graph+complete
		}
		b.ReportMetric(sum.Seconds()/float64(b.N), "s-to-serving")
		b.ReportMetric(graph.Seconds()/float64(b.N), "s-to-graph")
	})

	// A snapshot covering the store (saved by the graceful stop above); then a kill -9 of
	// an idle server, so that the timed start follows a kill like the others.
	if _, err := os.Stat(r.snapshot()); err != nil {
		b.Fatalf("no graph snapshot after a graceful stop: %v", err)
	}
	srv = r.start(b, "-1s")
	if _, err := srv.waitServing(); err != nil {
		b.Fatalf("%v\n%s", err, srv.logs.String())
	}
	srv.kill9(b)
	b.Run("snapshot", func(b *testing.B) {
		var sum, graph time.Duration
		for range b.N {
			serving, complete := r.measure(b, "snapshot", photos, false)
			sum, graph = sum+serving, graph+complete
		}
		b.ReportMetric(sum.Seconds()/float64(b.N), "s-to-serving")
		b.ReportMetric(graph.Seconds()/float64(b.N), "s-to-graph")
	})

	// The most a crash leaves to replay with the default --snapshot-changes.
	more := max(catalog.DefaultSnapshotChanges, perProduct)
	srv = r.start(b, "-1s")
	if _, err := srv.waitServing(); err != nil {
		b.Fatalf("%v\n%s", err, srv.logs.String())
	}
	r.ingest(srv, photos, more, perProduct)
	srv.kill9(b)
	b.Run("snapshot+bound", func(b *testing.B) {
		var sum, graph time.Duration
		for range b.N {
			serving, complete := r.measure(b, fmt.Sprintf("snapshot + %d photos", more), photos+more, false)
			sum, graph = sum+serving, graph+complete
		}
		b.ReportMetric(sum.Seconds()/float64(b.N), "s-to-serving")
		b.ReportMetric(graph.Seconds()/float64(b.N), "s-to-graph")
	})
}

func restartEnvInt(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}

// restartBench is a built binary and its data directory.
type restartBench struct {
	b    *testing.B
	bin  string
	data string
	env  []string
	// perProduct is how many photos each product has (photo i is in product i/perProduct).
	perProduct int
}

func newRestartBench(b *testing.B) *restartBench {
	b.Helper()
	model, err := embed.FindModel()
	if err != nil {
		b.Fatalf("the embedding model is required: %v", err)
	}
	runtimeLib, err := embed.FindRuntime()
	if err != nil {
		b.Fatalf("the ONNX Runtime library is required: %v", err)
	}
	dir := b.TempDir()
	r := &restartBench{b: b, bin: filepath.Join(dir, "lookalike"), data: filepath.Join(dir, "data"),
		env: append(os.Environ(), "LOOKALIKE_MODEL="+model, "LOOKALIKE_ORT_LIB="+runtimeLib)}
	build := exec.Command("go", "build", "-o", r.bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	return r
}

func (r *restartBench) snapshot() string { return filepath.Join(r.data, catalog.SnapshotFileName) }

// restartServer is one `lookalike serve` process of the benchmark.
type restartServer struct {
	cmd     *exec.Cmd
	began   time.Time
	logs    *logWatch
	done    chan struct{}
	waitErr error
	conn    *grpc.ClientConn
	client  pb.LookalikeClient
}

// start launches `lookalike serve` on the data directory for benchmark b.
func (r *restartBench) start(b *testing.B, snapshotInterval string) *restartServer {
	b.Helper()
	// Snapshots only where a case says so: no timed saves and none by change count (the
	// last case restarts with the most changes that count lets a crash leave).
	cmd := exec.Command(r.bin, "serve", "--data", r.data, "--listen", "127.0.0.1:0", "--log-json",
		"--snapshot-interval", snapshotInterval, "--snapshot-changes", "-1")
	cmd.Env = r.env
	stderr, err := cmd.StderrPipe()
	if err != nil {
		b.Fatal(err)
	}
	s := &restartServer{cmd: cmd, logs: newLogWatch(), done: make(chan struct{})}
	cmd.Stdout = s.logs
	s.began = time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	go func() {
		s.logs.consume(stderr)
		s.waitErr = cmd.Wait()
		close(s.done)
	}()
	b.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-s.done
		if s.conn != nil {
			s.conn.Close()
		}
	})
	return s
}

// waitServing polls the health service from the moment the server listens until it says
// SERVING and returns the time from the process start.
func (s *restartServer) waitServing() (time.Duration, error) {
	listening, err := s.logs.wait(0, func(m map[string]any) bool { return m["msg"] == "listening" }, time.Hour)
	if err != nil {
		return 0, fmt.Errorf("waiting for the server to listen: %w", err)
	}
	addr, _ := listening["grpc"].(string)
	s.conn, err = grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		return 0, err
	}
	s.client = pb.NewLookalikeClient(s.conn)
	health := healthpb.NewHealthClient(s.conn)
	for deadline := time.Now().Add(time.Hour); time.Now().Before(deadline); {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: server.ServiceName})
		cancel()
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return time.Since(s.began), nil
		}
		select {
		case <-s.done:
			return 0, fmt.Errorf("the server exited before serving: %v", s.waitErr)
		case <-time.After(5 * time.Millisecond):
		}
	}
	return 0, errors.New("not SERVING within an hour")
}

// kill9 sends SIGKILL and waits for the process to end; b is the benchmark calling.
func (s *restartServer) kill9(b *testing.B) {
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.done
	var exit *exec.ExitError
	if !errors.As(s.waitErr, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		b.Fatalf("the server ended with %v, not the SIGKILL\n%s", s.waitErr, s.logs.String())
	}
}

// term stops the server with SIGTERM (which saves the graph snapshot) and waits for it.
func (s *restartServer) term(b *testing.B) {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	<-s.done
	if s.waitErr != nil {
		b.Fatalf("the server exited with %v after SIGTERM\n%s", s.waitErr, s.logs.String())
	}
}

// measure starts the server after a kill -9, times it to SERVING, checks that it holds
// every photo and finds the last one written (the one a catch-up applies last, if any), times
// it until its graph holds every photo, logs what its start did, kills it again (or,
// graceful, stops it with SIGTERM) and returns both times from the start.
func (r *restartBench) measure(b *testing.B, what string, photos int, graceful bool) (serving, graph time.Duration) {
	b.StopTimer()
	srv := r.start(b, "-1s")
	b.StartTimer()
	serving, err := srv.waitServing()
	b.StopTimer()
	if err != nil {
		b.Fatalf("%v\n%s", err, srv.logs.String())
	}
	ctx := context.Background()
	st, err := srv.client.Stats(ctx, &pb.StatsRequest{})
	if err != nil {
		b.Fatal(err)
	}
	if st.GetPhotos() != uint64(photos) {
		b.Fatalf("after the restart: %d photos, want %d", st.GetPhotos(), photos)
	}
	catchingUp := st.GetIndex().GetCatchingUp()
	last := photos - 1
	res, err := srv.client.SearchByVector(ctx, &pb.SearchByVectorRequest{Vector: clusteredVector(last, int(st.GetDim())), K: 1})
	if err != nil {
		b.Fatal(err)
	}
	if rs := res.GetResults(); len(rs) != 1 || rs[0].GetProduct().GetId() != fmt.Sprintf("p%07d", last/r.perProduct) || rs[0].GetScore() < 0.999 {
		b.Fatalf("once SERVING (%d photos catching up), a search for photo %d's vector found %v", catchingUp, last, rs)
	}
	// The server logs the end of its catch-up (before SERVING when there was little to do):
	// waiting for the line spares the server a poll of Stats beside its catch-up.
	graph = serving
	if catchingUp > 0 {
		if _, err := srv.logs.wait(0, func(m map[string]any) bool { return m["msg"] == "graph caught up with the store" }, 2*time.Hour); err != nil {
			b.Fatalf("waiting for the graph to catch up: %v\n%s", err, srv.logs.String())
		}
		graph = time.Since(srv.began)
	}
	if st, err = srv.client.Stats(ctx, &pb.StatsRequest{}); err != nil {
		b.Fatal(err)
	}
	if st.GetIndex().GetSize() != uint64(photos) || st.GetIndex().GetCatchingUp() != 0 {
		b.Fatalf("after the catch-up: graph %d (%d catching up), want %d", st.GetIndex().GetSize(), st.GetIndex().GetCatchingUp(), photos)
	}
	b.Logf("restart after kill -9, %s, %d photos: SERVING %.2fs after start (%d photos catching up), graph complete at %.2fs (%s)",
		what, photos, serving.Seconds(), catchingUp, graph.Seconds(), srv.account())
	if graceful {
		srv.term(b)
	} else {
		srv.kill9(b)
	}
	b.StartTimer()
	return serving, graph
}

// account summarises the server's log of its start: when the model, store and graph were
// ready, counted from the first log line.
func (s *restartServer) account() string {
	s.logs.mu.Lock()
	defer s.logs.mu.Unlock()
	var first time.Time
	out := ""
	for _, m := range s.logs.lines {
		at, err := time.Parse(time.RFC3339Nano, fmt.Sprint(m["time"]))
		if err != nil {
			continue
		}
		if first.IsZero() {
			first = at
		}
		msg := fmt.Sprint(m["msg"])
		switch msg {
		case "embed: model loaded", "store opened", "building graph from store", "graph loaded from snapshot", "graph caught up with the store", "serving":
			if out != "" {
				out += ", "
			}
			out += fmt.Sprintf("%s at +%.2fs", msg, at.Sub(first).Seconds())
		}
	}
	return out
}

// ingest stores photos ready vectors, perProduct to a product, numbered from first, over two
// UpsertStream calls.
func (r *restartBench) ingest(srv *restartServer, first, photos, perProduct int) {
	b := r.b
	st, err := srv.client.Stats(context.Background(), &pb.StatsRequest{})
	if err != nil {
		b.Fatal(err)
	}
	dim := int(st.GetDim())
	const streams = 2
	products := (photos + perProduct - 1) / perProduct
	var wg sync.WaitGroup
	errs := make([]error, streams)
	for s := range streams {
		wg.Go(func() {
			errs[s] = r.ingestStream(srv, dim, first, photos, perProduct, s, streams, products)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		b.Fatal(err)
	}
}

// ingestStream sends every streams-th product from s over one stream and checks each result.
func (r *restartBench) ingestStream(srv *restartServer, dim, first, photos, perProduct, s, streams, products int) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := srv.client.UpsertStream(ctx)
	if err != nil {
		return err
	}
	sendErr := make(chan error, 1)
	go func() {
		for p := s; p < products; p += streams {
			req := &pb.UpsertRequest{Id: fmt.Sprintf("p%07d", first/perProduct+p), Category: fmt.Sprint("c", p%20)}
			for k := p * perProduct; k < min((p+1)*perProduct, photos); k++ {
				req.Photos = append(req.Photos, &pb.PhotoInput{Id: strconv.Itoa(k),
					Content: &pb.PhotoInput_Vector{Vector: &pb.Vector{Values: clusteredVector(first+k, dim)}}})
			}
			if err := stream.Send(req); err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- stream.CloseSend()
	}()
	for {
		res, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return <-sendErr
		}
		if err != nil {
			return err
		}
		if res.GetOutcome() != pb.Outcome_OUTCOME_CREATED {
			return fmt.Errorf("upsert %s: %v %s", res.GetId(), res.GetOutcome(), res.GetErrorMessage())
		}
	}
}

// clusteredVector is photo i's vector: one of 1,000 fixed random centres plus noise of about
// the same length, so that neighbourhoods exist as among real photo embeddings.
func clusteredVector(i, dim int) []float32 {
	centre := rand.New(rand.NewPCG(uint64(i%1000), 7))
	noise := rand.New(rand.NewPCG(uint64(i), 8))
	v := make([]float32, dim)
	scale := 1 / math.Sqrt(float64(dim))
	for j := range v {
		v[j] = float32(centre.NormFloat64()*scale + 0.8*noise.NormFloat64()*scale)
	}
	return v
}
