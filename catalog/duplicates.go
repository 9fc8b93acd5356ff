package catalog

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"lookalike/embed"
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
	// Threshold is the look-alike cut: two products whose most similar photos score at least
	// this are candidates. 0 means the catalogue policy's LookAlike. Must be in [-1, 1].
	Threshold float32
	// MinTier reports only pairs of at least this tier (TierNone and TierLookAlike report
	// everything the threshold lets through).
	MinTier Tier
	// Filter restricts both the scanned products and their partners.
	Filter Filter
	// MaxNeighbors examined per photo, 1..MaxK; 0 means DefaultMaxNeighbors.
	MaxNeighbors int
	// EF for the graph searches; 0 means the catalogue default.
	EF int
	// Checks must all confirm a pair before it joins a cluster.
	Checks []PairCheck
}

// Cluster is a connected group of near-duplicates.
type Cluster struct {
	// IDs are the member products, sorted.
	IDs []string
	// Edges are the pairs that joined them.
	Edges []Edge
	// Tier is the cluster's weakest edge's tier: how sure the whole group is.
	Tier Tier
	// Resolved says every edge carries a Same decision: a reviewer has seen the whole group.
	Resolved bool
}

// Edge is one near-duplicate pair of products, A < B, joined by their most alike photos.
type Edge struct {
	// A and B are the product ids.
	A, B string
	// PhotoA and PhotoB name the photos of A and B that matched.
	PhotoA, PhotoB string
	// Score is those photos' cosine similarity.
	Score float32
	// Tier is the pair's tier under the policy, and Signals what it read.
	Tier    Tier
	Signals Signals
	// Decision is a reviewer's recorded verdict on the pair (nil if none). A Different pair
	// is never an edge.
	Decision *Decision
}

func checkThreshold(t float32) (float32, error) {
	if math.IsNaN(float64(t)) {
		return 0, fmt.Errorf("%w: threshold is NaN, must be in [-1, 1]", ErrInvalidArgument)
	}
	if t < -1 || t > 1 {
		return 0, fmt.Errorf("%w: threshold %v is outside [-1, 1]", ErrInvalidArgument, t)
	}
	return t, nil
}

// FindDuplicates pairs products whose photos look alike, places every pair in a tier under
// the catalogue's policy, joins the pairs with union-find and hands emit each cluster of two
// or more, largest first (ties by first id). Each photo inside the filter searches the graph
// for neighbours at or above the look-alike threshold, and below it, down to the crop rule's
// cosine, for copies by the crop rule only (a crop moves the embedding too); photos with the
// same bytes pair up whatever the graph returns. Photos of one product are never paired with
// each other.
// Recorded decisions are honoured: a pair decided Different never joins, and a pair decided
// Same joins even when the scan would not have paired it. The neighbour searches and the
// pair checks run on every core; the clusters, their edges and their order do not depend on
// how they were scheduled. Cancelling ctx stops the scan between searches. An error from
// emit stops the scan and is returned.
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
	policy, err := c.policy(ctx)
	if err != nil {
		return err
	}
	if threshold == 0 {
		threshold = policy.LookAlike
	}
	policy.LookAlike = threshold
	decided, err := c.decisionsByPair(ctx)
	if err != nil {
		return err
	}

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
		crop  cropResult
	}
	found := make([][]candidate, len(members))
	ef := max(c.ef(opt.EF), neighbors+1)
	// A pair below the look-alike cut can still be a copy by the crop rule (and only by it:
	// the cut holds for everything else).
	cut := policy.candidateCosine()
	crops := c.newCropWindows()
	err = parallelFor(ctx, len(members), func(i int) error {
		m := members[i]
		vec, err := c.vector(ctx, m.key)
		if err != nil || vec == nil {
			return err // nil: deleted during the scan
		}
		// Photos of the product itself take places in the list: ask for that many more.
		n := neighbors + len(m.e.photos)
		ns, err := c.searchPhotos(ctx, vec, n, ef, a)
		if err != nil {
			return err
		}
		for _, nb := range ns {
			if nb.Score < cut {
				continue
			}
			if _, own := m.e.photo(nb.Key); own {
				continue // photos of one product are not duplicates of each other
			}
			cand := candidate{nb.Key, nb.Score, noCrop}
			// The crop signals are worked out here, on every core, rather than when the pairs
			// are collected: they may decode both photos' kept copies.
			c.metaMu.RLock()
			other, ok := c.byKey[nb.Key]
			c.metaMu.RUnlock()
			if ok {
				pa, _ := m.e.photo(m.key)
				pb, _ := other.photo(nb.Key)
				sig := signalsOf(pa, pb, nb.Score)
				cand.crop = crops.withCrop(ctx, policy, pa, pb, sig)
				cand.crop.set(&sig)
				if nb.Score < threshold && !policy.cropCopy(sig) {
					continue
				}
			}
			found[i] = append(found[i], cand)
		}
		return nil
	})
	if err != nil {
		return err
	}

	// Each pair of products once, with its strongest pair of photos (highest tier, then
	// highest score); ties keep the pair met first, in member order.
	pairs := newPairSet()
	for i, cands := range found {
		m := members[i]
		for _, n := range cands {
			c.metaMu.RLock()
			other, ok := c.byKey[n.other]
			c.metaMu.RUnlock()
			if ok && other != m.e {
				pairs.offer(policy, m.e, m.key, other, n.other, n.score, n.crop)
			}
		}
	}
	// The same bytes pair up even when the graph did not return them (a full list of
	// near-identical shots can crowd an exact copy out).
	bySHA := make(map[string][]member)
	for _, m := range members {
		if ph, _ := m.e.photo(m.key); ph.sha256 != "" {
			bySHA[ph.sha256] = append(bySHA[ph.sha256], m)
		}
	}
	for _, group := range bySHA {
		for i, x := range group {
			for _, y := range group[i+1:] {
				if x.e != y.e {
					pairs.offer(policy, x.e, x.key, y.e, y.key, c.similarity(ctx, x.key, y.key), noCrop)
				}
			}
		}
	}
	// A pair decided Same joins whatever the scan found, scored by its most alike photos.
	for pr, d := range decided {
		if d.Verdict != Same {
			continue
		}
		ea, okA := c.lookup(pr.lo)
		eb, okB := c.lookup(pr.hi)
		if okA && okB && a.entryOK(ea) && a.entryOK(eb) && !pairs.has(pr) {
			ka, kb, score := c.closestPhotos(ctx, ea, eb)
			pa, _ := ea.photo(ka)
			pb, _ := eb.photo(kb)
			pairs.offer(policy, ea, ka, eb, kb, score, crops.withCrop(ctx, policy, pa, pb, signalsOf(pa, pb, score)))
		}
	}

	list := pairs.list()
	list = slices.DeleteFunc(list, func(p *scoredPair) bool {
		d, ok := decided[p.productPair]
		if ok && d.Verdict == Different {
			return true
		}
		return !ok && opt.MinTier > TierLookAlike && p.tier < opt.MinTier
	})
	confirmed := make([]bool, len(list))
	err = parallelFor(ctx, len(list), func(i int) error {
		var err error
		confirmed[i], err = confirm(ctx, opt.Checks, list[i].ea, list[i].eb, list[i].score)
		return err
	})
	if err != nil {
		return err
	}
	uf := newUnionFind()
	groups := make(map[string]*Cluster)
	var kept []*scoredPair
	for i, p := range list {
		if confirmed[i] {
			uf.union(p.lo, p.hi)
			kept = append(kept, p)
		}
	}
	for _, p := range kept {
		root := uf.find(p.lo)
		cl := groups[root]
		if cl == nil {
			cl = &Cluster{Tier: TierExact, Resolved: true}
			groups[root] = cl
		}
		pa, _ := p.ea.photo(p.photoLo)
		pb, _ := p.eb.photo(p.photoHi)
		e := Edge{A: p.lo, B: p.hi, PhotoA: pa.id, PhotoB: pb.id, Score: p.score, Tier: p.tier, Signals: p.signals}
		if d, ok := decided[p.productPair]; ok {
			e.Decision = &d
		}
		cl.Edges = append(cl.Edges, e)
		cl.IDs = append(cl.IDs, p.lo, p.hi)
		cl.Tier = min(cl.Tier, p.tier)
		cl.Resolved = cl.Resolved && e.Decision != nil && e.Decision.Verdict == Same
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

// productPair names two products, lo < hi.
type productPair struct{ lo, hi string }

// scoredPair is a pair of products with its strongest pair of photos.
type scoredPair struct {
	productPair
	ea, eb           *entry
	photoLo, photoHi index.Key
	score            float32
	tier             Tier
	signals          Signals
}

// pairSet collects the strongest photo pair of every product pair, in the order first met.
type pairSet struct {
	at    map[productPair]int
	pairs []*scoredPair
}

func newPairSet() *pairSet { return &pairSet{at: make(map[productPair]int)} }

func (s *pairSet) has(p productPair) bool { _, ok := s.at[p]; return ok }

func (s *pairSet) list() []*scoredPair { return s.pairs }

// offer considers photo ka of ea and photo kb of eb, scoring score, for their products' pair;
// crop is their crop signals (the same either way round).
func (s *pairSet) offer(policy Policy, ea *entry, ka index.Key, eb *entry, kb index.Key, score float32, crop cropResult) {
	if eb.id < ea.id {
		ea, eb, ka, kb = eb, ea, kb, ka
	}
	pa, _ := ea.photo(ka)
	pb, _ := eb.photo(kb)
	sig := signalsOf(pa, pb, score)
	crop.set(&sig)
	sp := &scoredPair{productPair: productPair{ea.id, eb.id}, ea: ea, eb: eb, photoLo: ka, photoHi: kb,
		score: score, signals: sig, tier: policy.Tier(sig)}
	if i, ok := s.at[sp.productPair]; ok {
		old := s.pairs[i]
		if sp.tier > old.tier || (sp.tier == old.tier && sp.score > old.score) {
			s.pairs[i] = sp
		}
		return
	}
	s.at[sp.productPair] = len(s.pairs)
	s.pairs = append(s.pairs, sp)
}

// similarity is the cosine of two stored photos (0 when either is gone).
func (c *Catalog) similarity(ctx context.Context, a, b index.Key) float32 {
	vs, err := c.backend.Vectors(ctx, []index.Key{a, b})
	if err != nil {
		c.log.Warn("cannot read two photos' vectors", "a", a, "b", b, "err", err)
		return 0
	}
	if vs[0] == nil || vs[1] == nil {
		return 0
	}
	return dot(vs[0], vs[1])
}

// closestPhotos finds the most similar pair of photos of two products.
func (c *Catalog) closestPhotos(ctx context.Context, ea, eb *entry) (index.Key, index.Key, float32) {
	var ka, kb index.Key
	best := float32(math.Inf(-1))
	for _, pa := range ea.photos {
		for _, pb := range eb.photos {
			if s := c.similarity(ctx, pa.key, pb.key); s > best {
				ka, kb, best = pa.key, pb.key, s
			}
		}
	}
	return ka, kb, best
}

// decisionsByPair reads the recorded decisions keyed by product pair.
func (c *Catalog) decisionsByPair(ctx context.Context) (map[productPair]Decision, error) {
	ds, err := c.decisions(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[productPair]Decision, len(ds))
	for _, d := range ds {
		out[productPair{d.A, d.B}] = d
	}
	return out, nil
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
	// IsDuplicate says the best match reaches the requested threshold or is a copy or an
	// exact duplicate under the policy.
	IsDuplicate bool
	// BestMatch is the strongest match (highest tier, then score); nil when no product is
	// inside the filter.
	BestMatch *Result
	// Tier and Signals place the best match under the catalogue's policy.
	Tier    Tier
	Signals Signals
	// Threshold is the look-alike threshold that was applied.
	Threshold float32
}

// checkCandidates is how many photos CheckDuplicate weighs: the strongest tier can sit a few
// places below the best cosine (a copy with a matching hash below a near-identical re-shot).
const checkCandidates = 10

// CheckDuplicate analyses a photo and reports its strongest match in the catalogue: the tier
// under the catalogue's policy (0 threshold: the policy's look-alike cut) and its signals.
func (c *Catalog) CheckDuplicate(ctx context.Context, image []byte, threshold float32, f Filter) (DuplicateCheck, error) {
	t, err := checkThreshold(threshold)
	if err != nil {
		return DuplicateCheck{}, err
	}
	if len(image) == 0 {
		return DuplicateCheck{}, fmt.Errorf("%w: image is empty", ErrInvalidArgument)
	}
	if err := c.enter(); err != nil {
		return DuplicateCheck{}, err
	}
	defer c.life.RUnlock()
	policy, err := c.policy(ctx)
	if err != nil {
		return DuplicateCheck{}, err
	}
	if t == 0 {
		t = policy.LookAlike
	}
	policy.LookAlike = t
	an, err := c.embedder.Analyze(ctx, image, embed.AnalyzeOptions{})
	if err != nil {
		return DuplicateCheck{}, fmt.Errorf("catalog: analyse photo: %w", err)
	}
	sum := sha256.Sum256(image)
	query := photoEntry{sha256: hex.EncodeToString(sum[:]), phash: an.PHash, phashMir: an.PHashMirror, hasPHash: true}
	ns, err := c.searchPhotos(ctx, an.Vector, checkCandidates, 0, c.compileFilter(f))
	if err != nil {
		return DuplicateCheck{}, err
	}
	out := DuplicateCheck{Threshold: t}
	bestTier := Tier(-1)
	crops := c.newCropWindows()
	queryCrop := uploadCrop(query, image)
	for _, n := range ns {
		c.metaMu.RLock()
		e, ok := c.byKey[n.Key]
		c.metaMu.RUnlock()
		if !ok {
			continue
		}
		ph, _ := e.photo(n.Key)
		sig := signalsOf(query, ph, n.Score)
		if policy.wantsCrop(sig) {
			// The photo's own windows only when a candidate needs them (a decode at the
			// kept photos' scale), once.
			cropSignals(queryCrop, crops.photo(ctx, ph), policy.CropHamming).set(&sig)
		}
		tier := policy.Tier(sig)
		if tier > bestTier {
			bestTier = tier
			out.BestMatch = &Result{Product: e.product(), Score: n.Score, PhotoID: ph.id}
			out.Tier, out.Signals = tier, sig
		}
	}
	out.IsDuplicate = out.Tier >= TierLookAlike
	return out, ctx.Err()
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
