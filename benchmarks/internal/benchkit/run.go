package benchkit

import (
	"time"
)

// PassResult is what one timed run of a query set produced.
type PassResult struct {
	IDs      [][]int32 // the first pass's top-k ids, one row per answered query
	QPS      float64
	Answered int // queries in IDs: all of them unless maxQueries cut the pass short
}

// TimeQueries answers queries with search one at a time on the calling goroutine, repeating
// whole passes until minTime has passed, so fast settings are timed over enough work. When a
// single pass would be too slow (an exact scan), maxTime stops the first pass early and only
// the answered queries are kept; it must be at least minTime.
func TimeQueries(queries [][]float32, search func(q []float32) []int32, minTime, maxTime time.Duration) PassResult {
	var res PassResult
	answered := 0
	start := time.Now()
	for pass := 0; ; pass++ {
		for _, q := range queries {
			ids := search(q)
			answered++
			if pass == 0 {
				res.IDs = append(res.IDs, ids)
				if time.Since(start) >= maxTime {
					break
				}
			}
		}
		elapsed := time.Since(start)
		if elapsed >= minTime || (pass == 0 && len(res.IDs) < len(queries)) {
			res.QPS = float64(answered) / elapsed.Seconds()
			res.Answered = len(res.IDs)
			return res
		}
	}
}
