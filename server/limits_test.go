package server

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	pb "lookalike/proto/lookalike/v1"
)

// rawCall is one gRPC call made frame by frame on a connection of its own, so a test can do
// what a hostile client does: send a call's headers and part of its message, then stall.
// It keeps to HTTP/2 flow control, so it sends only what the server lets it.
type rawCall struct {
	conn net.Conn
	wmu  sync.Mutex // serialises writes on fr
	fr   *http2.Framer

	mu        sync.Mutex
	changed   chan struct{} // closed and replaced whenever a field below changes
	connWin   int64
	streamWin int64
	askedMore bool // the server opened the stream's window: it is reading the message
	ended     bool // the server answered or reset the call
	closed    bool // the connection is gone
	goAway    bool
	code      codes.Code
	message   string
}

// http2DefaultWindow is the window every HTTP/2 peer starts with (RFC 9113, 6.9.2).
const http2DefaultWindow = 65535

// dialRaw opens a plaintext HTTP/2 connection to addr and starts reading its frames.
func dialRaw(t *testing.T, addr string) *rawCall {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return rawOver(t, conn)
}

// rawOver speaks HTTP/2 over conn (plaintext, or TLS that negotiated h2).
func rawOver(t *testing.T, conn net.Conn) *rawCall {
	t.Helper()
	c := &rawCall{conn: conn, fr: http2.NewFramer(conn, conn), changed: make(chan struct{}),
		connWin: http2DefaultWindow, streamWin: http2DefaultWindow, code: codes.Unknown}
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := c.write(func(fr *http2.Framer) error { return fr.WriteSettings() }); err != nil {
		t.Fatal(err)
	}
	go c.read()
	return c
}

func (c *rawCall) write(f func(*http2.Framer) error) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return f(c.fr)
}

// update changes the state under c.mu and wakes whoever waits on it.
func (c *rawCall) update(f func()) {
	c.mu.Lock()
	f()
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

func (c *rawCall) read() {
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			c.update(func() { c.closed, c.ended = true, true })
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if f.IsAck() {
				continue
			}
			if v, ok := f.Value(http2.SettingInitialWindowSize); ok {
				c.update(func() { c.streamWin += int64(v) - http2DefaultWindow })
			}
			_ = c.write(func(fr *http2.Framer) error { return fr.WriteSettingsAck() })
		case *http2.WindowUpdateFrame:
			c.update(func() {
				if f.StreamID == 0 {
					c.connWin += int64(f.Increment)
				} else {
					c.streamWin += int64(f.Increment)
					c.askedMore = true
				}
			})
		case *http2.MetaHeadersFrame:
			c.update(func() {
				for _, hf := range f.Fields {
					switch hf.Name {
					case "grpc-status":
						n, _ := strconv.Atoi(hf.Value)
						c.code = codes.Code(n)
					case "grpc-message":
						c.message = hf.Value
					}
				}
				if f.StreamEnded() {
					c.ended = true
				}
			})
		case *http2.RSTStreamFrame:
			c.update(func() { c.ended = true })
		case *http2.GoAwayFrame:
			c.update(func() { c.goAway = true })
		case *http2.PingFrame:
			if !f.IsAck() {
				_ = c.write(func(fr *http2.Framer) error { return fr.WritePing(true, f.Data) })
			}
		}
	}
}

// start sends the headers of a call to method on stream 1, with extra metadata.
func (c *rawCall) start(method string, md ...string) error {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	fields := []string{":method", "POST", ":scheme", "http", ":path", method, ":authority", c.conn.RemoteAddr().String(),
		"content-type", "application/grpc", "te", "trailers"}
	for i := 0; i+1 < len(fields); i += 2 {
		_ = enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	for i := 0; i+1 < len(md); i += 2 {
		_ = enc.WriteField(hpack.HeaderField{Name: md[i], Value: md[i+1]})
	}
	return c.write(func(fr *http2.Framer) error {
		return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: buf.Bytes(), EndHeaders: true})
	})
}

// send sends a message prefix declaring declared bytes and then zeros, up to upTo bytes in
// all, as fast as the windows allow; it returns how much it sent, once upTo is sent or the
// call has ended. zeros is a shared read-only buffer of one frame.
func (c *rawCall) send(declared uint32, upTo int, zeros []byte) int {
	sent := 0
	for sent < upTo {
		c.mu.Lock()
		for !c.ended && (c.connWin <= 0 || c.streamWin <= 0) {
			ch := c.changed
			c.mu.Unlock()
			<-ch
			c.mu.Lock()
		}
		if c.ended {
			c.mu.Unlock()
			return sent
		}
		n := int(min(int64(len(zeros)), int64(upTo-sent), c.connWin, c.streamWin))
		c.connWin -= int64(n)
		c.streamWin -= int64(n)
		c.mu.Unlock()
		data := zeros[:n]
		if sent == 0 {
			data = append(binary.BigEndian.AppendUint32([]byte{0}, declared), zeros[:n-5]...)
		}
		if err := c.write(func(fr *http2.Framer) error { return fr.WriteData(1, false, data) }); err != nil {
			return sent
		}
		sent += n
	}
	return sent
}

// await blocks until cond, which runs with c.mu held, holds; the reader wakes it on every
// change. Only a condition that a change or the connection's end makes true may be awaited.
func (c *rawCall) await(cond func() bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for !cond() {
		ch := c.changed
		c.mu.Unlock()
		<-ch
		c.mu.Lock()
	}
}

func (c *rawCall) state() (code codes.Code, message string, askedMore, ended, closed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.code, c.message, c.askedMore, c.ended, c.closed
}

// heapInUse is the heap in use after a collection, which is what the test's bound is about.
func heapInUse() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse)
}

// TestServerRefusesUnauthenticatedCallsBeforeReadingThem: 64 clients without the token each
// start a SearchByImage whose message declares nearly the largest size and try to send all
// but the last half MiB of it, then stall. The tap refuses each call when its headers
// arrive: the server never opens the stream's window (it reads none of the message), the
// answer is UNAUTHENTICATED, and what the connections cost the server stays within what
// the transport settings allow per connection, with no message in it.
func TestServerRefusesUnauthenticatedCallsBeforeReadingThem(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("memory-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	const clients = 64
	cfg := Config{DataDir: t.TempDir(), AuthTokenFile: tokenFile, MaxMessageBytes: 4 << 20}
	s := startServer(t, cfg)
	defer s.shutdown()
	declared := uint32(cfg.MaxMessageBytes - 1<<10) // within the limit: only the token is wrong
	stallAt := int(declared) - 512<<10
	// Per connection: at most one stream window of the message before the refusal (dropped
	// on arrival), the transport's read and write buffers and one header list; the raw
	// clients' own framers hold a frame each way.
	perConnection := int64(streamWindowBytes + 2*transportBufferBytes + maxHeaderListBytes + 2*http2MaxFrameBytes)
	bound := clients * perConnection
	zeros := make([]byte, http2MaxFrameBytes)

	before := heapInUse()
	calls := make([]*rawCall, clients)
	sent := make([]int, clients)
	var wg sync.WaitGroup
	for i := range calls {
		calls[i] = dialRaw(t, s.addr)
		defer calls[i].conn.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := calls[i].start("/lookalike.v1.Lookalike/SearchByImage"); err != nil {
				t.Error(err)
				return
			}
			sent[i] = calls[i].send(declared, stallAt, zeros)
		}()
	}
	wg.Wait() // every client has been refused or has sent all it will: nothing moves now
	grew := heapInUse() - before
	t.Logf("%d unauthenticated calls of %d MiB each: heap in use grew by %.1f MiB (bound %.1f MiB)", clients, declared>>20, float64(grew)/(1<<20), float64(bound)/(1<<20))

	for i, c := range calls {
		code, msg, askedMore, _, closed := c.state()
		if askedMore || sent[i] > streamWindowBytes {
			t.Fatalf("client %d: the server read its unauthenticated message (%d bytes sent, window opened %v)", i, sent[i], askedMore)
		}
		if code != codes.Unauthenticated {
			t.Fatalf("client %d: answered %v %q, want UNAUTHENTICATED", i, code, msg)
		}
		if closed {
			t.Fatalf("client %d: the connection closed; the measurement must include it", i)
		}
	}
	if grew > bound {
		t.Fatalf("heap in use grew by %d bytes for %d refused calls, over the bound of %d (%d per connection)", grew, clients, bound, perConnection)
	}
}

// http2MaxFrameBytes is the largest DATA frame either side sends without negotiating more.
const http2MaxFrameBytes = 16 << 10

// openStreams reads the server's gauge of open client streams from /metrics.
func openStreams(t *testing.T, s *testServer) int {
	t.Helper()
	resp, err := http.Get("http://" + s.metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "lookalike_grpc_client_streams_open "); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return int(n)
		}
	}
	t.Fatal("/metrics has no lookalike_grpc_client_streams_open")
	return 0
}

// idleStreams opens n UpsertStreams that send nothing, spread over connections of at most
// perConn streams each, and waits until the server counts them all open.
func idleStreams(t *testing.T, s *testServer, n, perConn int) []pb.Lookalike_UpsertStreamClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var streams []pb.Lookalike_UpsertStreamClient
	for len(streams) < n {
		conn, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		c := pb.NewLookalikeClient(conn)
		for range min(perConn, n-len(streams)) {
			st, err := c.UpsertStream(ctx)
			if err != nil {
				t.Fatal(err)
			}
			streams = append(streams, st)
		}
	}
	// The barrier: the server's own count of open client streams.
	waitFor(t, func() bool { return openStreams(t, s) == n })
	return streams
}

// TestServerIdleStreamsHoldNoSlot: at the default limits, 128 streams that send nothing
// (MaxConcurrent of them) leave every slot free: another client's Stats is answered.
func TestServerIdleStreamsHoldNoSlot(t *testing.T) {
	s := startServer(t, Config{DataDir: t.TempDir()})
	defer s.shutdown()
	idleStreams(t, s, DefaultMaxConcurrent, DefaultMaxStreamsPerConnection/2)
	if _, err := s.client.Stats(context.Background(), &pb.StatsRequest{}); err != nil {
		t.Fatalf("Stats with %d idle streams open: %v", DefaultMaxConcurrent, err)
	}
}

// TestServerEndsIdleStreams: a stream that sends nothing, and one that goes quiet after its
// work is answered, are ended after IdleTimeout with DEADLINE_EXCEEDED saying why.
func TestServerEndsIdleStreams(t *testing.T) {
	const idle = time.Second
	s := startServer(t, Config{DataDir: t.TempDir(), IdleTimeout: idle})
	defer s.shutdown()
	ctx := context.Background()
	silent, err := s.client.UpsertStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	vec := make([]float32, testEmbedder(t).Dim())
	vec[0] = 1
	// A stream also counts as idle until its first message arrives; should this machine take
	// longer than the timeout between opening the stream and the message arriving, that try
	// proves nothing and the next one is made.
	var quiet pb.Lookalike_UpsertStreamClient
	for try := 0; quiet == nil; try++ {
		if try == 5 {
			t.Fatalf("no stream got its item answered within %v of opening, five times", idle)
		}
		st, err := s.client.UpsertStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&pb.UpsertRequest{Id: "quiet", Content: &pb.UpsertRequest_Vector{Vector: &pb.Vector{Values: vec}}}); err != nil && !errors.Is(err, io.EOF) {
			t.Fatal(err)
		}
		r, err := st.Recv()
		if status.Code(err) == codes.DeadlineExceeded {
			continue
		}
		if err != nil || (r.GetOutcome() != pb.Outcome_OUTCOME_CREATED && r.GetOutcome() != pb.Outcome_OUTCOME_UNCHANGED) {
			t.Fatalf("the quiet stream's one item: %v %v", r, err)
		}
		quiet = st
	}
	for name, st := range map[string]pb.Lookalike_UpsertStreamClient{"silent": silent, "quiet": quiet} {
		_, err := st.Recv()
		if status.Code(err) != codes.DeadlineExceeded || !strings.Contains(err.Error(), "idle") {
			t.Errorf("%s stream: %v, want DEADLINE_EXCEEDED for an idle stream", name, err)
		}
	}
	waitFor(t, func() bool { return openStreams(t, s) == 0 })
	if _, err := s.client.Get(ctx, &pb.GetRequest{Id: "quiet"}); err != nil {
		t.Fatal(err)
	}
}

// TestServerShutdownEndsIdleStreams: with a drain timeout far longer than the test, Serve
// returns because the idle streams and a health watch are ended when shutdown begins, each
// with UNAVAILABLE, not because the timeout cut them off.
func TestServerShutdownEndsIdleStreams(t *testing.T) {
	s := startServer(t, Config{DataDir: t.TempDir(), ShutdownTimeout: time.Hour})
	streams := idleStreams(t, s, 8, 8)
	// The watch has a connection of its own: shutdown() closes s.conn, and the status must
	// not race with that.
	conn, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	watch, err := healthpb.NewHealthClient(conn).Watch(context.Background(), &healthpb.HealthCheckRequest{Service: ServiceName})
	if err != nil {
		t.Fatal(err)
	}
	if h, err := watch.Recv(); err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health watch: %v %v", h, err)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- s.shutdown() }()
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("Serve is still draining idle streams (its drain timeout is an hour)")
	}
	for i, st := range streams {
		if _, err := st.Recv(); status.Code(err) != codes.Unavailable {
			t.Errorf("idle stream %d at shutdown: %v, want UNAVAILABLE", i, err)
		}
	}
	for {
		_, err := watch.Recv()
		if err != nil {
			if status.Code(err) != codes.Unavailable {
				t.Errorf("health watch at shutdown: %v, want UNAVAILABLE", err)
			}
			break
		}
	}
}

// TestServerClosesIdleConnections: a connection that has had no call for
// ConnectionIdleTimeout is told to go away and closed.
func TestServerClosesIdleConnections(t *testing.T) {
	s := startServer(t, Config{DataDir: t.TempDir(), ConnectionIdleTimeout: 100 * time.Millisecond})
	defer s.shutdown()
	c := dialRaw(t, s.addr)
	defer c.conn.Close()
	var goAway bool
	c.await(func() bool { goAway = c.goAway; return c.closed })
	if !goAway {
		t.Fatal("the idle connection was closed without a GOAWAY")
	}
}

// TestServerCapsConnections: with MaxConnections 2, a third connection is served only once
// one of the first two has gone.
func TestServerCapsConnections(t *testing.T) {
	s := startServer(t, Config{DataDir: t.TempDir(), MaxConnections: 2})
	defer s.shutdown()
	// served waits for the server's first frames on c (its SETTINGS and window update), or
	// for the connection to end; it tells which.
	served := func(c *rawCall) bool {
		var served bool
		c.await(func() bool { served = c.connWin != http2DefaultWindow; return served || c.closed })
		return served
	}
	// startServer's own client holds one connection; a raw one takes the second.
	second := dialRaw(t, s.addr)
	if !served(second) {
		t.Fatal("the second connection was not served")
	}
	third := dialRaw(t, s.addr)
	// The kernel completes the third's handshake, but the server does not accept it while two
	// are open, so nothing arrives. This wait can only let a broken cap go unnoticed on a
	// slow machine, never fail a working one: a served connection gets its SETTINGS at once.
	_ = third.conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if served(third) {
		t.Fatal("a third connection was served while two were open")
	}
	_ = third.conn.Close()
	_ = second.conn.Close()
	fourth := dialRaw(t, s.addr)
	defer fourth.conn.Close()
	if !served(fourth) {
		t.Fatal("a connection was not served after one of the two closed")
	}
	if _, err := s.client.Stats(context.Background(), &pb.StatsRequest{}); err != nil {
		t.Fatal(err)
	}
}

// testLimiter is a limiter outside a server, for tests that drive the tap and the
// interceptors directly.
func testLimiter(cfg Config) *limiter {
	cfg = cfg.withDefaults()
	m := newMetrics(func() float64 { return 0 })
	return newLimiter(cfg, nil, observer{log: discardLogger(), metrics: m}, m, context.Background())
}

// fakeStream is a grpc.ServerStream that only has a context.
type fakeStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (f fakeStream) Context() context.Context { return f.ctx }

// TestLimiterConcurrentStreamKeepsItsSlot: a server stream (a long Backup, say) that has
// started keeps its slot to the end; calls arriving meanwhile are refused by the tap, and
// the stream finishes normally.
func TestLimiterConcurrentStreamKeepsItsSlot(t *testing.T) {
	lim := testLimiter(Config{MaxConcurrent: 1})
	const backup, stats = "/lookalike.v1.Lookalike/Backup", "/lookalike.v1.Lookalike/Stats"
	release := make(chan struct{})
	started := make(chan struct{})
	streamErr := make(chan error, 1)
	info := &grpc.StreamServerInfo{FullMethod: backup, IsServerStream: true}
	go func() {
		ctx, err := lim.tap(context.Background(), &tap.Info{FullMethodName: backup})
		if err != nil {
			streamErr <- err
			close(started)
			return
		}
		streamErr <- lim.stream(nil, fakeStream{ctx: ctx}, info, func(any, grpc.ServerStream) error {
			close(started)
			<-release // the backup is still sending
			return nil
		})
	}()
	<-started
	for range 3 {
		if _, err := lim.tap(context.Background(), &tap.Info{FullMethodName: stats}); status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("a call during the stream: %v, want RESOURCE_EXHAUSTED", err)
		}
	}
	close(release)
	if err := <-streamErr; err != nil {
		t.Fatalf("the stream was cut: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := lim.tap(ctx, &tap.Info{FullMethodName: stats}); err != nil {
		t.Fatalf("a call after the stream: %v", err)
	}
}

// TestLimiterBudgetRefusesAndShrinks: a call reserves the largest message while its request
// arrives and keeps only the request's size once it has; beyond the budget the tap refuses.
func TestLimiterBudgetRefusesAndShrinks(t *testing.T) {
	const msg = 1 << 20
	lim := testLimiter(Config{MaxMessageBytes: msg, MaxBufferedBytes: 2 * msg})
	const search = "/lookalike.v1.Lookalike/SearchByImage"
	var cancels []context.CancelFunc
	defer func() {
		for _, c := range cancels {
			c()
		}
	}()
	tapped := func() (context.Context, error) {
		ctx, cancel := context.WithCancel(context.Background())
		cancels = append(cancels, cancel)
		return lim.tap(ctx, &tap.Info{FullMethodName: search})
	}
	first, err := tapped()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tapped(); err != nil {
		t.Fatal(err)
	}
	if got := lim.budget.inUse(); got != 2*msg {
		t.Fatalf("two requests arriving reserve %d bytes, want %d", got, 2*msg)
	}
	if _, err := tapped(); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("a third request beyond the budget: %v, want RESOURCE_EXHAUSTED", err)
	}
	req := &pb.SearchByImageRequest{Image: make([]byte, 1000), K: 5}
	admissionOf(first).read(req)
	if got, want := lim.budget.inUse(), int64(msg+messageBytes(req, msg)); got != want {
		t.Fatalf("after the first request arrived: %d bytes reserved, want %d", got, want)
	}
	// The calls end (their stream contexts do): everything is given back.
	for _, c := range cancels {
		c()
	}
	cancels = nil
	waitFor(t, func() bool { return lim.budget.inUse() == 0 })
	if _, err := tapped(); err != nil {
		t.Fatalf("a call once the others ended: %v", err)
	}
}

// TestServerStreamWaitsForBudgetInsteadOfFailing: messages of a stream beyond the budget wait
// for room instead of failing, and all are answered.
func TestServerStreamWaitsForBudgetInsteadOfFailing(t *testing.T) {
	s := startServer(t, Config{DataDir: t.TempDir(), MaxMessageBytes: 64 << 10, MaxBufferedBytes: 64 << 10})
	defer s.shutdown()
	dim := testEmbedder(t).Dim()
	var reqs []*pb.UpsertRequest
	for i := range 200 { // each about 5 KiB: the budget holds about a dozen
		vec := make([]float32, dim)
		vec[i%dim] = 1
		reqs = append(reqs, &pb.UpsertRequest{Id: fmt.Sprint("v", i), Content: &pb.UpsertRequest_Vector{Vector: &pb.Vector{Values: vec}}})
	}
	results, err := ingestAll(context.Background(), s.client, reqs)
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != len(reqs) {
		t.Fatalf("%d results for %d requests", len(results), len(reqs))
	}
	for _, r := range results {
		if r.GetOutcome() != pb.Outcome_OUTCOME_CREATED {
			t.Fatalf("%s: %v %s", r.GetId(), r.GetOutcome(), r.GetErrorMessage())
		}
	}
}
