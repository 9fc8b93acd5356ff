package server

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
	"google.golang.org/protobuf/proto"
)

// Limits on what callers can make the server hold. The order matters: the tap (limiter.tap)
// runs when a call's headers arrive, before gRPC reads a byte of its message, so a call
// without the token, or beyond the concurrency or memory limits, is refused before it costs
// any memory; the interceptors then follow what an admitted call holds until it ends.
//
// What a connection can make the server hold (TestServerRefusesUnauthenticatedCallsBeforeReadingThem
// bounds the first two):
//   - refused calls: nothing of their messages. Before the refusal a client can send at most
//     one stream window (streamWindowBytes), which gRPC drops on arrival.
//   - every connection: its transport buffers (a 32 KiB read buffer, a 32 KiB write buffer
//     shared between idle connections, gRPC's default) and, while headers are
//     decoded, up to maxHeaderListBytes of them.
//   - admitted unary and server-streaming calls: the request bytes counted by budget, at
//     most Config.MaxBufferedBytes in all. A call reserves the largest message while its
//     request arrives and keeps only the request's real size once it has.
//   - client streams (UpsertStream): the messages received and not yet answered, counted by
//     the same budget (a stream waits for room before it reads on), and the one message each
//     stream may be receiving, at most MaxMessageBytes; streams are bounded by
//     MaxConnections x MaxStreamsPerConnection, and one that stops sending is ended after
//     IdleTimeout.

// Defaults of the limits in Config.
const (
	DefaultMaxConnections          = 256
	DefaultMaxStreamsPerConnection = 100 // HTTP/2's recommended minimum
	DefaultIdleTimeout             = 2 * time.Minute
	DefaultConnectionIdleTimeout   = 5 * time.Minute
	DefaultMaxBufferedBytes        = 512 << 20
)

// Transport sizes, fixed rather than configurable: together with the limits above they
// bound a connection's memory.
const (
	// streamWindowBytes is each stream's HTTP/2 receive window: what a client can send on a
	// stream before the server reads (gRPC opens the window to a message's size once it
	// starts reading that message). Setting it turns off gRPC's window estimation, which
	// would grow every window to 16 MiB.
	streamWindowBytes = 64 << 10
	// connWindowBytes is the connection's receive window; gRPC refills it as data arrives,
	// whatever the handlers read, so it paces transfers rather than bounding memory.
	connWindowBytes = 1 << 20
	// transportBufferBytes is each connection's read buffer and write buffer (gRPC's
	// default, set here so the bound above does not drift with gRPC's).
	transportBufferBytes = 32 << 10
	// maxHeaderListBytes bounds a call's decoded headers (gRPC's default is 16 MiB); a
	// bearer token and the usual metadata take well under 1 KiB.
	maxHeaderListBytes = 64 << 10
	// handlerGrace is how long a client stream's handler has to return once its context is
	// cancelled before the call is cut off at the transport (UpsertStream returns at once;
	// reflection's handler does not watch its context).
	handlerGrace = 5 * time.Second
	// handshakeTimeout bounds a new connection's TLS handshake and HTTP/2 preface.
	handshakeTimeout = 20 * time.Second
	// keepaliveTime and keepaliveTimeout: a connection quiet this long is pinged, and closed
	// when the ping is not answered in time, so dead peers do not keep their streams.
	keepaliveTime    = time.Minute
	keepaliveTimeout = 20 * time.Second
)

// limiter sheds calls beyond a fixed number in flight, and beyond the request memory budget,
// with RESOURCE_EXHAUSTED instead of queueing them: a queue only turns overload into
// timeouts for everyone.
//
// A unary or server-streaming call takes its concurrency slot in the tap and keeps it to the
// end, so a long Backup either is refused before its first byte or runs to completion. A
// client stream holds a slot only while it has work: from the arrival of a message until
// its answer is sent (UpsertStream answers every request with one result). A stream with
// nothing to do holds nothing, so idle streams cannot lock other callers out; it waits for
// a slot when its next message arrives rather than being cut off midway, and it is ended
// after IdleTimeout without messages.
type limiter struct {
	slots      chan struct{}
	budget     *budget
	maxMessage int64
	idle       time.Duration
	auth       *authenticator // nil: no authentication
	obs        observer
	metrics    *metrics
	streams    prometheus.Gauge
	// clientStreams names the methods whose requests are streams; filled by learnMethods
	// before the server serves, read-only afterwards.
	clientStreams map[string]bool
	// shutdown is cancelled when the server begins to stop: calls waiting for a request
	// (and streams between messages) are then ended instead of holding up the drain.
	shutdown context.Context
}

// newLimiter makes the limiter of one server and registers its gauges on m's registry.
func newLimiter(cfg Config, auth *authenticator, obs observer, m *metrics, shutdown context.Context) *limiter {
	l := &limiter{
		slots:         make(chan struct{}, cfg.MaxConcurrent),
		budget:        newBudget(int64(cfg.MaxBufferedBytes)),
		maxMessage:    int64(cfg.MaxMessageBytes),
		idle:          cfg.IdleTimeout,
		auth:          auth,
		obs:           obs,
		metrics:       m,
		clientStreams: map[string]bool{},
		shutdown:      shutdown,
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lookalike_grpc_client_streams_open", Help: "Client-streaming calls (UpsertStream, reflection) open, idle or not.",
		}),
	}
	m.registry.MustRegister(l.streams, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "lookalike_request_bytes_reserved", Help: "Request bytes the server holds or has reserved for requests arriving.",
	}, func() float64 { return float64(l.budget.inUse()) }))
	return l
}

// learnMethods records which of the registered methods are client streams; the tap needs
// to know before it has a handler to ask.
func (l *limiter) learnMethods(services map[string]grpc.ServiceInfo) {
	for name, svc := range services {
		for _, m := range svc.Methods {
			if m.IsClientStream {
				l.clientStreams["/"+name+"/"+m.Name] = true
			}
		}
	}
}

// busy is the refusal of a call beyond the concurrency limit.
func (l *limiter) busy() error {
	return status.Errorf(codes.ResourceExhausted, "server busy: %d calls in flight; retry with backoff", cap(l.slots))
}

// trySlot takes a concurrency slot if one is free.
func (l *limiter) trySlot() (release func(), ok bool) {
	select {
	case l.slots <- struct{}{}:
		return l.slotTaken(), true
	default:
		return nil, false
	}
}

// waitSlot takes a concurrency slot, waiting for one until ctx ends.
func (l *limiter) waitSlot(ctx context.Context) (release func(), err error) {
	select {
	case l.slots <- struct{}{}:
		return l.slotTaken(), nil
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

func (l *limiter) slotTaken() func() {
	l.metrics.inflight.Inc()
	var once sync.Once
	return func() {
		once.Do(func() {
			<-l.slots
			l.metrics.inflight.Dec()
		})
	}
}

// refuse records a call the tap turned away, as the observer does for calls that ran.
func (l *limiter) refuse(method string, err error) error {
	if status.Code(err) == codes.ResourceExhausted {
		l.metrics.shed.WithLabelValues(methodName(method)).Inc()
	}
	l.obs.done(method, time.Now(), err)
	return err
}

// tap is the grpc.InTapHandle: it runs on the connection's reader when a call's headers
// arrive, before its message is read, and must not block. It checks the token, takes the
// concurrency slot and reserves room for the request; a refusal here means the message is
// never read (gRPC answers with the status and resets the stream).
func (l *limiter) tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	method := info.FullMethodName
	if l.auth != nil && !isHealth(method) {
		if err := l.auth.check(info.Header); err != nil {
			return nil, l.refuse(method, err)
		}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	a := &admission{l: l, method: method, ctx: ctx, cancel: cancel, stream: l.clientStreams[method]}
	if !a.stream {
		if !isHealth(method) {
			release, ok := l.trySlot()
			if !ok {
				cancel(nil)
				return nil, l.refuse(method, l.busy())
			}
			a.slot = release
		}
		if !l.budget.tryTake(l.maxMessage) {
			a.release()
			cancel(nil)
			return nil, l.refuse(method, status.Errorf(codes.ResourceExhausted,
				"server busy: %d MiB of requests held or arriving; retry with backoff", l.budget.limit>>20))
		}
		a.reserved = l.maxMessage
		// A request that stops arriving is ended like an idle stream.
		a.readTimer = time.AfterFunc(l.idle, func() {
			if !a.requestRead() {
				a.end(status.Errorf(codes.DeadlineExceeded, "the request did not arrive within %v; the server ended the call", l.idle))
			}
		})
	}
	a.stopShutdown = context.AfterFunc(l.shutdown, a.shuttingDown)
	// However the call ends (a refusal by gRPC itself, a reset, a handler's return), the
	// stream's context ends with it and what the call held is given back.
	context.AfterFunc(ctx, a.release)
	return context.WithValue(ctx, admissionKey{}, a), nil
}

type admissionKey struct{}

// admission is what one admitted call holds: a concurrency slot and reserved request bytes
// (a unary or server-streaming call), and the means to end it early.
type admission struct {
	l      *limiter
	method string
	ctx    context.Context
	cancel context.CancelCauseFunc
	stream bool // a client stream: its slot and bytes are per message, in clientStream

	slot         func() // releases the concurrency slot; nil when none is held
	readTimer    *time.Timer
	stopShutdown func() bool

	mu       sync.Mutex
	reserved int64 // budget bytes held for the request
	readDone bool  // the request has arrived
	endedBy  error // why the server ended the call, if it did
	cs       *clientStream
	released bool
}

func admissionOf(ctx context.Context) *admission {
	a, _ := ctx.Value(admissionKey{}).(*admission)
	return a
}

// requestRead tells whether the request has arrived.
func (a *admission) requestRead() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.readDone
}

// read notes that the request m has arrived: the wait for it is over, and of the bytes
// reserved for it only its real size stays reserved.
func (a *admission) read(m any) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.readDone || a.released {
		return
	}
	a.readDone = true
	if a.readTimer != nil {
		a.readTimer.Stop()
	}
	if keep := messageBytes(m, a.reserved); keep < a.reserved {
		a.l.budget.give(a.reserved - keep)
		a.reserved = keep
	}
}

// end ends the call early, saying why. A client stream is ended through its handler's
// context, so that the handler's answer (this reason) is the status the client gets: ending
// the transport's context first would fail the read the handler has pending, and gRPC would
// answer a bare CANCELLED before the handler could.
func (a *admission) end(why error) {
	a.mu.Lock()
	if a.endedBy == nil {
		a.endedBy = why
	}
	cs := a.cs
	a.mu.Unlock()
	if cs != nil {
		cs.end(why)
		return
	}
	a.cancel(why)
}

// shuttingDown runs when the server begins to stop. Calls still waiting for their request,
// health watches and client streams with nothing to do are ended now: they would only hold
// up the drain until the shutdown timeout. Calls with work in hand finish it.
func (a *admission) shuttingDown() {
	why := status.Error(codes.Unavailable, "the server is shutting down; retry elsewhere or later")
	a.mu.Lock()
	cs, waiting := a.cs, !a.readDone
	a.mu.Unlock()
	switch {
	case cs != nil:
		cs.shuttingDown(why)
	case a.stream:
		// A client stream whose handler has not started yet.
		a.end(why)
	case waiting || isHealth(a.method):
		a.end(why)
	}
}

// explain replaces the error a handler returned after the server ended its call (a context
// error, typically) by the reason.
func (a *admission) explain(err error) error {
	if err == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.endedBy != nil {
		return a.endedBy
	}
	return err
}

// release gives back what the call holds; it runs when the handler returns and again when
// the call's context ends, and only the first counts.
func (a *admission) release() {
	a.mu.Lock()
	if a.released {
		a.mu.Unlock()
		return
	}
	a.released = true
	reserved := a.reserved
	a.reserved = 0
	cs := a.cs
	a.mu.Unlock()
	if a.readTimer != nil {
		a.readTimer.Stop()
	}
	if a.stopShutdown != nil {
		a.stopShutdown()
	}
	a.l.budget.give(reserved)
	if a.slot != nil {
		a.slot()
	}
	if cs != nil {
		cs.close()
	}
}

// errNotAdmitted is the answer to a call that reached the interceptors without passing the
// tap, which Serve always installs: refusing it keeps the limits from being bypassed.
var errNotAdmitted = status.Error(codes.Internal, "server: call was not admitted by the limiter")

func (l *limiter) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	a := admissionOf(ctx)
	if a == nil {
		return nil, errNotAdmitted
	}
	defer a.release()
	a.read(req)
	resp, err := h(ctx, req)
	return resp, a.explain(err)
}

func (l *limiter) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	a := admissionOf(ss.Context())
	if a == nil {
		return errNotAdmitted
	}
	defer a.release()
	if !a.stream {
		return a.explain(h(srv, requestStream{ServerStream: ss, a: a}))
	}
	cs := l.newClientStream(ss, a)
	a.mu.Lock()
	released := a.released
	if !released {
		a.cs = cs
	}
	a.mu.Unlock()
	if released { // the call ended before its handler started
		cs.close()
		return a.explain(context.Cause(a.ctx))
	}
	return a.explain(h(srv, cs))
}

// requestStream is a server-streaming call's stream: its one request arriving ends the wait
// for it.
type requestStream struct {
	grpc.ServerStream
	a *admission
}

func (s requestStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if err == nil {
		s.a.read(m)
	}
	return err
}

// clientStream follows a client stream's work: the messages received and not yet answered.
// While there are any it holds a concurrency slot and their bytes in the budget; while there
// are none it holds nothing, and after IdleTimeout it is ended. Answers are assumed to come
// one per request, in order, as UpsertStream (and reflection) send them.
type clientStream struct {
	grpc.ServerStream
	l      *limiter
	a      *admission
	ctx    context.Context // the handler's: cancelled to end the stream
	cancel context.CancelCauseFunc

	mu       sync.Mutex
	pending  int     // messages received and not yet answered
	sizes    []int64 // budget bytes of the pending messages whose bytes are counted, oldest first
	slot     func()  // held while pending > 0
	idleGen  int     // bumped whenever the idle timer is stopped, so a stale one does nothing
	idle     *time.Timer
	closing  bool        // the server is stopping: end the stream as soon as it has nothing to do
	cutOff   *time.Timer // after end: cuts the call off at the transport if the handler lingers
	finished bool
}

func (l *limiter) newClientStream(ss grpc.ServerStream, a *admission) *clientStream {
	ctx, cancel := context.WithCancelCause(ss.Context())
	cs := &clientStream{ServerStream: ss, l: l, a: a, ctx: ctx, cancel: cancel}
	l.streams.Inc()
	cs.mu.Lock()
	cs.armIdle()
	cs.mu.Unlock()
	return cs
}

// Context is the handler's context, which the server cancels to end the stream.
func (cs *clientStream) Context() context.Context { return cs.ctx }

// end cancels the handler's context and, should the handler not return within
// handlerGrace, the call's.
func (cs *clientStream) end(why error) {
	cs.cancel(why)
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if !cs.finished && cs.cutOff == nil {
		cs.cutOff = time.AfterFunc(handlerGrace, func() { cs.a.cancel(why) })
	}
}

// armIdle starts the idle timer; cs.mu is held.
func (cs *clientStream) armIdle() {
	cs.idleGen++
	gen := cs.idleGen
	cs.idle = time.AfterFunc(cs.l.idle, func() { cs.idleFired(gen) })
}

// disarmIdle stops the idle timer; cs.mu is held.
func (cs *clientStream) disarmIdle() {
	cs.idleGen++
	if cs.idle != nil {
		cs.idle.Stop()
	}
}

func (cs *clientStream) idleFired(gen int) {
	cs.mu.Lock()
	stale := gen != cs.idleGen || cs.pending > 0 || cs.finished
	cs.mu.Unlock()
	if !stale {
		cs.a.end(status.Errorf(codes.DeadlineExceeded, "no message for %v; the server ended the idle stream", cs.l.idle))
	}
}

func (cs *clientStream) shuttingDown(why error) {
	cs.mu.Lock()
	cs.closing = true
	idle := cs.pending == 0
	cs.mu.Unlock()
	if idle {
		cs.a.end(why)
	}
}

// RecvMsg receives the next message and then takes what processing it needs: a slot if the
// stream had none, and its bytes in the budget, waiting for both (the message is already
// here; waiting keeps the stream from reading further ahead).
func (cs *clientStream) RecvMsg(m any) error {
	if err := cs.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	cs.mu.Lock()
	cs.pending++
	cs.disarmIdle()
	needSlot := cs.slot == nil
	cs.mu.Unlock()
	ctx := cs.Context()
	if needSlot {
		release, err := cs.l.waitSlot(ctx)
		if err != nil {
			return err
		}
		cs.mu.Lock()
		if cs.slot == nil && !cs.finished {
			cs.slot, release = release, nil
		}
		cs.mu.Unlock()
		if release != nil {
			release()
		}
	}
	n := messageBytes(m, cs.l.maxMessage)
	if err := cs.l.budget.take(ctx, n); err != nil {
		return err
	}
	cs.mu.Lock()
	if cs.finished {
		cs.mu.Unlock()
		cs.l.budget.give(n)
		return context.Cause(ctx)
	}
	cs.sizes = append(cs.sizes, n)
	cs.mu.Unlock()
	return nil
}

// SendMsg answers the oldest pending message: its bytes are given back, and with nothing
// left pending so is the slot (before the send, which may wait on a slow reader).
func (cs *clientStream) SendMsg(m any) error {
	cs.mu.Lock()
	var give int64
	var slot func()
	if cs.pending > 0 {
		cs.pending--
		if len(cs.sizes) > 0 {
			give, cs.sizes = cs.sizes[0], cs.sizes[1:]
		}
		if cs.pending == 0 {
			slot, cs.slot = cs.slot, nil
			cs.armIdle()
		}
	}
	idleAndClosing := cs.pending == 0 && cs.closing
	cs.mu.Unlock()
	cs.l.budget.give(give)
	if slot != nil {
		slot()
	}
	err := cs.ServerStream.SendMsg(m)
	if idleAndClosing {
		cs.a.end(status.Error(codes.Unavailable, "the server is shutting down; retry elsewhere or later"))
	}
	return err
}

// close gives back everything the stream holds; the handler has returned.
func (cs *clientStream) close() {
	cs.mu.Lock()
	if cs.finished {
		cs.mu.Unlock()
		return
	}
	cs.finished = true
	cs.disarmIdle()
	if cs.cutOff != nil {
		cs.cutOff.Stop()
	}
	var held int64
	for _, n := range cs.sizes {
		held += n
	}
	cs.sizes = nil
	slot := cs.slot
	cs.slot = nil
	cs.mu.Unlock()
	cs.l.budget.give(held)
	if slot != nil {
		slot()
	}
	cs.cancel(nil)
	cs.l.streams.Dec()
}

// messageBytes is what a received message keeps in memory: its encoded size (a photo's bytes
// are copied out of the wire buffer, which gRPC frees), or limit for a non-proto message.
func messageBytes(m any, limit int64) int64 {
	if pm, ok := m.(proto.Message); ok {
		return min(int64(proto.Size(pm)), limit)
	}
	return limit
}

// budget counts request bytes held or reserved across the server.
type budget struct {
	limit int64
	mu    sync.Mutex
	used  int64
	freed chan struct{} // closed (and replaced) whenever bytes are given back
}

func newBudget(limit int64) *budget {
	return &budget{limit: limit, freed: make(chan struct{})}
}

func (b *budget) inUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// fits tells whether n more bytes fit; b.mu is held. Anything fits an empty budget, so a
// request larger than the whole budget is not refused forever.
func (b *budget) fits(n int64) bool { return b.used == 0 || b.used+n <= b.limit }

func (b *budget) tryTake(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.fits(n) {
		return false
	}
	b.used += n
	return true
}

// take reserves n bytes, waiting for room until ctx ends.
func (b *budget) take(ctx context.Context, n int64) error {
	for {
		b.mu.Lock()
		if b.fits(n) {
			b.used += n
			b.mu.Unlock()
			return nil
		}
		freed := b.freed
		b.mu.Unlock()
		select {
		case <-freed:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

func (b *budget) give(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	close(b.freed)
	b.freed = make(chan struct{})
	b.mu.Unlock()
}

// serverOptions are the transport settings that bound each connection: streams per
// connection, fixed flow-control windows, the header and message size limits, and keepalive,
// which closes connections without calls and those whose peer stopped answering.
func serverOptions(cfg Config) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(cfg.MaxMessageBytes),
		grpc.MaxSendMsgSize(cfg.MaxMessageBytes),
		grpc.MaxConcurrentStreams(uint32(cfg.MaxStreamsPerConnection)),
		grpc.InitialWindowSize(streamWindowBytes),
		grpc.InitialConnWindowSize(connWindowBytes),
		grpc.MaxHeaderListSize(maxHeaderListBytes),
		grpc.ReadBufferSize(transportBufferBytes),
		grpc.WriteBufferSize(transportBufferBytes),
		grpc.ConnectionTimeout(handshakeTimeout),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: cfg.ConnectionIdleTimeout, Time: keepaliveTime, Timeout: keepaliveTimeout,
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	}
}
