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
	Policy          Policy
	Decisions       int
	CountByCategory map[string]int
	ModelIdentity   string
	Dim             int
	Index           IndexStats
	StoreSeq        uint64
	SnapshotSeq     uint64    // store seq covered by the last saved or loaded snapshot; 0 if none
	SnapshotTime    time.Time // zero if none
}

// IndexStats are the graph's parameters and size.
type IndexStats struct {
	M              int
	EFConstruction int
	EFSearch       int
	Metric         string
	Size           int
}

// Stats reports the catalogue's current state.
func (c *Catalog) Stats(ctx context.Context) (Stats, error) {
	if err := c.enter(); err != nil {
		return Stats{}, err
	}
	defer c.life.RUnlock()
	gc := c.graph.Config()
	s := Stats{
		ModelIdentity: c.embedder.Identity(), Dim: c.dim,
		Index: IndexStats{
			M: gc.M, EFConstruction: gc.EFConstruction, EFSearch: c.params.EFSearch,
			Metric: index.InnerProduct.String(), Size: c.graph.Len(),
		},
		StoreSeq: c.store.Seq(),
	}
	c.metaMu.RLock()
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
	c.snapInfoMu.Lock()
	s.SnapshotSeq, s.SnapshotTime = c.snapshotSeq, c.snapshotTime
	c.snapInfoMu.Unlock()
	var err error
	if s.Policy, err = c.policy(); err != nil {
		return Stats{}, err
	}
	ds, err := c.decisions()
	if err != nil {
		return Stats{}, err
	}
	s.Decisions = len(ds)
	return s, ctx.Err()
}
