package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"lookalike/embed"
	"lookalike/internal/dataset"
	pb "lookalike/proto/lookalike/v1"
)

// sharedEmbedder is opened once per test binary and handed to every server through
// Config.Embedder, so restarts do not reload the model.
var sharedEmbedder = sync.OnceValues(func() (*embed.Embedder, error) {
	// The default model and ONNX Runtime, found as embed.FindModel and FindRuntime say;
	// their errors tell how to install them.
	return embed.Open(context.Background(), embed.Config{})
})

func testEmbedder(t testing.TB) *embed.Embedder {
	t.Helper()
	e, err := sharedEmbedder()
	if err != nil {
		t.Fatalf("open embedder: %v", err)
	}
	return e
}

// groceryState is the shared server with the grocery catalogue ingested, started by the
// first test that needs it and stopped by TestMain.
type groceryState struct {
	srv       *testServer
	catalogue []dataset.Photo // train + iconic, ids are file base names
	val       []dataset.Photo
	err       error
}

var (
	groceryOnce sync.Once
	grocery     groceryState
)

func TestMain(m *testing.M) {
	code := m.Run()
	if grocery.srv != nil {
		grocery.srv.shutdown()
		_ = os.RemoveAll(grocery.srv.dir)
	}
	if e, err := sharedEmbedder(); err == nil {
		_ = e.Close()
	}
	os.Exit(code)
}

// testServer is a real server on loopback.
type testServer struct {
	dir         string
	addr        string
	metricsAddr string
	conn        *grpc.ClientConn
	client      pb.LookalikeClient
	health      healthpb.HealthClient
	cancel      context.CancelFunc
	done        chan error
	stopOnce    sync.Once
	stopErr     error
}

// launch starts Serve on fresh loopback listeners without waiting for it to load.
func launch(t testing.TB, cfg Config, dialOpts ...grpc.DialOption) (*testServer, error) {
	if cfg.Embedder == nil {
		cfg.Embedder = testEmbedder(t)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	mlis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &testServer{dir: cfg.DataDir, addr: lis.Addr().String(), metricsAddr: mlis.Addr().String(),
		cancel: cancel, done: make(chan error, 1)}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	go func() { s.done <- Serve(ctx, cfg, lis, mlis, logger) }()
	if len(dialOpts) == 0 {
		dialOpts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	dialOpts = append(dialOpts, grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	conn, err := grpc.NewClient(s.addr, dialOpts...)
	if err != nil {
		cancel()
		return nil, err
	}
	s.conn = conn
	s.client = pb.NewLookalikeClient(conn)
	s.health = healthpb.NewHealthClient(conn)
	return s, nil
}

// startServer launches a server and waits until its health check says SERVING.
func startServer(t testing.TB, cfg Config, dialOpts ...grpc.DialOption) *testServer {
	t.Helper()
	s, err := launch(t, cfg, dialOpts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.waitServing(60 * time.Second); err != nil {
		s.shutdown()
		t.Fatal(err)
	}
	return s
}

func (s *testServer) waitServing(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := s.health.Check(ctx, &healthpb.HealthCheckRequest{Service: ServiceName})
		cancel()
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return nil
		}
		select {
		case err := <-s.done:
			s.done <- err
			return fmt.Errorf("server stopped before serving: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("server not SERVING after %v (last: %v, %v)", timeout, resp.GetStatus(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// shutdown cancels the server's context and waits for Serve to return.
func (s *testServer) shutdown() error {
	s.stopOnce.Do(func() {
		s.cancel()
		s.stopErr = <-s.done
		_ = s.conn.Close()
	})
	return s.stopErr
}

// groceryServer returns the shared server with the grocery catalogue (train + iconic)
// ingested through UpsertStream.
func groceryServer(t *testing.T) *groceryState {
	t.Helper()
	groceryOnce.Do(func() {
		photos, err := dataset.LoadPhotos(dataset.PhotosGrocery)
		if err != nil {
			grocery.err = err
			return
		}
		for _, p := range photos {
			if p.Fields["split"] == "val" {
				grocery.val = append(grocery.val, p)
			} else {
				grocery.catalogue = append(grocery.catalogue, p)
			}
		}
		dir, err := os.MkdirTemp("", "lookalike-server-test-")
		if err != nil {
			grocery.err = err
			return
		}
		s, err := launch(t, Config{DataDir: dir})
		if err != nil {
			grocery.err = err
			return
		}
		grocery.srv = s
		if err := s.waitServing(60 * time.Second); err != nil {
			grocery.err = err
			return
		}
		start := time.Now()
		results, err := ingest(context.Background(), s.client, requestsFor(grocery.catalogue))
		if err != nil {
			grocery.err = err
			return
		}
		for _, r := range results {
			if r.GetOutcome() != pb.Outcome_OUTCOME_CREATED {
				grocery.err = fmt.Errorf("ingest %s: %v %s", r.GetId(), r.GetOutcome(), r.GetErrorMessage())
				return
			}
		}
		t.Logf("ingested %d grocery photos through UpsertStream in %v", len(results), time.Since(start).Round(time.Millisecond))
	})
	if grocery.err != nil {
		t.Fatalf("grocery server: %v", grocery.err)
	}
	return &grocery
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func photoID(p dataset.Photo) string { return filepath.Base(p.Path) }

func requestsFor(photos []dataset.Photo) func() (*pb.UpsertRequest, error) {
	i := 0
	return func() (*pb.UpsertRequest, error) {
		if i == len(photos) {
			return nil, io.EOF
		}
		p := photos[i]
		i++
		b, err := os.ReadFile(p.Path)
		if err != nil {
			return nil, err
		}
		return &pb.UpsertRequest{
			Id: photoID(p), Content: &pb.UpsertRequest_Image{Image: b},
			Category: p.Fields["coarse_label"], Title: p.Label,
			Attributes: map[string]string{"label": p.Label, "iconic": p.Fields["is_iconic"]},
		}, nil
	}
}

// ingest streams requests (next returns io.EOF at the end) and collects every result,
// sending and receiving concurrently as a real client would.
// ingestAll sends reqs over one UpsertStream.
func ingestAll(ctx context.Context, c pb.LookalikeClient, reqs []*pb.UpsertRequest) ([]*pb.UpsertResult, error) {
	i := 0
	return ingest(ctx, c, func() (*pb.UpsertRequest, error) {
		if i == len(reqs) {
			return nil, io.EOF
		}
		i++
		return reqs[i-1], nil
	})
}

func ingest(ctx context.Context, c pb.LookalikeClient, next func() (*pb.UpsertRequest, error)) ([]*pb.UpsertResult, error) {
	stream, err := c.UpsertStream(ctx)
	if err != nil {
		return nil, err
	}
	sendErr := make(chan error, 1)
	go func() {
		for {
			req, err := next()
			if errors.Is(err, io.EOF) {
				sendErr <- stream.CloseSend()
				return
			}
			if err != nil {
				sendErr <- err
				return
			}
			if err := stream.Send(req); err != nil {
				sendErr <- err
				return
			}
		}
	}()
	var out []*pb.UpsertResult
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, <-sendErr
}

func codeOfErr(err error) codes.Code { return status.Code(err) }
