package catalog

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"

	"lookalike/index"
)

// Limits on search parameters.
const (
	MaxK  = 1000
	MaxEF = 10000
	// MaxNotLike bounds SearchOptions.NotLike.
	MaxNotLike = 100
	// MaxExpand bounds SearchOptions.Expand.
	MaxExpand = 50
	// MaxBoosts bounds SearchOptions.Boosts.
	MaxBoosts = 16
)

// Filter restricts which products a search may return; its conditions combine with AND and
// the zero Filter allows everything.
type Filter struct {
	// Categories: the product's category must be one of these (any of).
	Categories []string
	// Attributes: every one must be present on the product with exactly this value.
	Attributes map[string]string
	// ExcludeIDs are never returned.
	ExcludeIDs []string
}

func (f Filter) empty() bool {
	return len(f.Categories) == 0 && len(f.Attributes) == 0 && len(f.ExcludeIDs) == 0
}

// SearchOptions tunes a search. Results are products, each ranked by its best-matching
// photo; Expand rewrites the query first, then the ranking options apply in this order:
// Boosts, GroupBy, NotLike, Diversity.
type SearchOptions struct {
	// K is how many products at most, 1..MaxK. K are returned whenever that many products
	// pass the filter and the ranking options (and MinScore).
	K int
	// Filter says which products may be returned.
	Filter Filter
	// MinScore drops results below this cosine similarity; 0 means no minimum.
	MinScore float32
	// EF is the HNSW candidate list size; 0 means the catalogue default.
	EF int
	// GroupBy names an attribute: at most one product per value of it is returned (the
	// best one), so colour variants of one garment collapse into one result. Products
	// without the attribute are each a group of their own.
	GroupBy string
	// NotLike lists products the shopper rejected. They are never returned, and neither is
	// a product whose matching photo is at least as similar to some photo of a rejected
	// product as it is to the query: it looks more like what was rejected than like what
	// was asked for.
	NotLike []string
	// Diversity in [0, 1] re-ranks by maximal marginal relevance: each next result
	// maximises (1-Diversity)*score - Diversity*(its highest similarity to a result already
	// chosen), comparing the results' matching photos. 0 ranks by similarity alone.
	Diversity float32
	// Expand turns on query expansion: the query becomes the normalised sum of itself and
	// the vectors of the Expand photos it finds first (those the filter admits), each
	// weighted by its score to the power ExpandAlpha, and that query searches again.
	// Scores are then similarities to the expanded query. 0 leaves the query as it is.
	Expand int
	// ExpandAlpha weights the expansion's photos by score^ExpandAlpha (alpha query
	// expansion); 0 weighs them equally (average query expansion).
	ExpandAlpha float32
	// Boosts add to the score of products with an attribute value, so that a storefront
	// can rank, say, its catalogue (pack) shots or in-stock products a little higher;
	// Result.Score is then the similarity plus the boosts, and MinScore applies to that.
	Boosts []Boost
}

// Boost adds Add to the score of every product whose attribute Attribute is Value.
type Boost struct {
	// Attribute and Value select the products.
	Attribute, Value string
	// Add is what their score gains, -1..1 (negative ranks them lower).
	Add float32
}

// Result is one ranked product.
type Result struct {
	// Product is the matching product (photos without vectors).
	Product Product
	// Score is the cosine similarity of its best-matching photo to the query.
	Score float32
	// PhotoID names that photo.
	PhotoID string
}

func (o SearchOptions) validate() error {
	if o.K < 1 || o.K > MaxK {
		return fmt.Errorf("%w: k is %d, must be 1..%d", ErrInvalidArgument, o.K, MaxK)
	}
	if err := checkEF(o.EF); err != nil {
		return err
	}
	if math.IsNaN(float64(o.MinScore)) {
		return fmt.Errorf("%w: min_score is NaN", ErrInvalidArgument)
	}
	if d := o.Diversity; math.IsNaN(float64(d)) || d < 0 || d > 1 {
		return fmt.Errorf("%w: diversity is %v, must be in [0, 1]", ErrInvalidArgument, d)
	}
	if o.Expand < 0 || o.Expand > MaxExpand {
		return fmt.Errorf("%w: expand is %d, must be 0..%d", ErrInvalidArgument, o.Expand, MaxExpand)
	}
	if a := o.ExpandAlpha; math.IsNaN(float64(a)) || a < 0 || a > 100 {
		return fmt.Errorf("%w: expand_alpha is %v, must be in [0, 100]", ErrInvalidArgument, a)
	}
	if len(o.Boosts) > MaxBoosts {
		return fmt.Errorf("%w: %d boosts, at most %d", ErrInvalidArgument, len(o.Boosts), MaxBoosts)
	}
	for i, b := range o.Boosts {
		if b.Attribute == "" {
			return fmt.Errorf("%w: boost %d names no attribute", ErrInvalidArgument, i)
		}
		if math.IsNaN(float64(b.Add)) || b.Add < -1 || b.Add > 1 {
			return fmt.Errorf("%w: boost %d adds %v, must be in [-1, 1]", ErrInvalidArgument, i, b.Add)
		}
	}
	if len(o.NotLike) > MaxNotLike {
		return fmt.Errorf("%w: %d not_like products, at most %d", ErrInvalidArgument, len(o.NotLike), MaxNotLike)
	}
	return nil
}

// checkEF checks an HNSW search breadth; 0 stands for the catalogue default.
func checkEF(ef int) error {
	if ef < 0 || ef > MaxEF {
		return fmt.Errorf("%w: ef is %d, must be 0..%d", ErrInvalidArgument, ef, MaxEF)
	}
	return nil
}

// admit is a compiled Filter over photo keys. It reads the metadata table under metaMu per
// call, because the index calls it while writers may be changing the table.
type admit struct {
	c *Catalog
	// filter is the declarative form, ExcludeIDs including the extra exclusions, for
	// backends that filter on their own stored properties.
	filter     Filter
	categories map[string]struct{}
	attributes map[string]string
	excluded   map[string]struct{}
	// excludedKeys, when keysOnly, are the excluded products' photo keys as they were when
	// the filter was compiled: a filter that only excludes products then needs no metadata
	// lookup (and no metaMu) per visited node. gather re-checks each result's entry.
	excludedKeys map[index.Key]struct{}
	keysOnly     bool
}

func (c *Catalog) compileFilter(f Filter, alsoExclude ...string) *admit {
	if f.empty() && len(alsoExclude) == 0 {
		return nil
	}
	a := &admit{c: c, attributes: f.Attributes, filter: Filter{
		Categories: f.Categories, Attributes: f.Attributes,
		ExcludeIDs: append(slices.Clip(f.ExcludeIDs), alsoExclude...),
	}}
	if len(f.Categories) > 0 {
		a.categories = make(map[string]struct{}, len(f.Categories))
		for _, cat := range f.Categories {
			a.categories[cat] = struct{}{}
		}
	}
	a.excluded = make(map[string]struct{}, len(f.ExcludeIDs)+len(alsoExclude))
	for _, id := range a.filter.ExcludeIDs {
		a.excluded[id] = struct{}{}
	}
	if a.categories == nil && len(a.attributes) == 0 {
		a.keysOnly = true
		a.excludedKeys = make(map[index.Key]struct{})
		c.metaMu.RLock()
		for id := range a.excluded {
			if e, ok := c.byID[id]; ok {
				for _, ph := range e.photos {
					a.excludedKeys[ph.key] = struct{}{}
				}
			}
		}
		c.metaMu.RUnlock()
	}
	return a
}

// entryOK decides on a product already read from the table.
func (a *admit) entryOK(e *entry) bool {
	if a == nil {
		return true
	}
	if _, ok := a.excluded[e.id]; ok {
		return false
	}
	if a.categories != nil {
		if _, ok := a.categories[e.category]; !ok {
			return false
		}
	}
	for k, v := range a.attributes {
		if got, ok := e.attributes[k]; !ok || got != v {
			return false
		}
	}
	return true
}

func (a *admit) key(k index.Key) bool {
	if a.keysOnly {
		_, out := a.excludedKeys[k]
		return !out
	}
	a.c.metaMu.RLock()
	e, ok := a.c.byKey[k]
	a.c.metaMu.RUnlock()
	return ok && a.entryOK(e)
}

// SearchByImage embeds a photo and returns the most alike products.
func (c *Catalog) SearchByImage(ctx context.Context, image []byte, opt SearchOptions) ([]Result, error) {
	if err := opt.validate(); err != nil {
		return nil, err
	}
	if len(image) == 0 {
		return nil, fmt.Errorf("%w: image is empty", ErrInvalidArgument)
	}
	if err := c.enter(); err != nil {
		return nil, err
	}
	defer c.life.RUnlock()
	vec, err := c.embedder.Embed(ctx, image)
	if err != nil {
		return nil, fmt.Errorf("catalog: embed query: %w", err)
	}
	return c.search(ctx, [][]float32{vec}, opt, c.compileFilter(opt.Filter, opt.NotLike...))
}

// SearchByID ("more like this") returns the products most like a stored one. Every photo
// of the product searches, and the results merge by product with the highest similarity
// any of them reached; the product itself is never among the results.
func (c *Catalog) SearchByID(ctx context.Context, id string, opt SearchOptions) ([]Result, error) {
	if err := opt.validate(); err != nil {
		return nil, err
	}
	if err := c.enter(); err != nil {
		return nil, err
	}
	defer c.life.RUnlock()
	_, queries, err := c.withVectors(ctx, id)
	if err != nil {
		return nil, err
	}
	return c.search(ctx, queries, opt, c.compileFilter(opt.Filter, append([]string{id}, opt.NotLike...)...))
}

// SearchByVector searches from a client-made embedding of the catalogue's dimension.
func (c *Catalog) SearchByVector(ctx context.Context, vec []float32, opt SearchOptions) ([]Result, error) {
	if err := opt.validate(); err != nil {
		return nil, err
	}
	if err := c.enter(); err != nil {
		return nil, err
	}
	defer c.life.RUnlock()
	q, err := normalise(vec, c.dim)
	if err != nil {
		return nil, err
	}
	return c.search(ctx, [][]float32{q}, opt, c.compileFilter(opt.Filter, opt.NotLike...))
}

// candidate is one product met by a search: its best photo and that photo's score.
type candidate struct {
	e     *entry
	key   index.Key
	score float32
	vec   []float32 // the matching photo's vector, fetched only when a ranking option needs it
}

// search finds products for one or more query vectors. It asks the graph for photos and
// merges them by product (max similarity) until it has enough products, searching deeper
// as needed, since several photos of one product can fill the candidate list; when a
// filter leaves it short although more products pass, it scores the admitted photos
// exactly. Then the ranking options apply.
func (c *Catalog) search(ctx context.Context, queries [][]float32, opt SearchOptions, a *admit) ([]Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if opt.Expand > 0 {
		var err error
		if queries, err = c.expand(ctx, queries, opt, a); err != nil {
			return nil, err
		}
	}
	// The ranking options drop or reorder candidates, so they start from a deeper pool.
	want := opt.K
	if opt.GroupBy != "" || len(opt.NotLike) > 0 || opt.Diversity > 0 || len(opt.Boosts) > 0 {
		want = min(MaxK, max(3*opt.K, opt.K+20))
	}
	minScore := opt.MinScore
	if minScore == 0 {
		// Proto3 cannot tell 0 from unset, and vectors from clients can score below 0.
		minScore = float32(math.Inf(-1))
	}
	_, exhaustive := c.backend.(exhaustiveFilter)
	var cands []candidate
	for {
		var err error
		if cands, err = c.gather(ctx, queries, want, opt, a); err != nil {
			return nil, err
		}
		if len(cands) < want && a != nil && !exhaustive {
			exact, err := c.exactScan(ctx, queries, a)
			if err != nil {
				return nil, err
			}
			if len(exact) > len(cands) {
				cands = exact
			}
		}
		pool := len(cands)
		// A product beyond the pool scores at most the pool's lowest similarity plus every
		// positive boost: while that could beat the K-th result, the pool is too shallow.
		reach := float32(math.Inf(-1))
		if len(opt.Boosts) > 0 && pool > 0 {
			reach = cands[pool-1].score + maxBoost(opt.Boosts)
			boost(cands, opt.Boosts)
		}
		cands = slices.DeleteFunc(cands, func(x candidate) bool { return x.score < minScore })
		if opt.GroupBy != "" {
			cands = groupBy(cands, opt.GroupBy)
		}
		if len(opt.NotLike) > 0 || opt.Diversity > 0 {
			if err := c.fetchVectors(ctx, cands); err != nil {
				return nil, err
			}
			cands = slices.DeleteFunc(cands, func(x candidate) bool { return x.vec == nil })
		}
		if len(opt.NotLike) > 0 {
			var err error
			if cands, err = c.dropNotLike(ctx, cands, opt.NotLike); err != nil {
				return nil, err
			}
		}
		// GroupBy and NotLike can drop more of the pool than its depth allowed for (many
		// near-identical photos of one group, or of one rejected look): search deeper while
		// too few are left and the pool stopped short of the catalogue.
		products := c.Len()
		outranked := len(cands) >= opt.K && cands[opt.K-1].score < reach
		if (len(cands) >= opt.K && !outranked) || pool < want || want >= products {
			break
		}
		want = min(4*want, products)
	}
	if opt.Diversity > 0 {
		cands = diversify(cands, opt.K, opt.Diversity)
	}
	if len(cands) > opt.K {
		cands = cands[:opt.K]
	}
	out := make([]Result, len(cands))
	for i, x := range cands {
		ph, _ := x.e.photo(x.key)
		out[i] = Result{Product: x.e.product(), Score: x.score, PhotoID: ph.id}
	}
	return out, nil
}

// maxPhotoFetch bounds how many photos one graph search asks for while gathering products.
const maxPhotoFetch = 8192

// gather asks the graph for ever more photos until want products are met or the graph has
// no more to give, and returns the products best first.
func (c *Catalog) gather(ctx context.Context, queries [][]float32, want int, opt SearchOptions, a *admit) ([]candidate, error) {
	// Start from as many photos as want products would have on average.
	c.metaMu.RLock()
	total := len(c.byKey)
	perProduct := (len(c.byKey) + len(c.byID) - 1) / max(len(c.byID), 1)
	c.metaMu.RUnlock()
	n := min(want*max(perProduct, 1), maxPhotoFetch)
	for {
		byProduct := make(map[*entry]candidate)
		for _, q := range queries {
			ns, err := c.searchPhotos(ctx, q, n, opt.EF, a)
			if err != nil {
				return nil, err
			}
			for _, nb := range ns {
				c.metaMu.RLock()
				e, ok := c.byKey[nb.Key]
				c.metaMu.RUnlock()
				if !ok || !a.entryOK(e) {
					continue // deleted since the search, or re-written under an excluded id
				}
				if old, seen := byProduct[e]; !seen || nb.Score > old.score {
					byProduct[e] = candidate{e: e, key: nb.Key, score: nb.Score}
				}
			}
		}
		if len(byProduct) >= want || n >= total || n >= maxPhotoFetch {
			return sortCandidates(byProduct), nil
		}
		n = min(4*n, maxPhotoFetch, max(total, 1))
	}
}

func sortCandidates(m map[*entry]candidate) []candidate {
	out := make([]candidate, 0, len(m))
	for _, x := range m {
		out = append(out, x)
	}
	slices.SortFunc(out, func(x, y candidate) int {
		if x.score != y.score {
			return cmp.Compare(y.score, x.score)
		}
		return cmp.Compare(x.e.id, y.e.id)
	})
	return out
}

func (c *Catalog) ef(requested int) int {
	if requested > 0 {
		return requested
	}
	return c.params.EFSearch
}

// exactScanLimit bounds the fallback scan: past it the graph search's answer stands, since
// copying that many vectors per query would cost more than the recall it could win.
const exactScanLimit = 20000

// exactScan scores every admitted photo; used only when the filter admits few.
func (c *Catalog) exactScan(ctx context.Context, queries [][]float32, a *admit) ([]candidate, error) {
	type photoOf struct {
		e   *entry
		key index.Key
	}
	c.metaMu.RLock()
	var photos []photoOf
	for key, e := range c.byKey {
		if a.entryOK(e) {
			photos = append(photos, photoOf{e, key})
			if len(photos) > exactScanLimit {
				c.metaMu.RUnlock()
				return nil, nil
			}
		}
	}
	c.metaMu.RUnlock()
	keys := make([]index.Key, len(photos))
	for i, p := range photos {
		keys[i] = p.key
	}
	vecs, err := c.backend.Vectors(ctx, keys)
	if err != nil {
		return nil, fmt.Errorf("catalog: read vectors: %w", err)
	}
	byProduct := make(map[*entry]candidate)
	for i, p := range photos {
		vec := vecs[i]
		if vec == nil {
			continue
		}
		for _, q := range queries {
			s := dot(q, vec)
			if old, seen := byProduct[p.e]; !seen || s > old.score || (s == old.score && p.key < old.key) {
				byProduct[p.e] = candidate{e: p.e, key: p.key, score: s}
			}
		}
	}
	return sortCandidates(byProduct), nil
}

func dot(a, b []float32) float32 {
	var s float32
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

// boost adds the boosts to the candidates' scores and re-sorts them.
func boost(cands []candidate, boosts []Boost) {
	for i := range cands {
		for _, b := range boosts {
			if v, ok := cands[i].e.attributes[b.Attribute]; ok && v == b.Value {
				cands[i].score += b.Add
			}
		}
	}
	slices.SortStableFunc(cands, func(x, y candidate) int { return cmp.Compare(y.score, x.score) })
}

// maxBoost is the most a product can gain from the boosts.
func maxBoost(boosts []Boost) float32 {
	var m float32
	for _, b := range boosts {
		m += max(b.Add, 0)
	}
	return m
}

// groupBy keeps the best candidate of each value of the attribute (cands are best first).
func groupBy(cands []candidate, attr string) []candidate {
	seen := make(map[string]bool)
	return slices.DeleteFunc(cands, func(x candidate) bool {
		v, ok := x.e.attributes[attr]
		if !ok {
			return false
		}
		if seen[v] {
			return true
		}
		seen[v] = true
		return false
	})
}

// fetchVectors fills in the candidates' matching photo vectors (nil for a photo deleted
// meanwhile).
func (c *Catalog) fetchVectors(ctx context.Context, cands []candidate) error {
	keys := make([]index.Key, len(cands))
	for i := range cands {
		keys[i] = cands[i].key
	}
	vecs, err := c.backend.Vectors(ctx, keys)
	if err != nil {
		return fmt.Errorf("catalog: read vectors: %w", err)
	}
	for i := range cands {
		cands[i].vec = vecs[i]
	}
	return nil
}

// dropNotLike drops the candidates whose matching photo is at least as close to a photo of
// a rejected product as to the query.
func (c *Catalog) dropNotLike(ctx context.Context, cands []candidate, notLike []string) ([]candidate, error) {
	var keys []index.Key
	for _, id := range notLike {
		e, ok := c.lookup(id)
		if !ok {
			continue // an unknown id rejects nothing
		}
		for _, ph := range e.photos {
			keys = append(keys, ph.key)
		}
	}
	vecs, err := c.backend.Vectors(ctx, keys)
	if err != nil {
		return nil, fmt.Errorf("catalog: read vectors: %w", err)
	}
	rejected := slices.DeleteFunc(vecs, func(v []float32) bool { return v == nil })
	return slices.DeleteFunc(cands, func(x candidate) bool {
		for _, r := range rejected {
			if dot(x.vec, r) >= x.score {
				return true
			}
		}
		return false
	}), nil
}

// diversify re-ranks cands (best first, vectors filled in) by maximal marginal relevance
// and returns the first k.
func diversify(cands []candidate, k int, lambda float32) []candidate {
	out := make([]candidate, 0, min(k, len(cands)))
	// closest[i] is candidate i's highest similarity to a chosen result so far.
	closest := make([]float32, len(cands))
	for i := range closest {
		closest[i] = float32(math.Inf(-1))
	}
	used := make([]bool, len(cands))
	for len(out) < k && len(out) < len(cands) {
		best, bestValue := -1, float32(math.Inf(-1))
		for i, x := range cands {
			if used[i] {
				continue
			}
			value := (1 - lambda) * x.score
			if len(out) > 0 {
				value -= lambda * closest[i]
			}
			if value > bestValue {
				best, bestValue = i, value
			}
		}
		used[best] = true
		chosen := cands[best]
		out = append(out, chosen)
		for i, x := range cands {
			if !used[i] {
				closest[i] = max(closest[i], dot(x.vec, chosen.vec))
			}
		}
	}
	return out
}
