package catalog

import "lookalike/index"

// emb is the catalogue's embedded backend, for tests that look at the store or the graph.
func (c *Catalog) emb() *Embedded { return c.backend.(*Embedded) }

// fn is the admit function a backend search gets (nil admits everything).
func (a *admit) fn() func(index.Key) bool {
	if a == nil {
		return nil
	}
	return a.key
}
