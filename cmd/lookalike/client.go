package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	lookalikev1 "lookalike/proto/lookalike/v1"
	"lookalike/server"
)

// maxMessageBytes lets large photos and big vector batches through; the server enforces its
// own limit and says so with a clear status.
const maxMessageBytes = 64 << 20

// clientFlags are the connection flags every client command shares. Each falls back to an
// environment variable so a shell session can set them once.
type clientFlags struct {
	server  string
	token   string
	tlsCA   string
	timeout time.Duration
}

func (c *clientFlags) register(fs *flag.FlagSet, a *app) {
	fs.StringVar(&c.server, "server", envOr(a, "LOOKALIKE_SERVER", server.DefaultListenAddr), "server address host:port (env LOOKALIKE_SERVER)")
	fs.StringVar(&c.token, "token", a.getenv("LOOKALIKE_TOKEN"), "bearer token the server requires, if any (env LOOKALIKE_TOKEN)")
	fs.StringVar(&c.tlsCA, "tls-ca", a.getenv("LOOKALIKE_TLS_CA"), "PEM CA certificate: connect with TLS and verify the server against it (env LOOKALIKE_TLS_CA)")
	fs.DurationVar(&c.timeout, "timeout", envDuration(a, "LOOKALIKE_TIMEOUT", 30*time.Second), "deadline for each request (env LOOKALIKE_TIMEOUT)")
}

// connection is an open client to a Lookalike server.
type connection struct {
	conn    *grpc.ClientConn
	client  lookalikev1.LookalikeClient
	timeout time.Duration
}

func (c *connection) Close() error { return c.conn.Close() }

// call bounds one request by the --timeout deadline.
func (c *connection) call(ctx context.Context) (context.Context, context.CancelFunc) {
	if c.timeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, c.timeout)
}

// dial opens a connection lazily (gRPC connects on first use), so a wrong address surfaces as
// an UNAVAILABLE error from the first request, which describeRPCError explains.
func (c *clientFlags) dial() (*connection, error) {
	if c.server == "" {
		return nil, usagef("--server is empty")
	}
	var creds credentials.TransportCredentials
	if c.tlsCA != "" {
		pem, err := os.ReadFile(c.tlsCA)
		if err != nil {
			return nil, fmt.Errorf("read --tls-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tls-ca %s: no PEM certificate in it", c.tlsCA)
		}
		creds = credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
	} else {
		creds = insecure.NewCredentials()
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessageBytes), grpc.MaxCallSendMsgSize(maxMessageBytes)),
	}
	if c.token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearerToken{token: c.token, requireTLS: c.tlsCA != ""}))
	}
	conn, err := grpc.NewClient(c.server, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", c.server, err)
	}
	return &connection{conn: conn, client: lookalikev1.NewLookalikeClient(conn), timeout: c.timeout}, nil
}

// callOnce dials, makes one request under the --timeout deadline and explains a failure: the
// whole life of a command that asks the server one question.
func callOnce[T any](ctx context.Context, cf *clientFlags, rpc func(context.Context, lookalikev1.LookalikeClient) (T, error)) (T, error) {
	var zero T
	c, err := cf.dial()
	if err != nil {
		return zero, err
	}
	defer c.Close()
	callCtx, cancel := c.call(ctx)
	defer cancel()
	resp, err := rpc(callCtx, c.client)
	if err != nil {
		return zero, describeRPCError(cf.server, err)
	}
	return resp, nil
}

// bearerToken sends "authorization: Bearer <token>" with every request.
type bearerToken struct {
	token      string
	requireTLS bool
}

func (b bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

// RequireTransportSecurity is false without --tls-ca so tokens work on loopback without TLS.
func (b bearerToken) RequireTransportSecurity() bool { return b.requireTLS }

// rpcError is a gRPC failure explained for a person, still matching errors.Is/As on the status.
type rpcError struct {
	text string
	err  error
}

func (e *rpcError) Error() string { return e.text }
func (e *rpcError) Unwrap() error { return e.err }

// describeRPCError turns a gRPC status into a sentence for a person at a terminal.
func describeRPCError(server string, err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	var text string
	switch st.Code() {
	case codes.Unavailable:
		text = fmt.Sprintf("server %s unavailable (is 'lookalike serve' running there?): %s", server, st.Message())
	case codes.Unauthenticated:
		text = fmt.Sprintf("server %s refused the credentials (check --token): %s", server, st.Message())
	case codes.DeadlineExceeded:
		text = fmt.Sprintf("no answer from %s in time (raise --timeout): %s", server, st.Message())
	case codes.Canceled:
		text = "interrupted"
	default:
		text = fmt.Sprintf("%s: %s", st.Code(), st.Message())
	}
	return &rpcError{text: text, err: err}
}

func envOr(a *app, key, fallback string) string {
	if v := a.getenv(key); v != "" {
		return v
	}
	return fallback
}

func envDuration(a *app, key string, fallback time.Duration) time.Duration {
	if d, err := time.ParseDuration(a.getenv(key)); err == nil {
		return d
	}
	return fallback
}

func envInt(a *app, key string, fallback int) int {
	var n int
	if _, err := fmt.Sscanf(a.getenv(key), "%d", &n); err == nil {
		return n
	}
	return fallback
}
