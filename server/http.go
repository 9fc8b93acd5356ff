package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/netutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
)

// Option adds to what Serve runs.
type Option func(*serveOptions)

type serveOptions struct {
	httpLis  net.Listener
	frontEnd FrontEnd
}

// FrontEnd builds an HTTP front end (the web package's handler) over a Gateway to the server
// it stands beside.
type FrontEnd func(Gateway) (http.Handler, error)

// WithHTTP serves the handler that frontEnd builds on lis, beside gRPC: with the server's TLS
// certificate when it has one, at most Config.MaxConnections connections, and shut down with
// the server (in-flight requests drain within Config.ShutdownTimeout). Serve takes ownership
// of lis.
func WithHTTP(lis net.Listener, frontEnd FrontEnd) Option {
	return func(o *serveOptions) { o.httpLis, o.frontEnd = lis, frontEnd }
}

// Gateway is what an HTTP front end gets from the server it stands beside: connections to the
// server's own gRPC service, and the server's limits for what it reads before calling it.
type Gateway struct {
	// Conn reaches the gRPC service in memory. Every call on it passes the same tap and
	// interceptors as a remote client's: the bearer token (the front end forwards the
	// Authorization header as metadata), the concurrency and request memory limits,
	// validation, status codes, metrics and logs. Serve closes it.
	Conn grpc.ClientConnInterface
	// Authorize checks the bearer token of an HTTP request's headers as the service does,
	// for the method it is about to call (a full method name). A front end asks before it
	// reads a body, so an upload without the token is refused unread; the service checks
	// again. The refusal is an UNAUTHENTICATED status, counted like the service's own.
	Authorize func(fullMethod string, h http.Header) error
	// Reserve holds n bytes of the server's request budget (Config.MaxBufferedBytes, shared
	// with gRPC calls) while a front end reads a request body, or refuses with
	// RESOURCE_EXHAUSTED at once. release gives them back; call it once the body has been
	// handed on.
	Reserve func(fullMethod string, n int64) (release func(), err error)
	// MaxMessageBytes is the largest request message, and so the largest photo.
	MaxMessageBytes int
	// IdleTimeout bounds the wait for a request body to arrive, as for gRPC requests.
	IdleTimeout time.Duration
	// MetricsAddr is the address of the /metrics listener; empty when there is none.
	MetricsAddr string
	// TLS tells whether the HTTP listener speaks TLS.
	TLS bool
	// Logger is the server's logger.
	Logger *slog.Logger
}

// frontEndServer is a running HTTP front end: its server and the gRPC connections it uses.
type frontEndServer struct {
	srv   *http.Server
	conns *connPool
	mem   *bufconn.Listener
}

// startFrontEnd connects to gs over memory, builds the front end and serves it on lis;
// serving errors go to serveErr.
func startFrontEnd(cfg Config, gs *grpc.Server, lim *limiter, cert *tls.Certificate, metricsLis net.Listener,
	o serveOptions, logger *slog.Logger, serveErr chan<- error) (*frontEndServer, error) {
	// In-memory connections (buffered pipes; HTTP/2 needs both ends able to write at once):
	// nothing to expose on a port, nothing for MaxConnections to count.
	mem := bufconn.Listen(memBufferBytes)
	go func() {
		if err := gs.Serve(mem); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			serveErr <- fmt.Errorf("in-memory listener: %w", err)
		}
	}()
	creds := insecure.NewCredentials()
	if cert != nil {
		creds = credentials.NewTLS(pinnedTLS(cert))
	}
	// Enough connections that their streams (MaxStreamsPerConnection each) exceed the
	// concurrency limit: beyond it the service sheds calls with RESOURCE_EXHAUSTED, as it
	// does for remote clients, rather than the HTTP calls queueing for a stream.
	n := cfg.MaxConcurrent/cfg.MaxStreamsPerConnection + 1
	conns := &connPool{}
	for range n {
		cc, err := grpc.NewClient("passthrough:///lookalike-in-memory",
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return mem.DialContext(ctx) }),
			grpc.WithTransportCredentials(creds),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(cfg.MaxMessageBytes), grpc.MaxCallSendMsgSize(cfg.MaxMessageBytes)))
		if err != nil {
			conns.close()
			mem.Close()
			return nil, fmt.Errorf("server: connect the HTTP front end: %w", err)
		}
		conns.conns = append(conns.conns, cc)
	}
	gw := Gateway{
		Conn: conns, Authorize: lim.authorizeHTTP, Reserve: lim.reserveHTTP,
		MaxMessageBytes: cfg.MaxMessageBytes, IdleTimeout: cfg.IdleTimeout,
		MetricsAddr: addrOf(metricsLis), TLS: cert != nil, Logger: logger,
	}
	h, err := o.frontEnd(gw)
	if err != nil {
		conns.close()
		mem.Close()
		return nil, fmt.Errorf("server: build the HTTP front end: %w", err)
	}
	srv := &http.Server{
		Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: cfg.ConnectionIdleTimeout,
		MaxHeaderBytes: maxHeaderListBytes,
		ErrorLog:       slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	lis := netutil.LimitListener(o.httpLis, cfg.MaxConnections)
	if cert != nil {
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12}
	}
	go func() {
		var err error
		if cert != nil {
			err = srv.ServeTLS(lis, "", "")
		} else {
			err = srv.Serve(lis)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			serveErr <- fmt.Errorf("HTTP listener: %w", err)
		}
	}()
	return &frontEndServer{srv: srv, conns: conns, mem: mem}, nil
}

// shutdown stops accepting requests and waits for those in flight until the deadline, then
// closes what is left.
func (f *frontEndServer) shutdown(timeout time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := f.srv.Shutdown(ctx); err != nil {
		_ = f.srv.Close()
	}
}

// close releases the in-memory connections once the gRPC server has stopped.
func (f *frontEndServer) close() {
	f.conns.close()
	f.mem.Close()
}

// pinnedTLS is the in-memory client's TLS: it accepts exactly the server's own certificate,
// whatever names it carries (the connection never leaves the process).
func pinnedTLS(cert *tls.Certificate) *tls.Config {
	own := cert.Certificate[0]
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Replaced by the exact comparison below: the usual chain and name checks do not
		// apply to a connection to ourselves.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 || !bytes.Equal(raw[0], own) {
				return errors.New("server: the in-memory connection met another certificate than the server's own")
			}
			return nil
		},
	}
}

// authorizeHTTP is Gateway.Authorize.
func (l *limiter) authorizeHTTP(fullMethod string, h http.Header) error {
	if l.auth == nil || isHealth(fullMethod) {
		return nil
	}
	md := metadata.MD{}
	for _, v := range h.Values("Authorization") {
		md.Append("authorization", v)
	}
	if err := l.auth.check(md); err != nil {
		return l.refuse(fullMethod, err)
	}
	return nil
}

// reserveHTTP is Gateway.Reserve.
func (l *limiter) reserveHTTP(fullMethod string, n int64) (func(), error) {
	if !l.budget.tryTake(n) {
		return nil, l.refuse(fullMethod, status.Errorf(codes.ResourceExhausted,
			"server busy: %d MiB of requests held or arriving; retry with backoff", l.budget.limit>>20))
	}
	var once sync.Once
	return func() { once.Do(func() { l.budget.give(n) }) }, nil
}

// connPool spreads calls over a few connections, round robin.
type connPool struct {
	conns []*grpc.ClientConn
	next  atomic.Uint32
}

func (p *connPool) pick() *grpc.ClientConn {
	return p.conns[int(p.next.Add(1))%len(p.conns)]
}

// Invoke implements grpc.ClientConnInterface.
func (p *connPool) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	return p.pick().Invoke(ctx, method, args, reply, opts...)
}

// NewStream implements grpc.ClientConnInterface.
func (p *connPool) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return p.pick().NewStream(ctx, desc, method, opts...)
}

func (p *connPool) close() {
	for _, cc := range p.conns {
		_ = cc.Close()
	}
}

// memBufferBytes is the buffer of each direction of an in-memory connection.
const memBufferBytes = 256 << 10
