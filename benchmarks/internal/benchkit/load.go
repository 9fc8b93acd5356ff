package benchkit

import (
	"context"
	"math/rand"
	"sync"
	"time"
)

// Load is what ClosedLoop measured: the latency of every call that succeeded, the failed
// calls, and the wall time of the whole level.
type Load struct {
	Latencies []time.Duration
	Errors    int
	Elapsed   time.Duration
}

// Merge adds another level's measurements (a later round of the same level) to l.
func (l *Load) Merge(o Load) {
	l.Latencies = append(l.Latencies, o.Latencies...)
	l.Errors += o.Errors
	l.Elapsed += o.Elapsed
}

// QPS is successful calls per second of wall time.
func (l Load) QPS() float64 {
	if l.Elapsed <= 0 {
		return 0
	}
	return float64(len(l.Latencies)) / l.Elapsed.Seconds()
}

// ClosedLoop runs clients goroutines, each sending its next call as soon as the last one
// returns, until d has passed or ctx is done; every client makes at least one call. Client c
// gets its own generator, seeded seed+c.
func ClosedLoop(ctx context.Context, clients int, d time.Duration, seed int64,
	call func(ctx context.Context, rng *rand.Rand) error) Load {
	var mu sync.Mutex
	var res Load
	var wg sync.WaitGroup
	start := time.Now()
	stopAt := start.Add(d)
	for c := range clients {
		wg.Go(func() {
			rng := rand.New(rand.NewSource(seed + int64(c)))
			var mine []time.Duration
			bad := 0
			for first := true; first || (time.Now().Before(stopAt) && ctx.Err() == nil); first = false {
				t0 := time.Now()
				if err := call(ctx, rng); err != nil {
					bad++
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			res.Latencies = append(res.Latencies, mine...)
			res.Errors += bad
			mu.Unlock()
		})
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	return res
}
