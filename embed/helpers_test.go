package embed

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"lookalike/internal/dataset"
)

// openTest opens an Embedder on the real model, failing (never skipping) when the model or
// the runtime is missing: CI has both.
func openTest(t testing.TB, cfg Config) *Embedder {
	t.Helper()
	return openTestWith(t, cfg, nil)
}

// openTestGated is openTest with a batchGate on the batchers.
func openTestGated(t testing.TB, cfg Config) (*Embedder, *batchGate) {
	t.Helper()
	g := &batchGate{}
	e := openTestWith(t, cfg, g.hook)
	// Registered after openTest's Close, so it runs first: a test that fails while a
	// batcher is held must not leave Close waiting for it.
	t.Cleanup(g.open)
	return e, g
}

func openTestWith(t testing.TB, cfg Config, gather func()) *Embedder {
	t.Helper()
	if cfg.ModelPath == "" {
		p, err := FindModel()
		if err != nil {
			t.Fatalf("the embedding model is required: %v", err)
		}
		cfg.ModelPath = p
	}
	if cfg.RuntimePath == "" {
		p, err := FindRuntime()
		if err != nil {
			t.Fatalf("ONNX Runtime is required: %v", err)
		}
		cfg.RuntimePath = p
	}
	e, err := open(context.Background(), cfg, gather)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return e
}

// sharedModel returns the path of a file in ../shared/models.
func sharedModel(t testing.TB, name string) string {
	t.Helper()
	p, err := FindModel()
	if err != nil {
		t.Fatalf("the shared models are required: %v", err)
	}
	p = filepath.Join(filepath.Dir(p), name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("shared model missing: %v", err)
	}
	return p
}

// photos returns up to n photos of a collection, taking every k-th so that labels vary.
func photos(t testing.TB, collection string, n int) []dataset.Photo {
	t.Helper()
	all, err := dataset.LoadPhotos(collection)
	if err != nil {
		t.Fatalf("shared photos are required: %v", err)
	}
	if n >= len(all) {
		return all
	}
	step := len(all) / n
	out := make([]dataset.Photo, 0, n)
	for i := 0; i < n; i++ {
		out = append(out, all[i*step])
	}
	return out
}

// decodeWith decodes data, failing the test on an error.
func decodeWith(t testing.TB, data []byte, opt DecodeOptions) Decoded {
	t.Helper()
	d, err := Decode(data, opt)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	return d
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func cosine(a, b []float32) float64 {
	var dot, na, nb float64
	for i := range a {
		dot += float64(a[i]) * float64(b[i])
		na += float64(a[i]) * float64(a[i])
		nb += float64(b[i]) * float64(b[i])
	}
	return dot / math.Sqrt(na*nb)
}

// batchGate holds the next batcher to take the first request of a batch, once armed, until
// the test opens it: requests queued meanwhile are then certain to join that batch, however
// the goroutines are scheduled.
type batchGate struct {
	armed   atomic.Bool
	held    chan struct{} // closed when a batcher is held
	release chan struct{}
	once    *sync.Once
}

// arm makes the next batch wait in the gate. Call it while no batcher can be in hook.
func (g *batchGate) arm() {
	g.held, g.release, g.once = make(chan struct{}), make(chan struct{}), &sync.Once{}
	g.armed.Store(true) // publishes the channels to the batcher that sees it
}

func (g *batchGate) hook() {
	if g.armed.CompareAndSwap(true, false) {
		close(g.held)
		<-g.release
	}
}

// open lets the held batcher go on; it is safe to call more than once, or unarmed.
func (g *batchGate) open() {
	if g.once != nil {
		g.once.Do(func() { close(g.release) })
	}
}

// recordingObserver records what the Embedder reports, and lets a test wait until a given
// number of requests has been queued.
type recordingObserver struct {
	mu      sync.Mutex
	changed *sync.Cond
	batches []int
	depths  []int
}

func newRecordingObserver() *recordingObserver {
	o := &recordingObserver{}
	o.changed = sync.NewCond(&o.mu)
	return o
}

func (o *recordingObserver) ObserveBatch(size int, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.batches = append(o.batches, size)
}

// ObserveQueue is called after the request is in the queue, so once n calls have been
// seen, n requests have been queued.
func (o *recordingObserver) ObserveQueue(depth int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.depths = append(o.depths, depth)
	o.changed.Broadcast()
}

// waitQueued blocks until n requests have been queued since the last reset. It has no
// deadline of its own: a request that never queues is a hang for go test's -timeout to
// report, not a guess about how long a loaded machine may take.
func (o *recordingObserver) waitQueued(n int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for len(o.depths) < n {
		o.changed.Wait()
	}
}

func (o *recordingObserver) reset() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.batches, o.depths = nil, nil
}

func (o *recordingObserver) batchSizes() []int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]int(nil), o.batches...)
}
