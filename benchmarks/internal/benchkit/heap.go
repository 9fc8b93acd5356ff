package benchkit

import (
	"runtime/metrics"
	"sync"
	"time"
)

// WatchHeap samples the live heap every interval until the returned function is called,
// which stops the sampling and returns the most it saw, in bytes: what the last collection
// found reachable, so the garbage a collection has yet to free does not count (with GOGC at
// 100 the heap in use grows to twice the live heap before a collection). A sample is a
// runtime/metrics read: no stop-the-world, so the watched work runs undisturbed.
func WatchHeap(every time.Duration) (stop func() uint64) {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
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
