package catalog

import (
	"context"
	"time"

	"lookalike/index"
)

// Stats describes the catalogue, the model and the index.
type Stats struct {
	// Count is the number of products, Photos the number of their photos (graph keys).
	Count  int
	Photos int
	// KeptPhotos and KeptBytes count the kept photo copies and their size.
	KeptPhotos int
	KeptBytes  int64
	// Policy is the duplicate policy in force; Decisions counts recorded decisions.
	Policy    Policy
	Decisions int
	// CountByCategory counts products per category.
	CountByCategory map[string]int
	// ModelIdentity and Dim name the model the catalogue's vectors come from.
	ModelIdentity string
	Dim           int
	// Backend names the backend holding the catalogue ("embedded", "weaviate").
	Backend string
	// Index describes the embedded graph (the configured parameters for other backends).
	Index IndexStats
	// StoreSeq is the embedded store's sequence number (0 for other backends).
	StoreSeq uint64
	// SnapshotSeq is the store seq covered by the last saved or loaded graph snapshot, and
	// SnapshotTime when that was; zero if none (or not the embedded backend).
	SnapshotSeq  uint64
	SnapshotTime time.Time
}

// IndexStats are the graph's parameters and size.
type IndexStats struct {
	M              int
	EFConstruction int
	EFSearch       int
	Metric         string
	// Size counts the photos in the graph.
	Size int
	// CatchingUp counts the photos whose latest state the embedded graph does not hold yet,
	// while it catches up with the store after a start: searches score those exactly, so
	// they cost more until it reaches 0.
	CatchingUp int
}

// Stats reports the catalogue's current state.
func (c *Catalog) Stats(ctx context.Context) (Stats, error) {
	if err := c.enter(); err != nil {
		return Stats{}, err
	}
	defer c.life.RUnlock()
	s := Stats{
		ModelIdentity: c.embedder.Identity(), Dim: c.dim, Backend: c.backend.Name(),
		Index: IndexStats{
			M: c.params.M, EFConstruction: c.params.EFConstruction, EFSearch: c.params.EFSearch,
			Metric: index.InnerProduct.String(),
		},
	}
	g, hasGraph := c.backend.(interface{ Graph() *index.HNSW })
	if hasGraph {
		gc := g.Graph().Config()
		s.Index.M, s.Index.EFConstruction, s.Index.Size = gc.M, gc.EFConstruction, g.Graph().Len()
	}
	if cu, ok := c.backend.(interface{ CatchingUp() int }); ok {
		s.Index.CatchingUp = cu.CatchingUp()
	}
	if sn, ok := c.backend.(snapshotter); ok {
		s.StoreSeq, s.SnapshotSeq, s.SnapshotTime = sn.SnapshotState()
	}
	c.metaMu.RLock()
	if !hasGraph {
		s.Index.Size = len(c.byKey) // other backends hold one vector per photo too
	}
	s.Count, s.Photos = len(c.byID), len(c.byKey)
	s.CountByCategory = make(map[string]int)
	for _, e := range c.byID {
		s.CountByCategory[e.category]++
	}
	for _, e := range c.byID {
		for _, ph := range e.photos {
			if ph.keptBytes > 0 {
				s.KeptPhotos++
				s.KeptBytes += int64(ph.keptBytes)
			}
		}
	}
	c.metaMu.RUnlock()
	var err error
	if s.Policy, err = c.policy(ctx); err != nil {
		return Stats{}, err
	}
	ds, err := c.decisions(ctx)
	if err != nil {
		return Stats{}, err
	}
	s.Decisions = len(ds)
	return s, ctx.Err()
}
