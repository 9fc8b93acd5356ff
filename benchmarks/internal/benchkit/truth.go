package benchkit

import (
	"context"
	"fmt"
	"math"
	"sort"
	"sync"

	"github.com/viterin/vek/vek32"
)

// Metric is how ground truth ranks vectors. It mirrors the index's metrics but is defined here
// so that the truth never depends on the code it judges.
type Metric int

const (
	// L2 ranks by Euclidean distance, smallest first.
	L2 Metric = iota
	// InnerProduct ranks by inner product, largest first (cosine on normalised vectors).
	InnerProduct
)

// String names the metric the way the Python peers' command line does.
func (m Metric) String() string {
	if m == InnerProduct {
		return "ip"
	}
	return "l2"
}

// Distance is the exact float64 dissimilarity of a and b under m: squared L2, or the negated
// inner product. Smaller is closer under both.
func (m Metric) Distance(a, b []float32) float64 {
	var s float64
	if m == InnerProduct {
		for i := range a {
			s += float64(a[i]) * float64(b[i])
		}
		return -s
	}
	for i := range a {
		d := float64(a[i]) - float64(b[i])
		s += d * d
	}
	return s
}

// Truth is the exact k nearest neighbours of each query, best first.
type Truth struct {
	IDs       [][]int32
	Distances [][]float64 // Metric.Distance of each neighbour, ascending
}

// rerankSlack is how many extra float32 candidates are re-scored in float64 so that rounding
// in the fast pass cannot drop a true neighbour.
const rerankSlack = 32

// truthBlock is how many queries a worker scores against each base row while it is in
// cache: a 1M x 1280-d base is 5 GB, read once per block instead of once per query.
const truthBlock = 32

// ExactTruth finds the k nearest base rows of every query by brute force on workers goroutines.
// A SIMD float32 pass shortlists k+rerankSlack candidates, which are then ranked in float64.
func ExactTruth(ctx context.Context, base, queries [][]float32, k int, m Metric, workers int) (Truth, error) {
	if k <= 0 || k > len(base) {
		return Truth{}, fmt.Errorf("benchkit: k=%d with %d base vectors", k, len(base))
	}
	t := Truth{IDs: make([][]int32, len(queries)), Distances: make([][]float64, len(queries))}
	shortlist := min(k+rerankSlack, len(base))
	next := make(chan int)
	var wg sync.WaitGroup
	for range max(workers, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cands := make([][]scored, truthBlock)
			for i := range cands {
				cands[i] = make([]scored, 0, shortlist+1)
			}
			for first := range next {
				block := queries[first:min(first+truthBlock, len(queries))]
				for i := range block {
					cands[i] = cands[i][:0]
				}
				for bi, b := range base {
					if bi%65536 == 0 && ctx.Err() != nil {
						return
					}
					for i, q := range block {
						var d float32
						if m == InnerProduct {
							d = -vek32.Dot(q, b)
						} else {
							d = vek32.Distance(q, b)
						}
						if c := cands[i]; len(c) < shortlist || d < c[0].dist {
							cands[i] = pushWorst(c, scored{int32(bi), d}, shortlist)
						}
					}
				}
				for i, q := range block {
					exact := make([]scored64, len(cands[i]))
					for j, c := range cands[i] {
						exact[j] = scored64{c.id, m.Distance(q, base[c.id])}
					}
					sort.Slice(exact, func(a, b int) bool {
						if exact[a].dist != exact[b].dist {
							return exact[a].dist < exact[b].dist
						}
						return exact[a].id < exact[b].id
					})
					ids, dists := make([]int32, k), make([]float64, k)
					for j := range k {
						ids[j], dists[j] = exact[j].id, exact[j].dist
					}
					t.IDs[first+i], t.Distances[first+i] = ids, dists
				}
			}
		}()
	}
	var err error
feed:
	for first := 0; first < len(queries); first += truthBlock {
		select {
		case next <- first:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if ctx.Err() != nil {
		err = fmt.Errorf("benchkit: ground truth: %w", ctx.Err())
	}
	return t, err
}

type scored struct {
	id   int32
	dist float32
}

type scored64 struct {
	id   int32
	dist float64
}

// pushWorst keeps h as a max-heap on dist of at most limit entries, so h[0] is the worst kept.
func pushWorst(h []scored, s scored, limit int) []scored {
	if len(h) < limit {
		h = append(h, s)
		for i := len(h) - 1; i > 0; {
			p := (i - 1) / 2
			if h[p].dist >= h[i].dist {
				break
			}
			h[p], h[i] = h[i], h[p]
			i = p
		}
		return h
	}
	h[0] = s
	for i := 0; ; {
		l, r, big := 2*i+1, 2*i+2, i
		if l < len(h) && h[l].dist > h[big].dist {
			big = l
		}
		if r < len(h) && h[r].dist > h[big].dist {
			big = r
		}
		if big == i {
			return h
		}
		h[i], h[big] = h[big], h[i]
		i = big
	}
}

// Recall is the mean recall@k of results against the truth. A returned id counts when its exact
// distance is within the k-th true distance (plus float rounding), as the public ANN benchmarks
// do, so ties between equidistant base vectors are not held against an index. Duplicated ids
// and ids outside base count as misses.
func Recall(t Truth, base, queries [][]float32, results [][]int32, k int, m Metric) float64 {
	if len(results) == 0 {
		return 0
	}
	var sum float64
	for qi, got := range results {
		kth := t.Distances[qi][k-1]
		limit := kth + 1e-5*math.Max(1, math.Abs(kth))
		seen := make(map[int32]bool, k)
		hits := 0
		for _, id := range got[:min(k, len(got))] {
			if id < 0 || int(id) >= len(base) || seen[id] {
				continue
			}
			seen[id] = true
			if m.Distance(queries[qi], base[id]) <= limit {
				hits++
			}
		}
		sum += float64(hits) / float64(k)
	}
	return sum / float64(len(results))
}
