//go:build linux

package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"lookalike/catalog"
	"lookalike/embed"
	pb "lookalike/proto/lookalike/v1"
	"lookalike/store"
)

// The crash loop runs a real server (this test binary re-executed as `lookalike serve`, with
// the real model and a real bbolt file) on one data directory, writes to it over gRPC from a
// client that records every acknowledged result, SIGKILLs it at a point chosen by a counter or
// a progress signal, checks the stopped store, restarts it and demands every acknowledged
// write back byte for byte. LOOKALIKE_CRASH_CYCLES sets the number of kills (default 4; `make
// soak` runs 100) and LOOKALIKE_CRASH_SEED the seed of every choice (default: the clock; the
// log names it so a failure can be replayed).
const (
	crashLoopChildEnv = "LOOKALIKE_CRASHLOOP_CHILD" // "1" in the re-executed server
	crashLoopArgsEnv  = "LOOKALIKE_CRASHLOOP_ARGS"  // the child's command line, a JSON list
	crashCyclesEnv    = "LOOKALIKE_CRASH_CYCLES"
	crashSeedEnv      = "LOOKALIKE_CRASH_SEED"

	crashDefaultCycles = 4
	crashPool          = 150 // product ids written, updated and deleted over and over
	crashOpsPerCycle   = 48  // writes planned per cycle after the first (the kill usually cuts them short)
	crashWindow        = 16  // upserts in flight on the stream
	crashMaxPhotos     = 6
	crashRealPerCycle  = 3 // writes of real photos per cycle at most (each runs the model)
	// crashGuard bounds every wait for the server; reaching it fails the test, it is never
	// what a check relies on.
	crashGuard = 2 * time.Minute
)

// crashKind is where a cycle's kill lands.
type crashKind int

const (
	// killAfterAcks kills right after the Nth acknowledgement of the cycle.
	killAfterAcks crashKind = iota
	// killInSnapshot kills when, after the Nth acknowledgement, the server creates the
	// temporary file of a graph snapshot save (seen through inotify).
	killInSnapshot
	// killInBackup takes a whole hot backup after the Nth acknowledgement, checks it, then
	// starts another and kills after receiving its first or second piece.
	killInBackup
	// killInStartup kills a restarting server when it logs that its store is open (before
	// the graph is loaded or rebuilt), restarts it, and then kills after N acknowledgements.
	killInStartup
)

func (k crashKind) String() string {
	return [...]string{"acks", "snapshot", "backup", "startup"}[k]
}

// TestCrashLoop proves that a write the server acknowledged survives a SIGKILL at any of the
// chosen points: after it returns, Get (with vectors) shows the product with exactly the
// acknowledged photos (their metadata byte for byte, the vectors sent as the server
// normalises them), GetPhoto returns the kept copy of every real photo, acknowledged deletes
// stay deleted, nothing appears that was never written, a write in flight at the kill is
// either wholly there or wholly absent, Stats and the graph agree with the store, and the
// killed server's store passes the full check (`lookalike backup --data`).
func TestCrashLoop(t *testing.T) {
	if os.Getenv(crashLoopChildEnv) == "1" {
		crashLoopChild()
		return
	}
	if testing.Short() {
		t.Skip("the crash loop runs real servers; skipped with -short")
	}
	cycles := crashDefaultCycles
	if v := os.Getenv(crashCyclesEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive number of cycles", crashCyclesEnv, v)
		}
		cycles = n
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv(crashSeedEnv); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: want an unsigned number", crashSeedEnv, v)
		}
		seed = s
	}
	t.Logf("crash loop: %d cycles, seed %d (%s=%d replays it)", cycles, seed, crashSeedEnv, seed)

	l := newCrashLoop(t, seed)
	start := time.Now()
	for cycle := range cycles {
		l.cycle(cycle, crashKind(cycle%4))
		if t.Failed() {
			break
		}
	}
	if !t.Failed() {
		l.finish()
	}
	s := l.stats
	t.Logf("crash loop summary: %d cycles, %d kills (%d after acks, %d in snapshot saves of which %d left the save unfinished, %d in hot backups of which %d mid-stream, %d in startups), "+
		"%d acknowledged writes (%d created, %d updated, %d unchanged, %d deleted), %d checked as their product's latest state after a crash, %d overwritten by a later acknowledged write, "+
		"%d in flight at a kill (%d applied, %d not), %d products checked, %d kept photos compared, %d hot backups verified, lost %d, wall %v",
		s.cycles, s.kills, s.kindKills[killAfterAcks], s.kindKills[killInSnapshot], s.midSave, s.kindKills[killInBackup], s.midBackup, s.kindKills[killInStartup],
		s.acked, s.created, s.updated, s.unchanged, s.deleted, s.latestChecked, s.superseded,
		s.inFlight, s.inFlightApplied, s.inFlight-s.inFlightApplied, s.productsChecked, s.keptCompared, s.backupsVerified, s.lost,
		time.Since(start).Round(time.Millisecond))
}

// crashLoopChild is the server process: `lookalike serve` with the arguments the parent
// passed. SIGTERM stops it gracefully, as the real binary's main does.
func crashLoopChild() {
	var args []string
	if err := json.Unmarshal([]byte(os.Getenv(crashLoopArgsEnv)), &args); err != nil {
		fmt.Fprintf(os.Stderr, "crash loop child: bad %s: %v\n", crashLoopArgsEnv, err)
		os.Exit(3)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, args, strings.NewReader(""), os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// realPhoto is a shared grocery photo and what the model makes of it, computed in this
// process: the kept copy the server must return byte for byte, the perceptual hash and the
// vector (the server's must be within rounding of it).
type realPhoto struct {
	name   string
	path   string
	bytes  []byte
	sha256 string
	kept   []byte
	phash  string
	vector []float32
}

// wantPhoto is one photo as the client knows it.
type wantPhoto struct {
	id  string
	url string
	// raw is the vector sent (nil for a real photo); vector what the server must hold
	// (raw L2-normalised as the server does it, or for a real photo the server's own once
	// seen after a crash; nil before that).
	raw, vector []float32
	real        *realPhoto
	// meta is the photo as the server acknowledged it (without vector), nil while the
	// write that made it is unacknowledged.
	meta *pb.Photo
}

// wantProduct is a product's state as the client knows it.
type wantProduct struct {
	category, title string
	attrs           map[string]string
	photos          []wantPhoto
}

func (w *wantProduct) clone() *wantProduct {
	if w == nil {
		return nil
	}
	c := *w
	c.attrs = maps.Clone(w.attrs)
	c.photos = slices.Clone(w.photos)
	return &c
}

// crashOp is one write: an upsert (req) or a delete, and the state it leaves.
type crashOp struct {
	id          string
	del         bool
	req         *pb.UpsertRequest
	want        *wantProduct // nil for a delete
	wantOutcome pb.Outcome
	pos         uint64 // position in its stream
}

// crashStats are the loop's figures.
type crashStats struct {
	cycles, kills, midSave              int
	kindKills                           [4]int
	acked, created, updated, unchanged  int
	deleted, latestChecked, superseded  int
	inFlight, inFlightApplied           int
	productsChecked, keptCompared, lost int
	backupsVerified, midBackup          int
	ackedThisCycle                      map[string]int // id -> acknowledged writes since the last check
}

// crashLoop is the client side: the ledger of acknowledged states and the server in use.
type crashLoop struct {
	t        *testing.T
	rng      *rand.Rand
	dir      string
	data     string
	env      []string
	dim      int
	ids      []string
	real     []*realPhoto
	serial   int
	mu       sync.Mutex              // guards the ledger below while writers run
	acked    map[string]*wantProduct // the acknowledged (or checked) state; absent: not stored
	inFlight map[string]*crashOp     // sent, not acknowledged
	stats    crashStats
}

func newCrashLoop(t *testing.T, seed uint64) *crashLoop {
	t.Helper()
	model, err := embed.FindModel()
	if err != nil {
		t.Fatalf("the embedding model is required: %v", err)
	}
	runtimeLib, err := embed.FindRuntime()
	if err != nil {
		t.Fatalf("the ONNX Runtime library is required: %v", err)
	}
	datasets, err := findSharedDir("datasets")
	if err != nil {
		t.Fatalf("shared datasets are required: %v", err)
	}
	dir := t.TempDir()
	l := &crashLoop{
		t: t, rng: rand.New(rand.NewPCG(seed, 0x10)), dir: dir, data: filepath.Join(dir, "data"),
		acked: map[string]*wantProduct{}, inFlight: map[string]*crashOp{},
		env: append(os.Environ(), crashLoopChildEnv+"=1", "LOOKALIKE_MODEL="+model,
			"LOOKALIKE_ORT_LIB="+runtimeLib, "LOOKALIKE_THREADS=1", "LOOKALIKE_LOG_LEVEL=info"),
	}
	l.stats.ackedThisCycle = map[string]int{}
	if err := os.MkdirAll(l.data, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range crashPool {
		l.ids = append(l.ids, fmt.Sprintf("sku-%03d", i))
	}
	// The reference for real photos: the same model and spec in this process.
	emb, err := embed.Open(context.Background(), embed.Config{ModelPath: model, RuntimePath: runtimeLib, Threads: 1, Sessions: 1,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("open the embedder: %v", err)
	}
	defer emb.Close()
	l.dim = emb.Dim()
	for _, p := range e2eProducts() {
		for _, name := range p.photos {
			path := filepath.Join(datasets, "grocery", "images", name+".jpg")
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			a, err := emb.Analyze(context.Background(), b, embed.AnalyzeOptions{Keep: true})
			if err != nil {
				t.Fatalf("analyse %s: %v", path, err)
			}
			sum := sha256.Sum256(b)
			l.real = append(l.real, &realPhoto{name: name, path: path, bytes: b, sha256: hex.EncodeToString(sum[:]),
				kept: a.Kept, phash: fmt.Sprintf("%016x", a.PHash), vector: a.Vector})
		}
	}
	return l
}

// cycle runs one cycle: start (or restart) the server, check everything, write until the
// kill, check the stopped store.
func (l *crashLoop) cycle(n int, kind crashKind) {
	t := l.t
	l.stats.cycles++
	interval := "-1s" // no periodic snapshot: the restart replays the change log since the last one
	switch kind {
	case killInSnapshot:
		interval = "50ms"
	case killInBackup:
		interval = "200ms"
	}
	if kind == killInStartup {
		srv := l.start(interval, false)
		if _, err := srv.waitLog(0, "store opened"); err != nil {
			t.Fatalf("cycle %d: %v\n%s", n, err, srv.logs.String())
		}
		srv.kill()
		l.afterKill(n, kind, srv)
	}
	srv := l.start(interval, true)
	l.verify(n, srv)
	if t.Failed() {
		srv.kill()
		<-srv.done
		return
	}
	ops := crashOpsPerCycle
	killAt := 1 + l.rng.IntN(ops)
	switch {
	case n == 0:
		// The first cycle fills most of the pool, so that later stores span several backup
		// pieces (1 MiB each) and snapshot saves take a while.
		ops = crashPool
		killAt = crashPool/2 + l.rng.IntN(crashPool/2)
	case kind == killInSnapshot || kind == killInBackup:
		killAt = 1 + l.rng.IntN(ops/2)
	}
	var armed atomic.Bool
	var backup sync.WaitGroup
	onAck := func(acks int) {
		if acks != killAt {
			return
		}
		switch kind {
		case killAfterAcks, killInStartup:
			srv.kill()
		case killInSnapshot:
			armed.Store(true)
		case killInBackup:
			backup.Go(func() { l.backupThenKill(n, srv) })
		}
	}
	if kind == killInSnapshot {
		stop := watchSnapshotTemp(t, l.data, func() {
			if armed.Load() {
				srv.kill()
			}
		})
		defer stop()
	}
	l.write(n, srv, ops, onAck)
	select {
	case <-srv.done:
	case <-time.After(crashGuard):
		srv.kill()
		<-srv.done
		t.Fatalf("cycle %d (%s): no kill point reached within %v (kill at ack %d)\n%s", n, kind, crashGuard, killAt, srv.logs.String())
	}
	backup.Wait()
	if kind == killInSnapshot {
		// Whether the save was cut short: its temporary file is still there.
		if m, _ := filepath.Glob(filepath.Join(l.data, catalog.SnapshotFileName+".tmp-*")); len(m) > 0 {
			l.stats.midSave++
		}
	}
	if kind == killInStartup {
		kind = killAfterAcks // its startup kill is counted; this one came after acknowledgements
	}
	l.afterKill(n, kind, srv)
	t.Logf("cycle %d (%s): killed at ack %d; %d acknowledged so far, %d in flight", n, kind, killAt, l.stats.acked, len(l.inFlight))
}

// finish restarts the server once more, checks the last kill's writes, stops it with SIGTERM
// and checks the store it leaves.
func (l *crashLoop) finish() {
	t := l.t
	srv := l.start("-1s", true)
	l.verify(-1, srv)
	if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-srv.done:
	case <-time.After(crashGuard):
		srv.kill()
		<-srv.done
		t.Fatalf("the server did not stop within %v of SIGTERM\n%s", crashGuard, srv.logs.String())
	}
	if srv.waitErr != nil {
		t.Fatalf("the server exited with %v after SIGTERM\n%s", srv.waitErr, srv.logs.String())
	}
	if srv.logs.races > 0 {
		t.Fatalf("the race detector reported in the server\n%s", srv.logs.String())
	}
	l.checkStore("after SIGTERM")
	if _, err := os.Stat(filepath.Join(l.data, catalog.SnapshotFileName)); err != nil {
		t.Errorf("no graph snapshot after a graceful stop: %v", err)
	}
}

// afterKill confirms the server died of the SIGKILL and checks the store it left.
func (l *crashLoop) afterKill(n int, kind crashKind, srv *crashServer) {
	t := l.t
	<-srv.done
	var exit *exec.ExitError
	if !errors.As(srv.waitErr, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("cycle %d (%s): the server ended with %v, not the SIGKILL\n%s", n, kind, srv.waitErr, srv.logs.String())
	}
	if srv.logs.races > 0 {
		t.Fatalf("cycle %d (%s): the race detector reported in the server\n%s", n, kind, srv.logs.String())
	}
	l.stats.kills++
	l.stats.kindKills[kind]++
	l.checkStore(fmt.Sprintf("cycle %d (%s) after SIGKILL", n, kind))
}

// checkStore runs `lookalike backup --data` on the stopped server's directory: it opens the
// store read-only, copies it and runs the full check on the copy.
func (l *crashLoop) checkStore(when string) {
	t := l.t
	out := filepath.Join(l.dir, "check.db")
	code, stdout, stderr := runCLI(t, nil, "backup", "--json", "--data", l.data, "--out", out)
	if code != exitOK {
		t.Fatalf("%s: lookalike backup --data failed (exit %d): %s", when, code, stderr)
	}
	var b backupJSON
	mustJSON(t, stdout, &b)
	if want := l.presentCount(); b.Items < want-len(l.inFlight) || b.Items > want+len(l.inFlight) {
		t.Errorf("%s: the store holds %d products, the client counts %d (%d in flight)", when, b.Items, want, len(l.inFlight))
	}
	// The store itself, not only its copy.
	s, err := store.Open(filepath.Join(l.data, catalog.StoreFileName), store.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("%s: open the store: %v", when, err)
	}
	defer s.Close()
	if err := s.Check(); err != nil {
		t.Fatalf("%s: store check: %v", when, err)
	}
}

func (l *crashLoop) presentCount() int {
	n := 0
	for _, w := range l.acked {
		if w != nil {
			n++
		}
	}
	return n
}

// crashServer is one server process.
type crashServer struct {
	cmd     *exec.Cmd
	logs    *logWatch
	done    chan struct{} // closed once the process has exited and waitErr is set
	waitErr error
	killed  atomic.Bool
	conn    *grpc.ClientConn
	client  pb.LookalikeClient
}

// start launches the server and, when ready is set, waits for it to log that it serves.
func (l *crashLoop) start(snapshotInterval string, ready bool) *crashServer {
	t := l.t
	t.Helper()
	args := []string{"serve", "--data", l.data, "--listen", "127.0.0.1:0", "--log-json",
		"--snapshot-interval", snapshotInterval, "--ef-construction", "64", "--shutdown-timeout", "20s"}
	argsJSON, _ := json.Marshal(args)
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashLoop$", "-test.count=1")
	cmd.Env = append(slices.Clone(l.env), crashLoopArgsEnv+"="+string(argsJSON))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	s := &crashServer{cmd: cmd, logs: newLogWatch(), done: make(chan struct{})}
	cmd.Stdout = s.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		s.logs.consume(stderr)
		s.waitErr = cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		s.kill()
		<-s.done
		if s.conn != nil {
			s.conn.Close()
		}
	})
	if !ready {
		return s
	}
	listening, err := s.waitLog(0, "listening")
	if err != nil {
		t.Fatalf("%v\n%s", err, s.logs.String())
	}
	if _, err := s.waitLog(0, "serving"); err != nil {
		t.Fatalf("%v\n%s", err, s.logs.String())
	}
	addr, _ := listening["grpc"].(string)
	s.conn, err = grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	s.client = pb.NewLookalikeClient(s.conn)
	return s
}

// kill sends SIGKILL once.
func (s *crashServer) kill() {
	if s.killed.CompareAndSwap(false, true) {
		_ = s.cmd.Process.Signal(syscall.SIGKILL)
	}
}

// waitLog waits for the first log line from index from on with the message msg.
func (s *crashServer) waitLog(from int, msg string) (map[string]any, error) {
	line, err := s.logs.wait(from, func(m map[string]any) bool { return m["msg"] == msg }, crashGuard)
	if err != nil {
		return nil, fmt.Errorf("waiting for the server to log %q: %w", msg, err)
	}
	return line, nil
}

// logWatch collects a child's JSON log lines (and any other output) without ever blocking it.
type logWatch struct {
	mu      sync.Mutex
	text    strings.Builder
	lines   []map[string]any
	changed chan struct{} // closed and replaced whenever a line arrives or the stream ends
	ended   bool
	races   int
}

func newLogWatch() *logWatch { return &logWatch{changed: make(chan struct{})} }

// Write takes the child's stdout.
func (w *logWatch) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.text.Write(p)
	return len(p), nil
}

// consume reads the child's stderr to its end.
func (w *logWatch) consume(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		var m map[string]any
		isJSON := json.Unmarshal([]byte(line), &m) == nil
		w.mu.Lock()
		w.text.WriteString(line + "\n")
		if isJSON {
			w.lines = append(w.lines, m)
		}
		if strings.Contains(line, "WARNING: DATA RACE") {
			w.races++
		}
		close(w.changed)
		w.changed = make(chan struct{})
		w.mu.Unlock()
	}
	_, _ = io.Copy(io.Discard, r)
	w.mu.Lock()
	w.ended = true
	close(w.changed)
	w.changed = make(chan struct{})
	w.mu.Unlock()
}

// wait returns the first line at index from or later that match accepts.
func (w *logWatch) wait(from int, match func(map[string]any) bool, guard time.Duration) (map[string]any, error) {
	deadline := time.After(guard)
	for i := from; ; {
		w.mu.Lock()
		for ; i < len(w.lines); i++ {
			if match(w.lines[i]) {
				line := w.lines[i]
				w.mu.Unlock()
				return line, nil
			}
		}
		ended, changed := w.ended, w.changed
		w.mu.Unlock()
		if ended {
			return nil, errors.New("the server exited first")
		}
		select {
		case <-changed:
		case <-deadline:
			return nil, fmt.Errorf("not within %v", guard)
		}
	}
}

func (w *logWatch) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.text.String()
}

// watchSnapshotTemp calls onCreate whenever a graph snapshot's temporary file appears in
// dir (inotify IN_CREATE), until stop is called.
func watchSnapshotTemp(t *testing.T, dir string, onCreate func()) (stop func()) {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatalf("inotify: %v", err)
	}
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE); err != nil {
		unix.Close(fd)
		t.Fatalf("inotify watch %s: %v", dir, err)
	}
	f := os.NewFile(uintptr(fd), "inotify") // non-blocking: Close ends a pending Read
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64<<10)
		for {
			n, err := f.Read(buf)
			if err != nil {
				return
			}
			for off := 0; off+unix.SizeofInotifyEvent <= n; {
				// struct inotify_event: wd, mask, cookie, len (uint32 each), then len bytes of name.
				nameLen := int(binary.NativeEndian.Uint32(buf[off+12:]))
				end := min(n, off+unix.SizeofInotifyEvent+nameLen)
				name := strings.TrimRight(string(buf[off+unix.SizeofInotifyEvent:end]), "\x00")
				if strings.HasPrefix(name, catalog.SnapshotFileName+".tmp-") {
					onCreate()
				}
				off = end
			}
		}
	}()
	return func() {
		f.Close()
		<-done
	}
}

// backupThenKill takes a whole hot backup while writes go on and checks it, then starts
// another and kills the server after its first or second piece.
func (l *crashLoop) backupThenKill(n int, srv *crashServer) {
	defer srv.kill()
	// Once the server is killed (by another check that failed), errors are expected.
	fail := func(format string, args ...any) {
		if !srv.killed.Load() {
			l.failf("cycle %d: "+format, append([]any{n}, args...)...)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), crashGuard)
	defer cancel()
	path := filepath.Join(l.dir, fmt.Sprintf("hot-%d.db", n))
	f, err := os.Create(path)
	if err != nil {
		fail("%v", err)
		return
	}
	defer os.Remove(path)
	stream, err := srv.client.Backup(ctx, &pb.BackupRequest{})
	var done *pb.BackupComplete
	for err == nil && done == nil {
		var msg *pb.BackupChunk
		if msg, err = stream.Recv(); err == nil {
			_, err = f.Write(msg.GetData())
			done = msg.GetComplete()
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		fail("hot backup: %v", err)
		return
	}
	s, err := store.Open(path, store.Options{ReadOnly: true})
	if err != nil {
		fail("hot backup does not open: %v", err)
		return
	}
	err = s.Check()
	count, seq := s.Count(), s.Seq()
	s.Close()
	if err != nil || uint64(count) != done.GetCount() || seq != done.GetStoreSeq() {
		fail("hot backup: check %v, %d products at seq %d, the server said %d at %d", err, count, seq, done.GetCount(), done.GetStoreSeq())
		return
	}
	l.mu.Lock()
	l.stats.backupsVerified++
	l.mu.Unlock()

	// The second backup dies with the server.
	stream, err = srv.client.Backup(ctx, &pb.BackupRequest{})
	if err != nil {
		fail("second hot backup: %v", err)
		return
	}
	pieces := 1 + l.randIntN(2)
	for range pieces {
		msg, err := stream.Recv()
		if err != nil {
			fail("second hot backup: %v", err)
			return
		}
		if msg.GetComplete() != nil {
			return // a store of one piece: killed right after it instead
		}
	}
	l.mu.Lock()
	l.stats.midBackup++
	l.mu.Unlock()
}

func (l *crashLoop) randIntN(n int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rng.IntN(n)
}

// failf records a failure from any goroutine (t.Errorf is safe there; t.Fatal is not).
func (l *crashLoop) failf(format string, args ...any) {
	l.t.Errorf(format, args...)
}

// write streams writes until the server dies (or the plan ends), recording every
// acknowledgement in the ledger before onAck sees its count.
func (l *crashLoop) write(n int, srv *crashServer, ops int, onAck func(acks int)) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := srv.client.UpsertStream(ctx)
	if err != nil {
		l.t.Fatalf("cycle %d: UpsertStream: %v", n, err)
	}
	dead := make(chan struct{}) // closed when the receiver stops
	window := make(chan struct{}, crashWindow)
	sent := make(chan *crashOp, ops)
	acks := 0
	ack := func() int { // under l.mu
		acks++
		l.stats.acked++
		return acks
	}
	unexpected := func(what string, err error) {
		if !srv.killed.Load() {
			l.failf("cycle %d: %s before the kill: %v", n, what, err)
			srv.kill()
		}
	}
	go func() {
		defer close(dead)
		for {
			res, err := stream.Recv()
			if err != nil {
				if !errors.Is(err, io.EOF) {
					unexpected("UpsertStream.Recv", err)
				}
				return
			}
			op := <-sent
			<-window
			l.mu.Lock()
			err = l.acknowledge(op, res)
			count := ack()
			l.mu.Unlock()
			if err != nil {
				l.failf("cycle %d: %v", n, err)
				srv.kill()
				return
			}
			onAck(count)
		}
	}()
	var pos uint64
	realLeft := crashRealPerCycle
sending:
	for range ops {
		l.mu.Lock()
		op := l.nextOp(&realLeft)
		l.inFlight[op.id] = op
		l.mu.Unlock()
		if op.del {
			_, err := srv.client.Delete(ctx, &pb.DeleteRequest{Id: op.id})
			if err != nil {
				unexpected("Delete "+op.id, err)
				break
			}
			l.mu.Lock()
			delete(l.inFlight, op.id)
			l.acked[op.id] = nil
			l.stats.deleted++
			l.stats.ackedThisCycle[op.id]++
			count := ack()
			l.mu.Unlock()
			onAck(count)
			continue
		}
		select {
		case window <- struct{}{}:
		case <-dead:
			break sending
		}
		op.pos = pos
		pos++
		sent <- op
		if err := stream.Send(op.req); err != nil {
			if !errors.Is(err, io.EOF) { // io.EOF: the stream broke; Recv says why
				unexpected("UpsertStream.Send", err)
			}
			break
		}
	}
	_ = stream.CloseSend()
	<-dead
}

// acknowledge records an upsert's result as the product's state, after checking it against
// what was sent. Called under l.mu.
func (l *crashLoop) acknowledge(op *crashOp, res *pb.UpsertResult) error {
	if res.GetId() != op.id || res.GetIndex() != op.pos {
		return fmt.Errorf("result %d for %q answers request %d for %q", res.GetIndex(), res.GetId(), op.pos, op.id)
	}
	if res.GetOutcome() != op.wantOutcome {
		return fmt.Errorf("upsert of %q: outcome %v (%s), want %v", op.id, res.GetOutcome(), res.GetErrorMessage(), op.wantOutcome)
	}
	got := res.GetPhotos()
	if len(got) != len(op.want.photos) {
		return fmt.Errorf("upsert of %q acknowledged %d photos, sent %d", op.id, len(got), len(op.want.photos))
	}
	want := op.want.clone()
	for i, ph := range got {
		if err := photoMatches(&want.photos[i], ph); err != nil {
			return fmt.Errorf("upsert of %q acknowledged: %w", op.id, err)
		}
		want.photos[i].meta = proto.CloneOf(ph)
	}
	delete(l.inFlight, op.id)
	l.acked[op.id] = want
	l.stats.ackedThisCycle[op.id]++
	switch res.GetOutcome() {
	case pb.Outcome_OUTCOME_CREATED:
		l.stats.created++
	case pb.Outcome_OUTCOME_UPDATED:
		l.stats.updated++
	case pb.Outcome_OUTCOME_UNCHANGED:
		l.stats.unchanged++
	}
	return nil
}

// photoMatches compares the metadata of a photo the server reports (vector ignored) with
// what the client sent.
func photoMatches(w *wantPhoto, got *pb.Photo) error {
	sha, kept, keptBytes, phash := "", false, 0, ""
	if w.real != nil {
		sha, kept, keptBytes, phash = w.real.sha256, true, len(w.real.kept), w.real.phash
	}
	if got.GetId() != w.id || got.GetImageUrl() != w.url || got.GetImageSha256() != sha || got.GetKept() != kept ||
		int(got.GetKeptBytes()) != keptBytes || got.GetPhash() != phash {
		return fmt.Errorf("photo %q: got id %q url %q sha256 %q kept %v (%d bytes) phash %q, want url %q sha256 %q kept %v (%d bytes) phash %q",
			w.id, got.GetId(), got.GetImageUrl(), got.GetImageSha256(), got.GetKept(), got.GetKeptBytes(), got.GetPhash(),
			w.url, sha, kept, keptBytes, phash)
	}
	return nil
}

// nextOp plans a write on a product with nothing in flight. Called under l.mu.
func (l *crashLoop) nextOp(realLeft *int) *crashOp {
	var id string
	for {
		id = l.ids[l.rng.IntN(len(l.ids))]
		if l.inFlight[id] == nil {
			break
		}
	}
	cur := l.acked[id]
	l.serial++
	op := &crashOp{id: id, wantOutcome: pb.Outcome_OUTCOME_UPDATED}
	next := &wantProduct{category: fmt.Sprint("cat-", l.rng.IntN(4)), title: fmt.Sprint("title ", l.serial),
		attrs: map[string]string{"serial": strconv.Itoa(l.serial), "colour": fmt.Sprint("c", l.rng.IntN(3))}}
	var keepOthers bool
	var remove []string
	r := l.rng.Float64()
	switch {
	case cur == nil:
		op.wantOutcome = pb.Outcome_OUTCOME_CREATED
		for range 1 + l.rng.IntN(4) {
			next.photos = append(next.photos, l.newPhoto(realLeft, next))
		}
	case r < 0.2:
		op.del = true
		return op
	case r < 0.35: // the same again
		op.wantOutcome = pb.Outcome_OUTCOME_UNCHANGED
		next = cur.clone()
	case r < 0.5: // a partial update: add one photo, maybe remove one
		keepOthers = true
		if len(cur.photos) > 1 && l.rng.IntN(2) == 0 {
			remove = append(remove, cur.photos[l.rng.IntN(len(cur.photos))].id)
		}
		for _, ph := range cur.photos {
			if !slices.Contains(remove, ph.id) {
				next.photos = append(next.photos, ph)
			}
		}
		if len(next.photos) < crashMaxPhotos {
			next.photos = append(next.photos, l.newPhoto(realLeft, next))
		}
	case r < 0.6: // metadata only
		next.photos = slices.Clone(cur.photos)
	default: // a new photo set: some kept (by id or resent), one changed, maybe one more
		for _, ph := range cur.photos {
			if l.rng.IntN(4) > 0 {
				next.photos = append(next.photos, ph)
			}
		}
		if len(next.photos) > 0 && l.rng.IntN(2) == 0 {
			i := l.rng.IntN(len(next.photos))
			next.photos[i] = l.changedPhoto(next.photos[i], realLeft)
		}
		if len(next.photos) == 0 || (len(next.photos) < crashMaxPhotos && l.rng.IntN(2) == 0) {
			next.photos = append(next.photos, l.newPhoto(realLeft, next))
		}
	}
	req := &pb.UpsertRequest{Id: id, Category: next.category, Title: next.title, Attributes: next.attrs,
		KeepOtherPhotos: keepOthers, RemovePhotos: remove}
	for _, ph := range next.photos {
		if keepOthers && cur != nil && slices.ContainsFunc(cur.photos, func(c wantPhoto) bool { return c.id == ph.id && c.meta == ph.meta }) {
			continue // kept as stored without being listed
		}
		in := &pb.PhotoInput{Id: ph.id, ImageUrl: ph.url}
		switch {
		case ph.meta != nil && l.rng.IntN(2) == 0:
			// A stored photo named without content is kept as it is.
		case ph.real != nil:
			in.Content = &pb.PhotoInput_Image{Image: ph.real.bytes}
		default:
			in.Content = &pb.PhotoInput_Vector{Vector: &pb.Vector{Values: ph.raw}}
		}
		req.Photos = append(req.Photos, in)
	}
	op.req, op.want = req, next
	return op
}

// newPhoto is a photo new to the product: a real photo now and then, else a ready vector.
func (l *crashLoop) newPhoto(realLeft *int, p *wantProduct) wantPhoto {
	l.serial++
	if *realLeft > 0 && l.rng.IntN(10) == 0 {
		rp := l.real[l.rng.IntN(len(l.real))]
		if !slices.ContainsFunc(p.photos, func(w wantPhoto) bool { return w.real == rp }) {
			*realLeft--
			return wantPhoto{id: fmt.Sprint("real-", l.serial), url: rp.path, real: rp}
		}
	}
	return l.vectorPhoto(fmt.Sprint("v-", l.serial))
}

// changedPhoto is the photo with new content under the same id.
func (l *crashLoop) changedPhoto(ph wantPhoto, realLeft *int) wantPhoto {
	if ph.real != nil {
		for _, rp := range l.real {
			if rp != ph.real && *realLeft > 0 {
				*realLeft--
				return wantPhoto{id: ph.id, url: rp.path, real: rp}
			}
		}
	}
	return l.vectorPhoto(ph.id)
}

// vectorPhoto is a ready vector of random direction and length.
func (l *crashLoop) vectorPhoto(id string) wantPhoto {
	raw := make([]float32, l.dim)
	scale := 0.1 + 4*l.rng.Float64()
	for i := range raw {
		raw[i] = float32(l.rng.NormFloat64() * scale)
	}
	return wantPhoto{id: id, url: "vec://" + id, raw: raw, vector: l2Normalise(raw)}
}

// l2Normalise is the server's normalisation of a client vector, step for step: the sum of
// squares in float64, each component times its inverse square root, rounded to float32.
func l2Normalise(v []float32) []float32 {
	var sum float64
	for _, x := range v {
		sum += float64(x) * float64(x)
	}
	inv := 1 / math.Sqrt(sum)
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(float64(x) * inv)
	}
	return out
}

// verify checks every product id against the ledger on a freshly (re)started server: an
// acknowledged state must be there exactly; a write in flight at the kill may be there
// instead, wholly; an id never written or acknowledged deleted must be unknown.
func (l *crashLoop) verify(n int, srv *crashServer) {
	t := l.t
	ctx, cancel := context.WithTimeout(context.Background(), crashGuard)
	defer cancel()
	present, photos, kept := 0, 0, 0
	var sample []*wantProduct
	for _, id := range l.ids {
		resp, err := srv.client.Get(ctx, &pb.GetRequest{Id: id, IncludeVector: true})
		var got *pb.Product
		switch {
		case status.Code(err) == codes.NotFound:
		case err != nil:
			t.Fatalf("cycle %d: Get %s: %v", n, id, err)
		default:
			got = resp.GetProduct()
		}
		want, op := l.acked[id], l.inFlight[id]
		errAcked := l.matches(ctx, srv, id, want, got, true)
		switch {
		case errAcked == nil:
			if op != nil {
				l.stats.inFlight++
				if op.want.equalState(want) && !op.del {
					l.stats.inFlightApplied++ // an unchanged write: both states are one
				}
			}
		case op != nil && l.matches(ctx, srv, id, op.want, got, false) == nil:
			l.stats.inFlight++
			l.stats.inFlightApplied++
			want = op.want
		default:
			l.stats.lost++
			t.Errorf("cycle %d: %s: %v", n, id, errAcked)
			continue
		}
		delete(l.inFlight, id)
		if got == nil {
			delete(l.acked, id)
			continue
		}
		// From now on the server's own metadata and vectors are what must last.
		want = want.clone()
		for i, ph := range got.GetPhotos() {
			want.photos[i].meta = withoutVector(ph)
			if want.photos[i].real != nil {
				want.photos[i].vector = ph.GetVector()
				kept++
			}
		}
		l.acked[id] = want
		l.stats.productsChecked++
		if l.stats.ackedThisCycle[id] > 0 {
			l.stats.latestChecked++
			l.stats.superseded += l.stats.ackedThisCycle[id] - 1
		}
		present++
		photos += len(want.photos)
		if len(sample) < 3 && want.photos[0].real == nil {
			sample = append(sample, want)
		}
	}
	for id, c := range l.stats.ackedThisCycle {
		if l.acked[id] == nil && c > 0 { // acknowledged deletes (or writes before one), checked as NotFound
			l.stats.latestChecked++
			l.stats.superseded += c - 1
		}
	}
	clear(l.stats.ackedThisCycle)
	if len(l.inFlight) != 0 {
		t.Fatalf("cycle %d: %d writes in flight on products outside the pool", n, len(l.inFlight))
	}

	// A restart with many changes behind its snapshot serves while its graph catches up in
	// the background: wait for that (the checks above were served meanwhile).
	var st *pb.StatsResponse
	for deadline := time.Now().Add(crashGuard); ; {
		var err error
		if st, err = srv.client.Stats(ctx, &pb.StatsRequest{}); err != nil {
			t.Fatalf("cycle %d: Stats: %v", n, err)
		}
		if st.GetIndex().GetCatchingUp() == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cycle %d: the graph still catches up %d photos after %v", n, st.GetIndex().GetCatchingUp(), crashGuard)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st.GetCount() != uint64(present) || st.GetPhotos() != uint64(photos) || st.GetKeptPhotos() != uint64(kept) || st.GetIndex().GetSize() != uint64(photos) {
		t.Errorf("cycle %d: Stats says %d products, %d photos (%d kept), graph %d; the client counts %d, %d (%d kept)",
			n, st.GetCount(), st.GetPhotos(), st.GetKeptPhotos(), st.GetIndex().GetSize(), present, photos, kept)
	}
	// The graph was caught up with the store: a stored vector finds its own product.
	for _, w := range sample {
		res, err := srv.client.SearchByVector(ctx, &pb.SearchByVectorRequest{Vector: w.photos[0].vector, K: 3, Ef: 2000})
		if err != nil {
			t.Fatalf("cycle %d: SearchByVector: %v", n, err)
		}
		if r := res.GetResults(); len(r) == 0 || r[0].GetPhotoId() != w.photos[0].id || r[0].GetScore() < 0.9999 {
			t.Errorf("cycle %d: searching a stored vector of photo %s did not find it first: %v", n, w.photos[0].id, r)
		}
	}
}

// equalState says whether two wanted states describe the same stored product.
func (w *wantProduct) equalState(o *wantProduct) bool {
	if w == nil || o == nil {
		return w == o
	}
	if w.category != o.category || w.title != o.title || !maps.Equal(w.attrs, o.attrs) || len(w.photos) != len(o.photos) {
		return false
	}
	for i := range w.photos {
		a, b := w.photos[i], o.photos[i]
		if a.id != b.id || a.url != b.url || a.real != b.real || !slices.Equal(a.raw, b.raw) {
			return false
		}
	}
	return true
}

// matches compares a product read back (nil: NotFound) with a wanted state (nil: absent).
// exactMeta demands every photo's metadata equal to what the server acknowledged.
func (l *crashLoop) matches(ctx context.Context, srv *crashServer, id string, want *wantProduct, got *pb.Product, exactMeta bool) error {
	switch {
	case want == nil && got == nil:
		return nil
	case want == nil:
		return fmt.Errorf("stored, but the client's last acknowledged write was a delete (or there was none)")
	case got == nil:
		return fmt.Errorf("acknowledged write lost: NotFound, want %d photos (title %q)", len(want.photos), want.title)
	}
	if got.GetId() != id || got.GetCategory() != want.category || got.GetTitle() != want.title || !maps.Equal(got.GetAttributes(), want.attrs) {
		return fmt.Errorf("metadata %q %q %v, want %q %q %v", got.GetCategory(), got.GetTitle(), got.GetAttributes(), want.category, want.title, want.attrs)
	}
	if len(got.GetPhotos()) != len(want.photos) {
		return fmt.Errorf("%d photos, want %d", len(got.GetPhotos()), len(want.photos))
	}
	for i, ph := range got.GetPhotos() {
		w := &want.photos[i]
		if exactMeta && w.meta != nil {
			if !proto.Equal(withoutVector(ph), w.meta) {
				return fmt.Errorf("photo %d: %v, acknowledged %v", i, withoutVector(ph), w.meta)
			}
		} else if err := photoMatches(w, ph); err != nil {
			return err
		}
		vec := ph.GetVector()
		switch {
		case w.vector != nil:
			if !sameBits(vec, w.vector) {
				return fmt.Errorf("photo %q holds another vector than the one sent", w.id)
			}
		case w.real != nil:
			if c := cosine(vec, w.real.vector); len(vec) != l.dim || c < 0.999 {
				return fmt.Errorf("real photo %q: vector of %d, cosine %.5f to the model's", w.id, len(vec), c)
			}
		}
		if i == 0 && (!sameBits(got.GetVector(), vec) || got.GetImageUrl() != ph.GetImageUrl() || got.GetImageSha256() != ph.GetImageSha256()) {
			return fmt.Errorf("the product's vector, URL or hash is not its first photo's")
		}
		pr, err := srv.client.GetPhoto(ctx, &pb.GetPhotoRequest{Id: id, PhotoId: w.id})
		switch {
		case w.real == nil && status.Code(err) != codes.NotFound:
			return fmt.Errorf("GetPhoto of vector photo %q: %v, want NotFound", w.id, err)
		case w.real == nil:
		case err != nil:
			return fmt.Errorf("GetPhoto %q: %w", w.id, err)
		case string(pr.GetImage()) != string(w.real.kept):
			return fmt.Errorf("GetPhoto %q: %d bytes differing from the kept copy of %s (%d bytes)", w.id, len(pr.GetImage()), w.real.name, len(w.real.kept))
		default:
			l.stats.keptCompared++
		}
	}
	return nil
}

func withoutVector(ph *pb.Photo) *pb.Photo {
	c := proto.CloneOf(ph)
	c.Vector = nil
	return c
}

func sameBits(a, b []float32) bool {
	return slices.EqualFunc(a, b, func(x, y float32) bool { return math.Float32bits(x) == math.Float32bits(y) })
}

func cosine(a, b []float32) float64 {
	if len(a) != len(b) {
		return 0
	}
	var dot, na, nb float64
	for i := range a {
		dot += float64(a[i]) * float64(b[i])
		na += float64(a[i]) * float64(a[i])
		nb += float64(b[i]) * float64(b[i])
	}
	return dot / math.Sqrt(na*nb)
}
