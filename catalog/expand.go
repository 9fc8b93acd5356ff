package catalog

import (
	"context"
	"fmt"
	"math"

	"lookalike/index"
)

// expand rewrites each query as L2(q + sum of w_i v_i) over the opt.Expand photos it finds
// first, w_i = max(s_i, 0)^opt.ExpandAlpha: the photos most like the query pull it towards
// what they have in common, so a second search reaches photos of the same thing that the
// query alone ranked too low (query expansion, as in instance retrieval).
func (c *Catalog) expand(ctx context.Context, queries [][]float32, opt SearchOptions, a *admit) ([][]float32, error) {
	out := make([][]float32, len(queries))
	for qi, q := range queries {
		ns, err := c.searchPhotos(ctx, q, opt.Expand, opt.EF, a)
		if err != nil {
			return nil, err
		}
		keys := make([]index.Key, len(ns))
		for i, nb := range ns {
			keys[i] = nb.Key
		}
		vecs, err := c.backend.Vectors(ctx, keys)
		if err != nil {
			return nil, fmt.Errorf("catalog: read vectors: %w", err)
		}
		sum := make([]float64, len(q))
		for i, x := range q {
			sum[i] = float64(x)
		}
		for i, v := range vecs {
			if v == nil {
				continue // deleted since the search
			}
			w := 1.0
			if opt.ExpandAlpha > 0 {
				w = math.Pow(math.Max(float64(ns[i].Score), 0), float64(opt.ExpandAlpha))
			}
			for d, x := range v {
				sum[d] += w * float64(x)
			}
		}
		e := make([]float32, len(sum))
		for d, x := range sum {
			e[d] = float32(x)
		}
		if out[qi], err = normalise(e, len(q)); err != nil {
			out[qi] = q // the photos cancel the query out: search with it as it was
		}
	}
	return out, nil
}
