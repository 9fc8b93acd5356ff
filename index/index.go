package index

import (
	"errors"
	"fmt"
	"math"
)

// Key identifies a vector; the store assigns it.
type Key = uint32

// Neighbor is one search result. Score is higher for closer vectors: the inner product for
// InnerProduct, the negated squared distance for L2.
type Neighbor struct {
	Key   Key
	Score float32
}

// Metric selects how closeness is measured.
type Metric int

const (
	// InnerProduct scores by dot product; on L2-normalised vectors it is cosine similarity.
	InnerProduct Metric = iota
	// L2 scores by negated squared Euclidean distance.
	L2
)

// String names the metric for logs and file headers.
func (m Metric) String() string {
	switch m {
	case InnerProduct:
		return "inner_product"
	case L2:
		return "l2"
	default:
		return fmt.Sprintf("metric(%d)", int(m))
	}
}

func (m Metric) valid() bool { return m == InnerProduct || m == L2 }

// Score is the score a search under m reports for a stored vector b and the query a (the
// same kernels, so the same float32 bits): a caller that ranks some vectors itself, beside
// an index's results, merges the two exactly.
func (m Metric) Score(a, b []float32) float32 { return -distance(m == L2, a, b) }

// SearchOptions tunes one query. EF is the size of the candidate list (0: the index default;
// it is raised to k when smaller). Filter, when set, admits only the keys it returns true
// for; non-matching items are still walked through but never returned.
type SearchOptions struct {
	EF     int
	Filter func(Key) bool
}

// Index is what the catalogue needs from an index; *HNSW and *Exact implement it.
type Index interface {
	// Add inserts vec under key, replacing any vector the key already had.
	Add(key Key, vec []float32) error
	// Delete removes key and reports whether it was present.
	Delete(key Key) bool
	// Search returns up to k neighbours of query, best first, with exact scores.
	Search(query []float32, k int, opt SearchOptions) []Neighbor
	// Vector returns a copy of the vector stored under key.
	Vector(key Key) ([]float32, bool)
	// Len counts the live (not deleted) keys.
	Len() int
}

// Errors returned by Add and LoadHNSW (LoadSnapshot, LoadSnapshotWith); they are wrapped, so
// test with errors.Is.
var (
	ErrDimension    = errors.New("index: vector has the wrong dimension")
	ErrNonFinite    = errors.New("index: vector holds NaN or Inf")
	ErrBadSnapshot  = errors.New("index: snapshot is damaged")
	ErrBadVersion   = errors.New("index: snapshot has an unsupported format version")
	ErrNotASnapshot = errors.New("index: file is not an index snapshot")
	ErrNoVectors    = errors.New("index: snapshot holds no full vectors and no LoadOptions.Vectors source was given")
)

func checkVector(dim int, vec []float32) error {
	if len(vec) != dim {
		return fmt.Errorf("%w: got %d, want %d", ErrDimension, len(vec), dim)
	}
	for _, v := range vec {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return ErrNonFinite
		}
	}
	return nil
}

// RecallAtK is the fraction of want's keys (the true nearest neighbours, at most k per query)
// that appear in got's first k results, averaged over queries. Tests and benchmarks use it to
// compare an approximate index with the Exact one.
func RecallAtK(got, want [][]Neighbor, k int) float64 {
	var hit, total int
	for q := range want {
		truth := want[q]
		if len(truth) > k {
			truth = truth[:k]
		}
		var res []Neighbor
		if q < len(got) {
			res = got[q]
		}
		if len(res) > k {
			res = res[:k]
		}
		for _, t := range truth {
			for _, r := range res {
				if r.Key == t.Key {
					hit++
					break
				}
			}
		}
		total += len(truth)
	}
	if total == 0 {
		return 1
	}
	return float64(hit) / float64(total)
}
