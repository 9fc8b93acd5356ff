package benchkit

import (
	"runtime/metrics"
	"sync"
	"time"
)

// WatchHeap samples the heap in use every interval until the returned function is called,
// which stops the sampling and returns the most it saw, in bytes. A sample is a
// runtime/metrics read: no stop-the-world, so the watched work runs undisturbed.
func WatchHeap(every time.Duration) (stop func() uint64) {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	read := func() uint64 {
		metrics.Read(sample)
		return sample[0].Value.Uint64()
	}
	var (
		mu   sync.Mutex
		peak = read()
	)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				v := read()
				mu.Lock()
				peak = max(peak, v)
				mu.Unlock()
			}
		}
	})
	return func() uint64 {
		close(done)
		wg.Wait()
		v := read()
		mu.Lock()
		defer mu.Unlock()
		return max(peak, v)
	}
}
