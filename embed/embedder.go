package embed

import (
	"context"
	"fmt"
	"image"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	ort "github.com/yalue/onnxruntime_go"
)

// Observer receives batching figures, for example to feed metrics. Its methods are called
// from the batching goroutines and must not block.
type Observer interface {
	// ObserveBatch reports one model run: how many images it held and how long it took.
	ObserveBatch(size int, inference time.Duration)
	// ObserveQueue reports the number of requests waiting after one was queued.
	ObserveQueue(depth int)
}

// Config configures Open. Zero fields take the documented defaults.
type Config struct {
	// ModelPath is the .onnx file; default FindModel().
	ModelPath string
	// SpecPath is the model's spec JSON; default "<model>.onnx.json" or "<model>.json" beside
	// the model, else DefaultSpec for the shared MobileNetV2 embedding models.
	SpecPath string
	// Spec, when set, is used instead of any spec file.
	Spec *Spec
	// RuntimePath is libonnxruntime.so; default FindRuntime().
	RuntimePath string
	// Threads is the intra-op thread count of each session. Sessions is the number of model
	// sessions run concurrently. Left at zero, they share the CPUs out between them: one
	// thread per session and one session per CPU; with only one of them set, the other is
	// NumCPU divided by it (at least 1).
	//
	// One single-threaded session per core beats one session using every core because the
	// decoders run beside the model: end to end on the clothing photos (embedbench, 2 cores,
	// 2026-11-28, several runs), 1 thread x 2 sessions embedded 610-700 img/s against 530-570
	// for 2 threads x 1 session, and raw inference on ready tensors is also faster that way
	// (1,020-1,140 img/s at batch 1 against 610-730: intra-op threads wait on each other at
	// every layer of a model this small). The price is latency when callers are few: one
	// caller embedding one photo after another gets 335-370 img/s (about 2.8 ms each) against
	// 400-415 (2.5 ms) with 2 threads in one session; set Threads to NumCPU for that.
	Threads int
	// Sessions: see Threads.
	Sessions int
	// MaxBatch bounds how many images one model run holds; default 4. Batches help this
	// model little on 2 cores (raw, one thread a session: batch 4 within 2% of batch 1,
	// batch 16 10-20% slower; end to end, batch 16 was 590 img/s against 610-700), so 4
	// only lets a backlog go through in fewer runs.
	MaxBatch int
	// MaxWait bounds how long the first request of a batch waits for company; default none
	// (0 or negative: run whatever is queued at once). Any wait is paid in full by a lone
	// caller: with 2ms, one caller embedding photos one after another got 195-215 img/s
	// instead of 335-415, and it did not raise throughput under load (embedbench, as above).
	MaxWait time.Duration
	// QueueSize bounds the requests waiting for the model; beyond it Embed fails with
	// ErrOverloaded. Default 256.
	QueueSize int
	// DecodeWorkers bounds how many images are decoded and preprocessed at once; default
	// the number of CPUs. With the sessions above, 1, 2 and 3 workers on 2 cores measured
	// within the machine's noise of each other (585-705 img/s across rounds); NumCPU lets
	// every core decode when the model is idle.
	DecodeWorkers int
	// Limits bound accepted images; zero fields take DefaultLimits.
	Limits Limits
	// PureGoDecode decodes JPEGs with image/jpeg at full size instead of libjpeg-turbo.
	PureGoDecode bool
	// Spin lets ONNX Runtime's worker threads spin while waiting for work. It lowers batch
	// latency a little but burns cores the decoders need, so it is off by default.
	Spin bool
	// Observer, if set, receives batch sizes and queue depths.
	Observer Observer
	// Logger receives the load summary; default slog.Default().
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	ncpu := runtime.NumCPU()
	switch {
	case c.Threads <= 0 && c.Sessions <= 0:
		c.Threads, c.Sessions = 1, ncpu
	case c.Threads <= 0:
		c.Threads = max(1, ncpu/c.Sessions)
	case c.Sessions <= 0:
		c.Sessions = max(1, ncpu/c.Threads)
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = 4
	}
	if c.MaxWait < 0 {
		c.MaxWait = 0
	}
	if c.QueueSize <= 0 {
		c.QueueSize = 256
	}
	if c.DecodeWorkers <= 0 {
		c.DecodeWorkers = ncpu
	}
	c.Limits = c.Limits.withDefaults()
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Embedder turns image bytes into L2-normalised vectors with one model. It is safe for
// concurrent use; concurrent calls are coalesced into batches.
type Embedder struct {
	cfg       Config
	spec      Spec
	modelPath string
	specPath  string
	identity  string
	inputs    []TensorInfo
	outputs   []TensorInfo
	post      []postStep // Spec.Post, loaded
	dim       int        // the length of the vectors returned: the last post step's, or Spec.Dim

	queue    chan *request
	sessions chan *session // idle sessions
	all      []*session
	decodes  chan struct{} // decode slots
	workers  sync.Pool     // *prepWorker
	batchers sync.WaitGroup

	mu     sync.RWMutex // guards closed and sends on queue
	closed bool

	// gather, when set, is called by a batcher that holds the first request of a batch,
	// before it takes what else is queued. It exists for tests: blocking in it until the
	// requests they sent are queued makes coalescing certain instead of a matter of timing.
	gather func()
}

type request struct {
	ctx   context.Context
	input []float32
	// size is the side of a square view's input, 0 for the spec's Width x Height (views.go).
	size int
	out  []float32
	err  error
	done chan struct{}
}

// prepWorker is one goroutine's preprocessing state: canvases and a tensor slot.
type prepWorker struct {
	prep   *Preprocessor
	tensor []float32
	// views preprocess the spec's views (views.go): prep and tensor when it has none.
	views []viewPrep
	// kept and keptUp are the kept photo's canvases, in the stored frame and turned
	// upright; made on first use.
	kept, keptUp *image.RGBA
}

type session struct {
	s    *ort.DynamicAdvancedSession
	in   []float32
	out  []float32
	inT  []*ort.Tensor[float32] // by batch size - 1, made on first use
	outT []*ort.Tensor[float32]
}

// Open loads the model, checks its spec against the model's real inputs and outputs, and
// starts the session pool. Close releases it.
func Open(ctx context.Context, cfg Config) (*Embedder, error) {
	return open(ctx, cfg, nil)
}

// open is Open with the batchers' gather hook (see Embedder.gather), which must be in place
// before they start.
func open(ctx context.Context, cfg Config, gather func()) (*Embedder, error) {
	cfg = cfg.withDefaults()
	var err error
	if cfg.ModelPath == "" {
		if cfg.ModelPath, err = FindModel(); err != nil {
			return nil, err
		}
	}
	if cfg.RuntimePath == "" {
		if cfg.RuntimePath, err = FindRuntime(); err != nil {
			return nil, err
		}
	}
	model, err := os.ReadFile(cfg.ModelPath)
	if err != nil {
		return nil, fmt.Errorf("embed: read model (set %s or the model flag): %w", EnvModel, err)
	}
	var spec Spec
	specPath := ""
	if cfg.Spec != nil {
		spec = *cfg.Spec
		if err := spec.Validate(); err != nil {
			return nil, err
		}
	} else if spec, specPath, err = ResolveSpec(cfg.ModelPath, cfg.SpecPath); err != nil {
		return nil, err
	}
	post, dim, err := loadPost(spec, filepath.Dir(specPath), func(s Spec) string { return Identity(cfg.ModelPath, model, s) })
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("embed: open: %w", err)
	}
	if err := acquireRuntime(cfg.RuntimePath); err != nil {
		return nil, err
	}
	e := &Embedder{
		cfg:       cfg,
		spec:      spec,
		modelPath: cfg.ModelPath,
		specPath:  specPath,
		identity:  Identity(cfg.ModelPath, model, spec),
		post:      post,
		dim:       dim,
		gather:    gather,
	}
	if err := e.load(model); err != nil {
		e.destroySessions()
		if rerr := releaseRuntime(); rerr != nil {
			cfg.Logger.Warn("embed: release runtime after failed open", "err", rerr)
		}
		return nil, err
	}
	e.queue = make(chan *request, cfg.QueueSize)
	e.decodes = make(chan struct{}, cfg.DecodeWorkers)
	e.workers.New = func() any {
		p, _ := NewPreprocessor(e.spec) // the spec was validated above
		t := make([]float32, e.spec.TensorLen())
		return &prepWorker{prep: p, tensor: t, views: newViewPreps(e.spec, p, t)}
	}
	for range cfg.Sessions {
		e.batchers.Add(1)
		go e.batchLoop()
	}
	cfg.Logger.Info("embed: model loaded", "model", cfg.ModelPath, "identity", e.identity,
		"spec", specPath, "dim", e.dim, "sessions", cfg.Sessions, "threads", cfg.Threads,
		"max_batch", e.cfg.MaxBatch, "max_wait", cfg.MaxWait, "runtime", ort.GetVersion())
	return e, nil
}

// load checks the spec against the model and creates the sessions.
func (e *Embedder) load(model []byte) error {
	model, err := e.spec.sessionModel(model)
	if err != nil {
		return fmt.Errorf("model %s: %w", e.modelPath, err)
	}
	ins, outs, err := ort.GetInputOutputInfoWithONNXData(model)
	if err != nil {
		return fmt.Errorf("embed: load model %s: %w", e.modelPath, err)
	}
	e.inputs, e.outputs = tensorInfos(ins), tensorInfos(outs)
	if err := e.spec.CheckModel(e.inputs, e.outputs); err != nil {
		return fmt.Errorf("model %s: %w", e.modelPath, err)
	}
	for _, in := range e.inputs {
		if in.Name == e.spec.Input && len(in.Shape) > 0 && in.Shape[0] == 1 && e.cfg.MaxBatch > 1 {
			e.cfg.Logger.Info("embed: the model takes one image per run; batching off", "model", e.modelPath)
			e.cfg.MaxBatch = 1
		}
	}
	opts, err := ort.NewSessionOptions()
	if err != nil {
		return fmt.Errorf("embed: session options: %w", err)
	}
	defer opts.Destroy()
	if err := opts.SetIntraOpNumThreads(e.cfg.Threads); err != nil {
		return fmt.Errorf("embed: set intra-op threads: %w", err)
	}
	if err := opts.SetInterOpNumThreads(1); err != nil {
		return fmt.Errorf("embed: set inter-op threads: %w", err)
	}
	if !e.cfg.Spin {
		for _, key := range []string{"session.intra_op.allow_spinning", "session.inter_op.allow_spinning"} {
			if err := opts.AddSessionConfigEntry(key, "0"); err != nil {
				return fmt.Errorf("embed: session option %s: %w", key, err)
			}
		}
	}
	e.sessions = make(chan *session, e.cfg.Sessions)
	for range e.cfg.Sessions {
		s, err := ort.NewDynamicAdvancedSessionWithONNXData(model, []string{e.spec.Input}, []string{e.spec.fetchName()}, opts)
		if err != nil {
			return fmt.Errorf("embed: create session for %s: %w", e.modelPath, err)
		}
		sess := &session{
			s:    s,
			in:   make([]float32, e.cfg.MaxBatch*e.spec.maxTensorLen()),
			out:  make([]float32, e.cfg.MaxBatch*e.spec.Dim),
			inT:  make([]*ort.Tensor[float32], e.cfg.MaxBatch),
			outT: make([]*ort.Tensor[float32], e.cfg.MaxBatch),
		}
		e.all = append(e.all, sess)
		e.sessions <- sess
	}
	return nil
}

func tensorInfos(infos []ort.InputOutputInfo) []TensorInfo {
	out := make([]TensorInfo, 0, len(infos))
	for _, in := range infos {
		t := TensorInfo{Name: in.Name, Shape: append([]int64(nil), in.Dimensions...)}
		if in.OrtValueType != ort.ONNXTypeTensor {
			t.Type = strings.ToLower(strings.TrimPrefix(in.OrtValueType.String(), "ONNX_TYPE_"))
		} else {
			t.Type = strings.ToLower(strings.TrimPrefix(in.DataType.String(), "ONNX_TENSOR_ELEMENT_DATA_TYPE_"))
			switch t.Type {
			case "float":
				t.Type = "float32"
			case "double":
				t.Type = "float64"
			}
		}
		out = append(out, t)
	}
	return out
}

// Dim is the length of the vectors.
func (e *Embedder) Dim() int { return e.dim }

// Identity names the model and spec; see the package function Identity.
func (e *Embedder) Identity() string { return e.identity }

// Spec is the spec in use.
func (e *Embedder) Spec() Spec { return e.spec }

// ModelPath is the .onnx file in use.
func (e *Embedder) ModelPath() string { return e.modelPath }

// SpecPath is the spec file in use, "" for the built-in or a Config.Spec.
func (e *Embedder) SpecPath() string { return e.specPath }

// Inputs describes the model's inputs as the runtime reports them.
func (e *Embedder) Inputs() []TensorInfo { return append([]TensorInfo(nil), e.inputs...) }

// Outputs describes the model's outputs as the runtime reports them.
func (e *Embedder) Outputs() []TensorInfo { return append([]TensorInfo(nil), e.outputs...) }

// Config is the configuration in use, with every default filled in (MaxBatch 1 when the
// model takes one image per run).
func (e *Embedder) Config() Config { return e.cfg }

// MaxBatch is the largest number of images one model run holds.
func (e *Embedder) MaxBatch() int { return e.cfg.MaxBatch }

// DecodeOptions are the options Embed decodes with.
func (e *Embedder) DecodeOptions() DecodeOptions {
	minShort := max(e.spec.Width, e.spec.Height)
	if e.spec.Resize.Policy == ResizeShorterThenCrop {
		minShort = e.spec.Resize.ShorterSide
	}
	minShort = max(minShort, e.spec.maxShorterSide())
	return DecodeOptions{Limits: e.cfg.Limits, MinShortSide: minShort, PureGo: e.cfg.PureGoDecode}
}

// Embed decodes one image and returns its L2-normalised vector. Decoding runs in the
// caller's goroutine (at most DecodeWorkers at once); the model run is shared with other
// concurrent calls.
func (e *Embedder) Embed(ctx context.Context, image []byte) ([]float32, error) {
	a, err := e.analyze(ctx, image, derive{})
	return a.Vector, err
}

// EmbedTensor returns the vector of one preprocessed input (Spec.TensorLen() values, as a
// Preprocessor writes them), through the same batching as Embed.
func (e *Embedder) EmbedTensor(ctx context.Context, tensor []float32) ([]float32, error) {
	if len(tensor) != e.spec.TensorLen() {
		return nil, fmt.Errorf("embed: tensor holds %d values, want %d", len(tensor), e.spec.TensorLen())
	}
	if len(e.spec.Views) > 0 {
		return nil, errViewsNeedPhoto
	}
	vec, _, err := e.infer(ctx, tensor)
	if err != nil {
		return nil, err
	}
	return e.applyPost(vec)
}

// EmbedBatch embeds many images, decoding them in parallel while the model runs. It
// returns a vector or an error for each image, by index.
func (e *Embedder) EmbedBatch(ctx context.Context, images [][]byte) ([][]float32, []error) {
	vecs := make([][]float32, len(images))
	errs := make([]error, len(images))
	// Enough callers in flight to fill a batch while the next one decodes; the decode slots
	// keep the CPU work to DecodeWorkers at a time.
	n := min(len(images), e.cfg.MaxBatch*e.cfg.Sessions+e.cfg.DecodeWorkers, e.cfg.QueueSize)
	next := make(chan int)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				vecs[i], errs[i] = e.Embed(ctx, images[i])
			}
		}()
	}
	for i := range images {
		next <- i
	}
	close(next)
	wg.Wait()
	return vecs, errs
}

// infer queues one tensor for the batcher and waits for its vector. inFlight reports that
// the request was abandoned while a batch may still read its tensor.
func (e *Embedder) infer(ctx context.Context, tensor []float32) (vec []float32, inFlight bool, err error) {
	req, err := e.submit(ctx, tensor)
	if err != nil {
		return nil, false, err
	}
	return e.await(ctx, req)
}

// submit queues one tensor for the batcher; the batch may read it until await returns with
// inFlight false.
func (e *Embedder) submit(ctx context.Context, tensor []float32) (*request, error) {
	req := &request{ctx: ctx, input: tensor, done: make(chan struct{})}
	return req, e.enqueue(req)
}

// enqueue queues a request for the batcher.
func (e *Embedder) enqueue(req *request) error {
	e.mu.RLock()
	if e.closed {
		e.mu.RUnlock()
		return ErrClosed
	}
	select {
	case e.queue <- req:
	default:
		e.mu.RUnlock()
		return fmt.Errorf("%w (%d waiting)", ErrOverloaded, cap(e.queue))
	}
	depth := len(e.queue)
	e.mu.RUnlock()
	if e.cfg.Observer != nil {
		e.cfg.Observer.ObserveQueue(depth)
	}
	return nil
}

// await waits for a submitted request's vector. inFlight reports that the request was
// abandoned while a batch may still read its tensor.
func (e *Embedder) await(ctx context.Context, req *request) (vec []float32, inFlight bool, err error) {
	select {
	case <-req.done:
		return req.out, false, req.err
	case <-ctx.Done():
		return nil, true, fmt.Errorf("embed: %w", ctx.Err())
	}
}

// batchLoop gathers queued requests into batches and runs them, until the queue closes.
func (e *Embedder) batchLoop() {
	defer e.batchers.Done()
	batch := make([]*request, 0, e.cfg.MaxBatch)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for first := range e.queue {
		batch = append(batch[:0], first)
		if e.gather != nil {
			e.gather()
		}
		queueOpen := true
	drain: // take whatever is already waiting
		for queueOpen && len(batch) < e.cfg.MaxBatch {
			select {
			case r, ok := <-e.queue:
				if !ok {
					queueOpen = false
					break drain
				}
				batch = append(batch, r)
			default:
				break drain
			}
		}
		if queueOpen && len(batch) < e.cfg.MaxBatch && e.cfg.MaxWait > 0 {
			timer.Reset(e.cfg.MaxWait)
		wait:
			for len(batch) < e.cfg.MaxBatch {
				select {
				case r, ok := <-e.queue:
					if !ok {
						break wait
					}
					batch = append(batch, r)
				case <-timer.C:
					break wait
				}
			}
			timer.Stop()
		}
		e.runRequests(batch)
		clear(batch)
	}
}

// runRequests runs the live requests of a batch and hands each its vector or error.
func (e *Embedder) runRequests(batch []*request) {
	live := batch[:0:0]
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.err = fmt.Errorf("embed: %w", err)
			close(r.done)
			continue
		}
		live = append(live, r)
	}
	if len(live) == 0 {
		return
	}
	if e.spec.ownPipeline() {
		e.runViews(live)
		return
	}
	sess := <-e.sessions
	L := e.spec.TensorLen()
	for i, r := range live {
		copy(sess.in[i*L:(i+1)*L], r.input)
	}
	start := time.Now()
	err := e.run(sess, len(live))
	took := time.Since(start)
	if e.cfg.Observer != nil {
		e.cfg.Observer.ObserveBatch(len(live), took)
	}
	for i, r := range live {
		if err == nil {
			r.out, r.err = normalized(sess.out[i*e.spec.Dim : (i+1)*e.spec.Dim])
		} else {
			r.err = err
		}
		close(r.done)
	}
	e.sessions <- sess
}

// run runs the session on the first n inputs of its input buffer.
func (e *Embedder) run(s *session, n int) error {
	if s.inT[n-1] == nil {
		var shape ort.Shape
		if e.spec.Layout == LayoutNHWC {
			shape = ort.NewShape(int64(n), int64(e.spec.Height), int64(e.spec.Width), 3)
		} else {
			shape = ort.NewShape(int64(n), 3, int64(e.spec.Height), int64(e.spec.Width))
		}
		in, err := ort.NewTensor(shape, s.in)
		if err != nil {
			return fmt.Errorf("embed: input tensor: %w", err)
		}
		out, err := ort.NewTensor(ort.NewShape(int64(n), int64(e.spec.Dim)), s.out)
		if err != nil {
			in.Destroy()
			return fmt.Errorf("embed: output tensor: %w", err)
		}
		s.inT[n-1], s.outT[n-1] = in, out
	}
	if err := s.s.Run([]ort.Value{s.inT[n-1]}, []ort.Value{s.outT[n-1]}); err != nil {
		return fmt.Errorf("embed: run model %s on %d images: %w", e.modelPath, n, err)
	}
	return nil
}

// RunBatch runs the model directly on n preprocessed inputs laid end to end in tensors
// (n*Spec.TensorLen() values), bypassing the batching queue, and returns the n
// vectors as Embed returns them. It exists to measure raw inference; n must not exceed MaxBatch.
func (e *Embedder) RunBatch(ctx context.Context, tensors []float32, n int) ([][]float32, error) {
	L := e.spec.TensorLen()
	if n < 1 || n > e.cfg.MaxBatch || len(tensors) != n*L {
		return nil, fmt.Errorf("embed: RunBatch wants 1..%d inputs of %d values, got n=%d and %d values",
			e.cfg.MaxBatch, L, n, len(tensors))
	}
	if len(e.spec.Views) > 0 {
		return nil, errViewsNeedPhoto
	}
	// Holding the read lock for the whole run keeps Close from taking the sessions away.
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed {
		return nil, ErrClosed
	}
	var sess *session
	select {
	case sess = <-e.sessions:
	case <-ctx.Done():
		return nil, fmt.Errorf("embed: %w", ctx.Err())
	}
	defer func() { e.sessions <- sess }()
	copy(sess.in, tensors)
	var vecs [][]float32
	var err error
	if e.spec.ownPipeline() {
		if vecs, err = e.runSized(sess, n, e.spec.Width, e.spec.Height); err != nil {
			return nil, err
		}
	} else {
		if err := e.run(sess, n); err != nil {
			return nil, err
		}
		vecs = make([][]float32, n)
		for i := range vecs {
			if vecs[i], err = normalized(sess.out[i*e.spec.Dim : (i+1)*e.spec.Dim]); err != nil {
				return nil, err
			}
		}
	}
	for i := range vecs {
		if vecs[i], err = e.applyPost(vecs[i]); err != nil {
			return nil, err
		}
	}
	return vecs, nil
}

// normalized returns a copy of v scaled to unit L2 length.
func normalized(v []float32) ([]float32, error) {
	var ss float64
	for _, x := range v {
		ss += float64(x) * float64(x)
	}
	if ss == 0 || math.IsNaN(ss) || math.IsInf(ss, 0) {
		return nil, fmt.Errorf("embed: the model returned a vector that cannot be normalised (squared length %v)", ss)
	}
	inv := float32(1 / math.Sqrt(ss))
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = x * inv
	}
	return out, nil
}

func (e *Embedder) isClosed() bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.closed
}

// Close finishes the queued requests, then releases every session and this Embedder's
// reference to the ONNX Runtime environment. Calls after the first do nothing.
func (e *Embedder) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	close(e.queue)
	e.mu.Unlock()
	e.batchers.Wait()
	// Every session is idle by now: the batchers have exited, and RunBatch hands its session
	// back before dropping the read lock that e.mu.Lock above waited for. Taking them all
	// makes sure none is destroyed while in use.
	for range e.all {
		<-e.sessions
	}
	e.destroySessions()
	return releaseRuntime()
}

func (e *Embedder) destroySessions() {
	for _, s := range e.all {
		for i := range s.inT {
			if s.inT[i] != nil {
				s.inT[i].Destroy()
				s.outT[i].Destroy()
			}
		}
		s.s.Destroy()
	}
	e.all = nil
}
