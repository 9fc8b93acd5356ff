package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"lookalike/catalog"
	"lookalike/index"
	"lookalike/server"
	"lookalike/weaviate"
	"lookalike/web"
)

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

func runServe(ctx context.Context, a *app, args []string) error {
	fs := newFlagSet(a, "serve", "--data DIR [flags]",
		"Run the Lookalike gRPC service (with the standard health and reflection services) on a data\n"+
			"directory holding the product store and the graph snapshot. SIGINT or SIGTERM stops it\n"+
			"gracefully: in-flight calls drain, the graph snapshot is saved, the store is closed.\n"+
			"Every flag also reads the environment variable named in its description.")
	data := fs.String("data", a.getenv("LOOKALIKE_DATA"), "data directory, created if missing (env LOOKALIKE_DATA) (required with --backend embedded)")
	backend := fs.String("backend", cmp.Or(a.getenv("LOOKALIKE_BACKEND"), "embedded"), "where the catalogue lives: embedded (a bbolt store and an HNSW graph in --data) or weaviate (env LOOKALIKE_BACKEND)")
	wvURLs := fs.String("weaviate-url", a.getenv("LOOKALIKE_WEAVIATE_URL"), "comma-separated REST addresses of the Weaviate nodes, e.g. http://127.0.0.1:8081 (env LOOKALIKE_WEAVIATE_URL)")
	wvReplicas := fs.Int("weaviate-replicas", envInt(a, "LOOKALIKE_WEAVIATE_REPLICAS", 1), "copies of each shard when the collections are created, at most the node count (env LOOKALIKE_WEAVIATE_REPLICAS)")
	wvShards := fs.Int("weaviate-shards", envInt(a, "LOOKALIKE_WEAVIATE_SHARDS", 1), "shards per collection when they are created (env LOOKALIKE_WEAVIATE_SHARDS)")
	wvWrite := fs.String("weaviate-write-consistency", cmp.Or(a.getenv("LOOKALIKE_WEAVIATE_WRITE_CONSISTENCY"), weaviate.Quorum), "replicas that acknowledge a write before it is acknowledged: ONE, QUORUM or ALL (env LOOKALIKE_WEAVIATE_WRITE_CONSISTENCY)")
	wvRead := fs.String("weaviate-read-consistency", cmp.Or(a.getenv("LOOKALIKE_WEAVIATE_READ_CONSISTENCY"), weaviate.One), "replicas that answer a read: ONE, QUORUM or ALL (env LOOKALIKE_WEAVIATE_READ_CONSISTENCY)")
	listen := fs.String("listen", envOr(a, "LOOKALIKE_LISTEN", server.DefaultListenAddr), "gRPC listen address (env LOOKALIKE_LISTEN)")
	metrics := fs.String("metrics", a.getenv("LOOKALIKE_METRICS"), "Prometheus /metrics listen address, e.g. 127.0.0.1:9090; empty: off (env LOOKALIKE_METRICS)")
	httpAddr := fs.String("http", a.getenv("LOOKALIKE_HTTP"), "HTTP/JSON API and pages (storefront /, /duplicates, /status) listen address, e.g. 127.0.0.1:8080; empty: off (env LOOKALIKE_HTTP)")
	corsOrigins := fs.String("http-cors-origin", a.getenv("LOOKALIKE_HTTP_CORS_ORIGIN"), "comma-separated origins (https://shop.example.com) whose pages may call the HTTP API, or *; empty: none (env LOOKALIKE_HTTP_CORS_ORIGIN)")
	var mf modelFlags
	mf.register(fs, a)
	tokenFile := fs.String("token-file", a.getenv("LOOKALIKE_TOKEN_FILE"), "file holding the bearer token clients must send (env LOOKALIKE_TOKEN_FILE; or set LOOKALIKE_TOKEN itself); none: no authentication")
	tlsCert := fs.String("tls-cert", a.getenv("LOOKALIKE_TLS_CERT"), "PEM certificate: serve TLS (env LOOKALIKE_TLS_CERT; needs --tls-key)")
	tlsKey := fs.String("tls-key", a.getenv("LOOKALIKE_TLS_KEY"), "PEM private key of --tls-cert (env LOOKALIKE_TLS_KEY)")
	maxConcurrent := fs.Int("max-concurrent", envInt(a, "LOOKALIKE_MAX_CONCURRENT", server.DefaultMaxConcurrent), "calls in flight before new ones are refused with RESOURCE_EXHAUSTED (env LOOKALIKE_MAX_CONCURRENT)")
	maxMessage := fs.Int("max-message-mib", envInt(a, "LOOKALIKE_MAX_MESSAGE_MIB", server.DefaultMaxMessageBytes>>20), "largest gRPC message in MiB, i.e. the largest photo (env LOOKALIKE_MAX_MESSAGE_MIB)")
	maxBuffered := fs.Int("max-buffered-mib", envInt(a, "LOOKALIKE_MAX_BUFFERED_MIB", server.DefaultMaxBufferedBytes>>20), "request MiB held at once (requests arriving reserve --max-message-mib each) before calls are refused (env LOOKALIKE_MAX_BUFFERED_MIB)")
	maxConns := fs.Int("max-connections", envInt(a, "LOOKALIKE_MAX_CONNECTIONS", server.DefaultMaxConnections), "open connections; more wait to be accepted (env LOOKALIKE_MAX_CONNECTIONS)")
	maxStreams := fs.Int("max-streams-per-connection", envInt(a, "LOOKALIKE_MAX_STREAMS_PER_CONNECTION", server.DefaultMaxStreamsPerConnection), "calls open at once on one connection (env LOOKALIKE_MAX_STREAMS_PER_CONNECTION)")
	idle := fs.Duration("idle-timeout", envDuration(a, "LOOKALIKE_IDLE_TIMEOUT", server.DefaultIdleTimeout), "end a stream that sends nothing, or a request that has not arrived, after this long (env LOOKALIKE_IDLE_TIMEOUT)")
	connIdle := fs.Duration("connection-idle-timeout", envDuration(a, "LOOKALIKE_CONNECTION_IDLE_TIMEOUT", server.DefaultConnectionIdleTimeout), "close a connection without calls after this long (env LOOKALIKE_CONNECTION_IDLE_TIMEOUT)")
	snapshotChanges := fs.Int("snapshot-changes", envInt(a, "LOOKALIKE_SNAPSHOT_CHANGES", catalog.DefaultSnapshotChanges), "also save the graph snapshot once this many store changes are not in it, so a restart after a crash replays at most about that many; negative: never (env LOOKALIKE_SNAPSHOT_CHANGES)")
	snapshotEvery := fs.Duration("snapshot-interval", envDuration(a, "LOOKALIKE_SNAPSHOT_INTERVAL", server.DefaultSnapshotInterval), "save the graph snapshot this often when it changed; negative: no timed saves (--snapshot-changes and shutdown still save) (env LOOKALIKE_SNAPSHOT_INTERVAL)")
	keepPhotos := fs.Bool("keep-photos", a.getenv("LOOKALIKE_KEEP_PHOTOS") != "false", "keep a copy of each photo as the model sees it (a JPEG of a few tens of KB), for GetPhoto and re-embedding (env LOOKALIKE_KEEP_PHOTOS=false turns it off)")
	m := fs.Int("m", envInt(a, "LOOKALIKE_HNSW_M", catalog.DefaultM), "HNSW links per node for a new graph (env LOOKALIKE_HNSW_M)")
	efConstruction := fs.Int("ef-construction", envInt(a, "LOOKALIKE_HNSW_EF_CONSTRUCTION", catalog.DefaultEFConstruction), "HNSW build breadth for a new graph (env LOOKALIKE_HNSW_EF_CONSTRUCTION)")
	efSearch := fs.Int("ef-search", envInt(a, "LOOKALIKE_HNSW_EF_SEARCH", catalog.DefaultEFSearch), "default HNSW search breadth (env LOOKALIKE_HNSW_EF_SEARCH)")
	quantize := fs.String("quantize", a.getenv("LOOKALIKE_QUANTIZE"), "vectors in the graph: none (float32) or int8 (a quarter of the memory; searches re-score their best candidates on the store's vectors) (env LOOKALIKE_QUANTIZE)")
	shutdown := fs.Duration("shutdown-timeout", envDuration(a, "LOOKALIKE_SHUTDOWN_TIMEOUT", server.DefaultShutdownTimeout), "how long in-flight calls may drain at shutdown (env LOOKALIKE_SHUTDOWN_TIMEOUT)")
	addrFile := fs.String("addr-file", "", "once listening, write the gRPC address here (useful with --listen 127.0.0.1:0 in scripts)")
	httpAddrFile := fs.String("http-addr-file", "", "once listening, write the HTTP address here (with --http 127.0.0.1:0)")
	logJSON := fs.Bool("log-json", a.getenv("LOOKALIKE_LOG_FORMAT") == "json", "log JSON lines instead of text (env LOOKALIKE_LOG_FORMAT=json)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("takes no arguments")
	}
	switch *backend {
	case "embedded":
		if *data == "" {
			return usagef("--data is required")
		}
		if *wvURLs != "" {
			return usagef("--weaviate-url needs --backend weaviate")
		}
	case "weaviate":
		if *wvURLs == "" {
			return usagef("--backend weaviate needs --weaviate-url")
		}
		if *data != "" {
			return usagef("--data is the embedded backend's; the weaviate backend keeps everything in the cluster")
		}
	default:
		return usagef("--backend is embedded or weaviate, not %q", *backend)
	}
	if (*tlsCert == "") != (*tlsKey == "") {
		return usagef("--tls-cert and --tls-key go together")
	}
	if *maxMessage < 1 {
		return usagef("--max-message-mib must be at least 1")
	}
	webCfg := web.Config{CORSOrigins: splitList(*corsOrigins)}
	if len(webCfg.CORSOrigins) > 0 && *httpAddr == "" {
		return usagef("--http-cors-origin needs --http")
	}
	if *httpAddrFile != "" && *httpAddr == "" {
		return usagef("--http-addr-file needs --http")
	}
	if err := webCfg.Validate(); err != nil {
		return usagef("--http-cors-origin: %s", strings.TrimPrefix(err.Error(), "web: "))
	}
	quant, err := index.ParseQuantization(*quantize)
	if err != nil {
		return usagef("--quantize: %s", strings.TrimPrefix(err.Error(), "index: "))
	}
	logger := a.logger
	if *logJSON {
		logger = slog.New(slog.NewJSONHandler(a.stderr, &slog.HandlerOptions{Level: logLevel(a.getenv("LOOKALIKE_LOG_LEVEL"), slog.LevelInfo)}))
	}
	cfg := server.Config{
		DataDir:          *data,
		ListenAddr:       *listen,
		MetricsAddr:      *metrics,
		ModelPath:        mf.model,
		SpecPath:         mf.spec,
		RuntimePath:      mf.runtime,
		EmbedThreads:     mf.threads,
		MaxMessageBytes:  *maxMessage << 20,
		MaxConcurrent:    *maxConcurrent,
		MaxBufferedBytes: *maxBuffered << 20,
		MaxConnections:   *maxConns,
		IdleTimeout:      *idle,
		AuthTokenFile:    *tokenFile,
		TLSCertFile:      *tlsCert,
		TLSKeyFile:       *tlsKey,
		SnapshotInterval: *snapshotEvery,
		SnapshotChanges:  *snapshotChanges,
		DiscardPhotos:    !*keepPhotos,
		Index:            catalog.IndexParams{M: *m, EFConstruction: *efConstruction, EFSearch: *efSearch, Quantize: quant},
		ShutdownTimeout:  *shutdown,

		MaxStreamsPerConnection: *maxStreams,
		ConnectionIdleTimeout:   *connIdle,
	}
	if *backend == "weaviate" {
		wcfg := weaviate.Config{
			URLs: splitList(*wvURLs), Replicas: *wvReplicas, Shards: *wvShards,
			WriteConsistency: strings.ToUpper(*wvWrite), ReadConsistency: strings.ToUpper(*wvRead),
			Index: cfg.Index, Logger: logger,
		}
		cfg.OpenBackend = func(ctx context.Context, model string, dim int) (catalog.Backend, error) {
			wcfg.ModelIdentity, wcfg.Dim = model, dim
			return weaviate.Open(ctx, wcfg)
		}
	}
	if cfg.AuthTokenFile == "" && a.getenv("LOOKALIKE_TOKEN") != "" {
		cfg.AuthTokenEnv = "LOOKALIKE_TOKEN"
	}
	// Listening here rather than in server.Run lets a script ask for port 0 and learn the port.
	lis, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.ListenAddr, err)
	}
	var metricsLis, httpLis net.Listener
	closeAll := func() {
		for _, l := range []net.Listener{lis, metricsLis, httpLis} {
			if l != nil {
				l.Close()
			}
		}
	}
	if cfg.MetricsAddr != "" {
		if metricsLis, err = net.Listen("tcp", cfg.MetricsAddr); err != nil {
			closeAll()
			return fmt.Errorf("listen for metrics on %s: %w", cfg.MetricsAddr, err)
		}
	}
	var opts []server.Option
	if *httpAddr != "" {
		if httpLis, err = net.Listen("tcp", *httpAddr); err != nil {
			closeAll()
			return fmt.Errorf("listen for HTTP on %s: %w", *httpAddr, err)
		}
		opts = append(opts, server.WithHTTP(httpLis, func(gw server.Gateway) (http.Handler, error) {
			return web.New(gw, webCfg)
		}))
	}
	for _, af := range []struct {
		path string
		lis  net.Listener
	}{{*addrFile, lis}, {*httpAddrFile, httpLis}} {
		if af.path == "" {
			continue
		}
		if err := writeFileAtomically(af.path, func(w io.Writer) error {
			_, err := fmt.Fprintln(w, af.lis.Addr().String())
			return err
		}); err != nil {
			closeAll()
			return fmt.Errorf("write %s: %w", af.path, err)
		}
		defer os.Remove(af.path)
	}
	start := time.Now()
	if err := server.Serve(ctx, cfg, lis, metricsLis, logger, opts...); err != nil {
		return err
	}
	logger.Info("stopped", "uptime", time.Since(start).Round(time.Second))
	return nil
}
