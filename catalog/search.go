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

// SearchOptions tunes a search.
type SearchOptions struct {
	K        int     // 1..MaxK results at most
	Filter   Filter  // which products may be returned
	MinScore float32 // results below this cosine similarity are dropped; 0 means no minimum
	EF       int     // HNSW candidate list size; 0 means the catalogue default
}

// Result is one ranked product.
type Result struct {
	Product Product
	Score   float32 // cosine similarity, higher is closer
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
	return nil
}

// checkEF checks an HNSW search breadth; 0 stands for the catalogue default.
func checkEF(ef int) error {
	if ef < 0 || ef > MaxEF {
		return fmt.Errorf("%w: ef is %d, must be 0..%d", ErrInvalidArgument, ef, MaxEF)
	}
	return nil
}

// admit is a compiled Filter. It reads the metadata table under metaMu per call, because the
// index calls it while writers may be changing the table.
type admit struct {
	c          *Catalog
	categories map[string]struct{}
	attributes map[string]string
	excluded   map[index.Key]struct{}
}

func (c *Catalog) compileFilter(f Filter, alsoExclude ...index.Key) *admit {
	if f.empty() && len(alsoExclude) == 0 {
		return nil
	}
	a := &admit{c: c, attributes: f.Attributes}
	if len(f.Categories) > 0 {
		a.categories = make(map[string]struct{}, len(f.Categories))
		for _, cat := range f.Categories {
			a.categories[cat] = struct{}{}
		}
	}
	a.excluded = make(map[index.Key]struct{}, len(f.ExcludeIDs)+len(alsoExclude))
	for _, k := range alsoExclude {
		a.excluded[k] = struct{}{}
	}
	for _, id := range f.ExcludeIDs {
		if k, ok := c.keyOf(id); ok {
			a.excluded[k] = struct{}{}
		}
	}
	return a
}

// entryOK decides on an entry already read from the table.
func (a *admit) entryOK(e *entry) bool {
	if _, ok := a.excluded[e.key]; ok {
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
	a.c.metaMu.RLock()
	e, ok := a.c.byKey[k]
	a.c.metaMu.RUnlock()
	return ok && a.entryOK(e)
}

func (a *admit) fn() func(index.Key) bool {
	if a == nil {
		return nil
	}
	return a.key
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
	return c.search(ctx, vec, opt, c.compileFilter(opt.Filter))
}

// SearchByID returns the products most like a stored one, from its stored vector; the
// product itself is never among the results.
func (c *Catalog) SearchByID(ctx context.Context, id string, opt SearchOptions) ([]Result, error) {
	if err := opt.validate(); err != nil {
		return nil, err
	}
	if err := c.enter(); err != nil {
		return nil, err
	}
	defer c.life.RUnlock()
	key, ok := c.keyOf(id)
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	vec, ok := c.graph.Vector(key)
	if !ok {
		return nil, fmt.Errorf("%w: %q was deleted meanwhile", ErrNotFound, id)
	}
	return c.search(ctx, vec, opt, c.compileFilter(opt.Filter, key))
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
	return c.search(ctx, q, opt, c.compileFilter(opt.Filter))
}

// search runs the graph search and turns keys into products. When a filter leaves the graph
// search short of k results although more products pass the filter (a selective filter can
// starve the candidate list), it falls back to an exact scan over the admitted products.
func (c *Catalog) search(ctx context.Context, q []float32, opt SearchOptions, a *admit) ([]Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ns := c.graph.Search(q, opt.K, index.SearchOptions{EF: c.ef(opt.EF), Filter: a.fn()})
	if a != nil && len(ns) < opt.K {
		if exact := c.exactScan(q, opt.K, a); len(exact) > len(ns) {
			ns = exact
		}
	}
	minScore := opt.MinScore
	if minScore == 0 {
		// Proto3 cannot tell 0 from unset, and vectors from clients can score below 0.
		minScore = float32(math.Inf(-1))
	}
	return c.results(ns, minScore), nil
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

// exactScan scores every admitted product; used only when the filter admits few.
func (c *Catalog) exactScan(q []float32, k int, a *admit) []index.Neighbor {
	c.metaMu.RLock()
	keys := make([]index.Key, 0, 64)
	for key, e := range c.byKey {
		if a.entryOK(e) {
			keys = append(keys, key)
			if len(keys) > exactScanLimit {
				c.metaMu.RUnlock()
				return nil
			}
		}
	}
	c.metaMu.RUnlock()
	ns := make([]index.Neighbor, 0, len(keys))
	for _, key := range keys {
		vec, ok := c.graph.Vector(key)
		if !ok {
			continue
		}
		var dot float32
		for i := range q {
			dot += q[i] * vec[i]
		}
		ns = append(ns, index.Neighbor{Key: key, Score: dot})
	}
	slices.SortFunc(ns, func(x, y index.Neighbor) int {
		switch {
		case x.Score > y.Score:
			return -1
		case x.Score < y.Score:
			return 1
		}
		return cmp.Compare(x.Key, y.Key)
	})
	if len(ns) > k {
		ns = ns[:k]
	}
	return ns
}

// results turns neighbours into products, dropping those below minScore and any deleted
// since the search.
func (c *Catalog) results(ns []index.Neighbor, minScore float32) []Result {
	out := make([]Result, 0, len(ns))
	c.metaMu.RLock()
	defer c.metaMu.RUnlock()
	for _, n := range ns {
		if n.Score < minScore {
			continue
		}
		e, ok := c.byKey[n.Key]
		if !ok {
			continue
		}
		out = append(out, Result{Product: e.product(), Score: n.Score})
	}
	return out
}
