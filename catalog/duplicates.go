package catalog

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"lookalike/index"
)

// Defaults for duplicate detection.
const (
	DefaultDuplicateThreshold = 0.9
	DefaultMaxNeighbors       = 10
)

// PairCheck is an extra signal for duplicate detection: after two products pass the
// embedding threshold, every configured PairCheck must confirm them (a perceptual-hash
// comparison, say). Implementations must be safe for concurrent use.
type PairCheck interface {
	SameProduct(ctx context.Context, a, b Product, score float32) (bool, error)
}

// DuplicateOptions tunes FindDuplicates.
type DuplicateOptions struct {
	// Threshold joins two products whose most similar photos score at least this; 0 means
	// DefaultDuplicateThreshold. Must be in [-1, 1].
	Threshold float32
	// Filter restricts both the scanned products and their partners.
	Filter Filter
	// MaxNeighbors examined per product, 1..MaxK; 0 means DefaultMaxNeighbors.
	MaxNeighbors int
	// EF for the graph searches; 0 means the catalogue default.
	EF int
	// Checks must all confirm a pair before it joins a cluster.
	Checks []PairCheck
}

// Cluster is a connected group of near-duplicates.
type Cluster struct {
	IDs   []string // sorted
	Edges []Edge   // the pairs that joined them
}

// Edge is one near-duplicate pair of products, A < B, joined by their most similar photos.
type Edge struct {
	// A and B are the product ids.
	A, B string
	// PhotoA and PhotoB name the photos of A and B that matched.
	PhotoA, PhotoB string
	// Score is those photos' cosine similarity.
	Score float32
}

func checkThreshold(t float32) (float32, error) {
	if math.IsNaN(float64(t)) {
		return 0, fmt.Errorf("%w: threshold is NaN, must be in [-1, 1]", ErrInvalidArgument)
	}
	if t == 0 {
		return DefaultDuplicateThreshold, nil
	}
	if t < -1 || t > 1 {
		return 0, fmt.Errorf("%w: threshold %v is outside [-1, 1]", ErrInvalidArgument, t)
	}
	return t, nil
}

// FindDuplicates searches every product inside the filter for neighbours at or above the
// threshold, joins them with union-find and hands emit each cluster of two or more, largest
// first (ties by first id). The neighbour searches and the pair checks run on every core;
// the clusters, their edges and their order do not depend on how they were scheduled.
// Cancelling ctx stops the scan between searches. An error from emit stops the scan and is
// returned.
func (c *Catalog) FindDuplicates(ctx context.Context, opt DuplicateOptions, emit func(Cluster) error) error {
	threshold, err := checkThreshold(opt.Threshold)
	if err != nil {
		return err
	}
	neighbors := opt.MaxNeighbors
	if neighbors == 0 {
		neighbors = DefaultMaxNeighbors
	}
	if neighbors < 1 || neighbors > MaxK {
		return fmt.Errorf("%w: max_neighbors is %d, must be 1..%d", ErrInvalidArgument, neighbors, MaxK)
	}
	if err := checkEF(opt.EF); err != nil {
		return err
	}
	if err := c.enter(); err != nil {
		return err
	}
	defer c.life.RUnlock()

	a := c.compileFilter(opt.Filter)
	// The scan is over photos; pairs, edges and clusters are over products.
	type member struct {
		e   *entry
		key index.Key
	}
	c.metaMu.RLock()
	members := make([]member, 0, len(c.byKey))
	for key, e := range c.byKey {
		if a.entryOK(e) {
			members = append(members, member{e, key})
		}
	}
	c.metaMu.RUnlock()
	// Key order fixes the order in which pairs are first met, so the edges (and the pairs
	// handed to the checks) do not depend on map iteration or on scheduling.
	slices.SortFunc(members, func(x, y member) int { return cmp.Compare(x.key, y.key) })

	// The searches are independent and read-only: run them on every core, each result in
	// its member's slot.
	type candidate struct {
		other index.Key
		score float32
	}
	found := make([][]candidate, len(members))
	ef := max(c.ef(opt.EF), neighbors+1)
	filter := a.fn()
	err = parallelFor(ctx, len(members), func(i int) error {
		m := members[i]
		vec, ok := c.graph.Vector(m.key)
		if !ok {
			return nil // deleted during the scan
		}
		// Photos of the product itself take places in the list: ask for that many more.
		n := neighbors + len(m.e.photos)
		for _, nb := range c.graph.Search(vec, n, index.SearchOptions{EF: max(ef, n), Filter: filter}) {
			if nb.Score < threshold {
				continue
			}
			if _, own := m.e.photo(nb.Key); own {
				continue // photos of one product are not duplicates of each other
			}
			found[i] = append(found[i], candidate{nb.Key, nb.Score})
		}
		return nil
	})
	if err != nil {
		return err
	}

	// Each pair of products once, with its best-scoring pair of photos; ties keep the pair
	// met first, in member order.
	type pair struct{ lo, hi string }
	type scoredPair struct {
		pair
		ea, eb           *entry
		photoLo, photoHi index.Key
		score            float32
	}
	index := make(map[pair]int)
	var pairs []scoredPair
	for i, cands := range found {
		m := members[i]
		for _, n := range cands {
			c.metaMu.RLock()
			other, ok := c.byKey[n.other]
			c.metaMu.RUnlock()
			if !ok || other == m.e {
				continue
			}
			sp := scoredPair{pair: pair{m.e.id, other.id}, ea: m.e, eb: other, photoLo: m.key, photoHi: n.other, score: n.score}
			if sp.hi < sp.lo {
				sp.lo, sp.hi, sp.ea, sp.eb, sp.photoLo, sp.photoHi = sp.hi, sp.lo, sp.eb, sp.ea, sp.photoHi, sp.photoLo
			}
			if j, dup := index[sp.pair]; dup {
				if sp.score > pairs[j].score {
					pairs[j] = sp
				}
				continue
			}
			index[sp.pair] = len(pairs)
			pairs = append(pairs, sp)
		}
	}
	confirmed := make([]bool, len(pairs))
	err = parallelFor(ctx, len(pairs), func(i int) error {
		var err error
		confirmed[i], err = confirm(ctx, opt.Checks, pairs[i].ea, pairs[i].eb, pairs[i].score)
		return err
	})
	if err != nil {
		return err
	}
	uf := newUnionFind()
	groups := make(map[string]*Cluster)
	var kept []scoredPair
	for i, p := range pairs {
		if confirmed[i] {
			uf.union(p.lo, p.hi)
			kept = append(kept, p)
		}
	}
	for _, p := range kept {
		root := uf.find(p.lo)
		cl := groups[root]
		if cl == nil {
			cl = &Cluster{}
			groups[root] = cl
		}
		pa, _ := p.ea.photo(p.photoLo)
		pb, _ := p.eb.photo(p.photoHi)
		cl.Edges = append(cl.Edges, Edge{A: p.lo, B: p.hi, PhotoA: pa.id, PhotoB: pb.id, Score: p.score})
		cl.IDs = append(cl.IDs, p.lo, p.hi)
	}

	clusters := make([]*Cluster, 0, len(groups))
	for _, cl := range groups {
		slices.Sort(cl.IDs)
		cl.IDs = slices.Compact(cl.IDs)
		if len(cl.IDs) < 2 {
			continue
		}
		slices.SortFunc(cl.Edges, func(x, y Edge) int {
			if c := strings.Compare(x.A, y.A); c != 0 {
				return c
			}
			return strings.Compare(x.B, y.B)
		})
		clusters = append(clusters, cl)
	}
	slices.SortFunc(clusters, func(x, y *Cluster) int {
		if len(x.IDs) != len(y.IDs) {
			return len(y.IDs) - len(x.IDs)
		}
		return strings.Compare(x.IDs[0], y.IDs[0])
	})
	for _, cl := range clusters {
		if err := emit(*cl); err != nil {
			return err
		}
	}
	return nil
}

// parallelChunk is how many consecutive indices a parallelFor worker claims at once: enough
// to make the shared counter cheap, few enough to keep the cores evenly loaded at the end.
const parallelChunk = 16

// parallelFor calls fn(i) for every i in [0, n) on up to GOMAXPROCS goroutines. It stops
// handing out work at the first error or when ctx is done, and returns that error (or
// ctx's). fn must be safe for concurrent use; results go into per-index slots, so their
// order never depends on scheduling.
func parallelFor(ctx context.Context, n int, fn func(i int) error) error {
	if n == 0 {
		return ctx.Err()
	}
	workers := min(runtime.GOMAXPROCS(0), (n+parallelChunk-1)/parallelChunk)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				from := int(next.Add(parallelChunk)) - parallelChunk
				if from >= n {
					return
				}
				for i := from; i < min(from+parallelChunk, n); i++ {
					if err := fn(i); err != nil {
						cancel(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return nil
}

// confirm runs the extra pairwise checks on a candidate pair.
func confirm(ctx context.Context, checks []PairCheck, ea, eb *entry, score float32) (bool, error) {
	if len(checks) == 0 {
		return true, nil
	}
	pa, pb := ea.product(), eb.product()
	for _, chk := range checks {
		ok, err := chk.SameProduct(ctx, pa, pb, score)
		if err != nil {
			return false, fmt.Errorf("catalog: duplicate check: %w", err)
		}
		if !ok {
			return false, nil
		}
	}
	return true, nil
}

// DuplicateCheck answers CheckDuplicate.
type DuplicateCheck struct {
	IsDuplicate bool
	BestMatch   *Result // nil when no product is inside the filter
	Threshold   float32
}

// CheckDuplicate embeds a photo and reports its best match and whether that match reaches
// the threshold (0 means DefaultDuplicateThreshold).
func (c *Catalog) CheckDuplicate(ctx context.Context, image []byte, threshold float32, f Filter) (DuplicateCheck, error) {
	t, err := checkThreshold(threshold)
	if err != nil {
		return DuplicateCheck{}, err
	}
	res, err := c.SearchByImage(ctx, image, SearchOptions{K: 1, Filter: f})
	if err != nil {
		return DuplicateCheck{}, err
	}
	out := DuplicateCheck{Threshold: t}
	if len(res) > 0 {
		best := res[0]
		out.BestMatch = &best
		out.IsDuplicate = best.Score >= t
	}
	return out, nil
}

// unionFind groups product ids; the zero value is not usable, call newUnionFind.
type unionFind struct{ parent map[string]string }

func newUnionFind() *unionFind { return &unionFind{parent: make(map[string]string)} }

func (u *unionFind) find(k string) string {
	root := k
	for {
		p, ok := u.parent[root]
		if !ok || p == root {
			break
		}
		root = p
	}
	for k != root {
		next, ok := u.parent[k]
		if !ok {
			break
		}
		u.parent[k] = root
		k = next
	}
	return root
}

func (u *unionFind) union(a, b string) {
	ra, rb := u.find(a), u.find(b)
	if ra == rb {
		return
	}
	if rb < ra {
		ra, rb = rb, ra
	}
	u.parent[rb] = ra
	if _, ok := u.parent[ra]; !ok {
		u.parent[ra] = ra
	}
}
