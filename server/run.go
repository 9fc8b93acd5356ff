package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/net/netutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"lookalike/catalog"
	"lookalike/embed"
	pb "lookalike/proto/lookalike/v1"
)

// Defaults for Config fields left at zero.
const (
	// DefaultListenAddr is the one default gRPC address: serve listens on it and the CLI's
	// client commands dial it, so the two meet without flags.
	DefaultListenAddr       = "127.0.0.1:50051"
	DefaultMaxMessageBytes  = 32 << 20 // a 20 MB photo plus framing
	DefaultMaxConcurrent    = 128
	DefaultSnapshotInterval = 5 * time.Minute
	DefaultShutdownTimeout  = 30 * time.Second
	// ServiceName is the gRPC service name, also the health service's key for it.
	ServiceName = "lookalike.v1.Lookalike"
)

// Config is everything a serving process needs. Zero fields take the defaults above.
type Config struct {
	// DataDir holds the store file and the graph snapshot of the embedded backend; required
	// unless OpenBackend is set.
	DataDir string
	// OpenBackend, when set, opens the backend holding the catalogue (Weaviate, say) for the
	// model the server loaded, instead of the embedded one in DataDir.
	OpenBackend func(ctx context.Context, modelIdentity string, dim int) (catalog.Backend, error)
	// ListenAddr is the gRPC address (Run only).
	ListenAddr string
	// MetricsAddr is the HTTP address of /metrics; empty disables it (Run only).
	MetricsAddr string
	// ModelPath is the .onnx model; empty means embed.FindModel.
	ModelPath string
	// SpecPath is the model's preprocessing spec JSON; empty means embed's default lookup.
	SpecPath string
	// RuntimePath is libonnxruntime.so; empty means embed.FindRuntime.
	RuntimePath string
	// EmbedThreads is the ONNX Runtime intra-op thread count; 0 means the CPU count.
	EmbedThreads int
	// MaxMessageBytes bounds one received or sent gRPC message, and so the largest photo
	// the embedder accepts.
	MaxMessageBytes int
	// MaxConcurrent bounds calls in flight (health excluded); beyond it calls are refused
	// with RESOURCE_EXHAUSTED. A client stream counts only while it has a message in hand.
	MaxConcurrent int
	// MaxBufferedBytes bounds the request bytes the server holds at once: requests arriving
	// (each reserves MaxMessageBytes until it has arrived, then its real size) and stream
	// messages not yet answered. Beyond it calls are refused with RESOURCE_EXHAUSTED and
	// streams wait. At least MaxMessageBytes.
	MaxBufferedBytes int
	// MaxConnections bounds the open connections; further ones wait to be accepted.
	MaxConnections int
	// MaxStreamsPerConnection bounds the calls open at once on one connection (HTTP/2's
	// SETTINGS_MAX_CONCURRENT_STREAMS).
	MaxStreamsPerConnection int
	// IdleTimeout ends a call that keeps the server waiting on its client: a stream that
	// sends no message for this long, or a request that has not arrived whole within it.
	IdleTimeout time.Duration
	// ConnectionIdleTimeout closes a connection that has had no calls for this long.
	ConnectionIdleTimeout time.Duration
	// AuthTokenFile holds a bearer token every call but health must present. Its
	// surrounding whitespace is ignored.
	AuthTokenFile string
	// AuthTokenEnv names an environment variable holding the token (used when
	// AuthTokenFile is empty). Neither set: no authentication.
	AuthTokenEnv string
	// TLSCertFile and TLSKeyFile, both set, make the server speak TLS.
	TLSCertFile, TLSKeyFile string
	// SnapshotInterval saves the graph this often when it changed; negative disables it.
	SnapshotInterval time.Duration
	// SnapshotChanges saves the graph once this many store changes are not in the last
	// snapshot, bounding what a restart replays; 0 is catalog.DefaultSnapshotChanges,
	// negative never.
	SnapshotChanges int
	// DiscardPhotos turns off keeping a copy of each uploaded photo (catalog.Config.KeepPhotos).
	DiscardPhotos bool
	// Index holds the HNSW parameters: M and EFConstruction for a fresh graph, EFSearch as
	// the default search breadth.
	Index catalog.IndexParams
	// ShutdownTimeout bounds the drain of in-flight calls before they are cut off.
	ShutdownTimeout time.Duration
	// Embedder, if set, is used instead of opening the model; Run neither opens nor closes
	// it. Tests share one across server restarts this way.
	Embedder catalog.Embedder
}

func (c Config) withDefaults() Config {
	if c.ListenAddr == "" {
		c.ListenAddr = DefaultListenAddr
	}
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.MaxConcurrent <= 0 {
		c.MaxConcurrent = DefaultMaxConcurrent
	}
	if c.MaxBufferedBytes <= 0 {
		c.MaxBufferedBytes = DefaultMaxBufferedBytes
	}
	c.MaxBufferedBytes = max(c.MaxBufferedBytes, c.MaxMessageBytes) // one largest request fits
	if c.MaxConnections <= 0 {
		c.MaxConnections = DefaultMaxConnections
	}
	if c.MaxStreamsPerConnection <= 0 {
		c.MaxStreamsPerConnection = DefaultMaxStreamsPerConnection
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.ConnectionIdleTimeout <= 0 {
		c.ConnectionIdleTimeout = DefaultConnectionIdleTimeout
	}
	// A negative SnapshotInterval stays negative (not 0, catalog's "off"): Run and Serve
	// both apply the defaults, and a second pass would turn 0 into the default.
	if c.SnapshotInterval == 0 {
		c.SnapshotInterval = DefaultSnapshotInterval
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	return c
}

// authToken reads the configured bearer token; "" means authentication is off.
func (c Config) authToken() (string, error) {
	switch {
	case c.AuthTokenFile != "":
		b, err := os.ReadFile(c.AuthTokenFile)
		if err != nil {
			return "", fmt.Errorf("server: read auth token: %w", err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return "", fmt.Errorf("server: auth token file %s is empty", c.AuthTokenFile)
		}
		return tok, nil
	case c.AuthTokenEnv != "":
		tok := strings.TrimSpace(os.Getenv(c.AuthTokenEnv))
		if tok == "" {
			return "", fmt.Errorf("server: environment variable %s (auth token) is empty or unset", c.AuthTokenEnv)
		}
		return tok, nil
	}
	return "", nil
}

// Run listens on cfg.ListenAddr (and cfg.MetricsAddr) and serves until ctx is cancelled; see
// Serve.
func Run(ctx context.Context, cfg Config, logger *slog.Logger, opts ...Option) error {
	cfg = cfg.withDefaults()
	lis, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("server: listen: %w", err)
	}
	var metricsLis net.Listener
	if cfg.MetricsAddr != "" {
		metricsLis, err = net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			_ = lis.Close()
			return fmt.Errorf("server: listen for metrics: %w", err)
		}
	}
	return Serve(ctx, cfg, lis, metricsLis, logger, opts...)
}

// Serve serves gRPC on lis and /metrics on metricsLis (nil: no metrics listener) until ctx is
// cancelled. It answers health checks at once (NOT_SERVING), opens the model and the
// catalogue, and then reports SERVING. On cancellation it stops accepting calls, drains the
// ones in flight (up to cfg.ShutdownTimeout), saves the graph snapshot and closes the store.
// It takes ownership of both listeners (and of those opts name: WithHTTP adds the HTTP front
// end, which starts and stops with the gRPC service).
func Serve(ctx context.Context, cfg Config, lis, metricsLis net.Listener, logger *slog.Logger, opts ...Option) (err error) {
	cfg = cfg.withDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	var so serveOptions
	for _, o := range opts {
		o(&so)
	}
	closeListeners := func() {
		_ = lis.Close()
		if metricsLis != nil {
			_ = metricsLis.Close()
		}
		if so.httpLis != nil {
			_ = so.httpLis.Close()
		}
	}
	if cfg.DataDir == "" && cfg.OpenBackend == nil {
		closeListeners()
		return errors.New("server: Config.DataDir is empty")
	}
	token, err := cfg.authToken()
	if err != nil {
		closeListeners()
		return err
	}

	svc := &service{log: logger, backupChunk: backupChunkBytes(cfg.MaxMessageBytes), recent: newRecentErrors()}
	svc.metrics = newMetrics(func() float64 {
		if c := svc.cat.Load(); c != nil {
			return float64(c.Len())
		}
		return 0
	})
	rec := recoverer{log: logger}
	obs := observer{log: logger, metrics: svc.metrics, recent: svc.recent}
	var auth *authenticator
	if token != "" {
		auth = &authenticator{token: []byte(token)}
	}
	// stopping ends, when shutdown begins, the calls that would otherwise only hold up the
	// drain (see admission.shuttingDown).
	stopping, beginStop := context.WithCancel(context.Background())
	defer beginStop()
	lim := newLimiter(cfg, auth, obs, svc.metrics, stopping)
	grpcOpts := append(serverOptions(cfg),
		// Auth and limits act in the tap, before a message is read; the interceptors follow
		// what an admitted call holds.
		grpc.InTapHandle(lim.tap),
		grpc.ChainUnaryInterceptor(obs.unary, rec.unary, lim.unary),
		grpc.ChainStreamInterceptor(obs.stream, rec.stream, lim.stream),
	)
	if (cfg.TLSCertFile == "") != (cfg.TLSKeyFile == "") {
		closeListeners()
		return fmt.Errorf("server: TLS needs both a certificate and a key file (cert %q, key %q)", cfg.TLSCertFile, cfg.TLSKeyFile)
	}
	var cert *tls.Certificate
	if cfg.TLSCertFile != "" {
		c, err := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile)
		if err != nil {
			closeListeners()
			return fmt.Errorf("server: load TLS certificate: %w", err)
		}
		cert = &c
		grpcOpts = append(grpcOpts, grpc.Creds(credentials.NewServerTLSFromCert(cert)))
	}
	gs := grpc.NewServer(grpcOpts...)
	pb.RegisterLookalikeServer(gs, svc)
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	hs.SetServingStatus(ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)
	lim.learnMethods(gs.GetServiceInfo())
	// Connections beyond the limit wait in the listen backlog until one closes.
	lis = netutil.LimitListener(lis, cfg.MaxConnections)

	serveErr := make(chan error, 4)
	go func() { serveErr <- gs.Serve(lis) }()
	var front *frontEndServer
	if so.httpLis != nil {
		front, err = startFrontEnd(cfg, gs, lim, cert, metricsLis, so, logger, serveErr)
		if err != nil {
			gs.Stop()
			closeListeners()
			return err
		}
	}
	var httpSrv *http.Server
	if metricsLis != nil {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(svc.metrics.registry, promhttp.HandlerOpts{}))
		httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
			// Its errors go to the server's logger, not the process-wide default one.
			ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}
		go func() {
			if err := httpSrv.Serve(metricsLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				serveErr <- fmt.Errorf("metrics listener: %w", err)
			}
		}()
	}
	logger.Info("listening", "grpc", lis.Addr().String(), "http", addrOf(so.httpLis), "metrics", addrOf(metricsLis),
		"tls", cfg.TLSCertFile != "", "auth", token != "", "max_concurrent", cfg.MaxConcurrent,
		"max_buffered_bytes", cfg.MaxBufferedBytes, "max_connections", cfg.MaxConnections,
		"max_streams_per_connection", cfg.MaxStreamsPerConnection, "idle_timeout", cfg.IdleTimeout,
		"connection_idle_timeout", cfg.ConnectionIdleTimeout)

	// Whatever happens from here, stop the listeners before returning.
	var cat *catalog.Catalog
	var ownEmbedder *embed.Embedder
	defer func() {
		hs.Shutdown()
		beginStop()
		// The HTTP front end stops taking requests and drains beside the gRPC service: its
		// requests in flight are gRPC calls, which the drain lets finish.
		var frontDrained sync.WaitGroup
		if front != nil {
			frontDrained.Go(func() { front.shutdown(cfg.ShutdownTimeout) })
		}
		drain(gs, cfg.ShutdownTimeout, logger)
		frontDrained.Wait()
		if front != nil {
			front.close()
		}
		if httpSrv != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = httpSrv.Shutdown(sctx)
			cancel()
		}
		if cat != nil {
			if cerr := cat.Close(); cerr != nil {
				err = errors.Join(err, cerr)
			} else {
				logger.Info("catalogue closed")
			}
		}
		if ownEmbedder != nil {
			err = errors.Join(err, ownEmbedder.Close())
		}
	}()

	opened := make(chan error, 1)
	go func() {
		emb := cfg.Embedder
		if emb == nil {
			e, err := embed.Open(ctx, embed.Config{
				ModelPath: cfg.ModelPath, SpecPath: cfg.SpecPath, RuntimePath: cfg.RuntimePath,
				Threads: cfg.EmbedThreads, Observer: svc.metrics, Logger: logger,
				// One size knob: a photo that fits in a message is not refused later.
				Limits: embed.Limits{MaxBytes: int64(cfg.MaxMessageBytes)},
			})
			if err != nil {
				opened <- fmt.Errorf("server: open model: %w", err)
				return
			}
			ownEmbedder = e
			emb = e
		}
		var backend catalog.Backend
		if cfg.OpenBackend != nil {
			var err error
			if backend, err = cfg.OpenBackend(ctx, emb.Identity(), emb.Dim()); err != nil {
				opened <- fmt.Errorf("server: open backend: %w", err)
				return
			}
		}
		c, err := catalog.Open(ctx, catalog.Config{
			DataDir: cfg.DataDir, Backend: backend, Embedder: emb, Index: cfg.Index,
			SnapshotInterval: max(cfg.SnapshotInterval, 0), SnapshotChanges: cfg.SnapshotChanges, KeepPhotos: !cfg.DiscardPhotos, Logger: logger,
		})
		if err != nil {
			opened <- fmt.Errorf("server: open catalogue: %w", err)
			return
		}
		cat = c
		opened <- nil
	}()

	select {
	case err := <-opened:
		if err != nil {
			return err
		}
	case err := <-serveErr:
		<-opened // cat and ownEmbedder are settled before the deferred cleanup reads them
		return fmt.Errorf("server: serve: %w", err)
	case <-ctx.Done():
		<-opened
		return nil
	}
	svc.cat.Store(cat)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(ServiceName, healthpb.HealthCheckResponse_SERVING)
	logger.Info("serving", "items", cat.Len(), "dim", cat.Dim())

	select {
	case <-ctx.Done():
		logger.Info("shutting down: draining in-flight calls")
		return nil
	case err := <-serveErr:
		return fmt.Errorf("server: serve: %w", err)
	}
}

// backupChunkBytes is the data size of one Backup message: 1 MiB, or less when the largest
// message is small, leaving room for the message's own framing.
func backupChunkBytes(maxMessageBytes int) int {
	return max(4<<10, min(1<<20, maxMessageBytes-4<<10))
}

// drain stops accepting calls and waits for the ones in flight, cutting them off after
// timeout.
func drain(gs *grpc.Server, timeout time.Duration, logger *slog.Logger) {
	done := make(chan struct{})
	go func() {
		gs.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(timeout):
		logger.Warn("in-flight calls did not finish in time; cutting them off", "timeout", timeout)
		gs.Stop()
		<-done
	}
}

func addrOf(l net.Listener) string {
	if l == nil {
		return ""
	}
	return l.Addr().String()
}
