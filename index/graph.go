package index

import (
	"math"
	"slices"
)

// Node data lives in fixed-size blocks of flat arrays indexed by an internal node id, so that
// growing the graph never copies the vectors already stored and never leaves half of a doubled
// slice unused.
const (
	blockShift = 12
	blockSize  = 1 << blockShift
	blockMask  = blockSize - 1
	// maxLevelCap caps the random level; with M >= 2 a level above 31 has probability < 2^-31.
	maxLevelCap = 31
)

// graph is the HNSW structure itself. It has no locks: HNSW decides who may read and write it.
type graph struct {
	dim     int
	l2      bool
	m       int // links per node above layer 0
	m0      int // links per node on layer 0 (2M, as in the paper and hnswlib)
	stride0 int // 1 + m0: a count followed by the links
	strideU int // 1 + m

	vecs   [][]float32 // blocks of blockSize*dim
	links0 [][]uint32  // blocks of blockSize*stride0
	upper  [][]uint32  // per node: levels 1..level, strideU each; nil for level-0 nodes

	keys    []Key
	levels  []uint8
	deleted []bool

	n          int // nodes, live and tombstoned
	tombstones int
	entry      uint32
	maxLevel   int // -1 while empty
	byKey      map[Key]uint32
}

func newGraph(dim int, metric Metric, m int) *graph {
	return &graph{
		dim:      dim,
		l2:       metric == L2,
		m:        m,
		m0:       2 * m,
		stride0:  1 + 2*m,
		strideU:  1 + m,
		maxLevel: -1,
		byKey:    make(map[Key]uint32),
	}
}

func (g *graph) vec(node uint32) []float32 {
	off := int(node&blockMask) * g.dim
	return g.vecs[node>>blockShift][off : off+g.dim : off+g.dim]
}

// links returns node's neighbour list on level lvl. The slice aliases the graph.
func (g *graph) links(node uint32, lvl int) []uint32 {
	if lvl == 0 {
		block := g.links0[node>>blockShift]
		off := int(node&blockMask) * g.stride0
		return block[off+1 : off+1+int(block[off])]
	}
	u := g.upper[node]
	off := (lvl - 1) * g.strideU
	return u[off+1 : off+1+int(u[off])]
}

// setLinks overwrites node's level-lvl list; the caller holds the write lock.
func (g *graph) setLinks(node uint32, lvl int, ids []uint32) {
	var slot []uint32
	if lvl == 0 {
		block := g.links0[node>>blockShift]
		off := int(node&blockMask) * g.stride0
		slot = block[off : off+g.stride0]
	} else {
		off := (lvl - 1) * g.strideU
		slot = g.upper[node][off : off+g.strideU]
	}
	slot[0] = uint32(len(ids))
	copy(slot[1:], ids)
}

func (g *graph) maxLinks(lvl int) int {
	if lvl == 0 {
		return g.m0
	}
	return g.m
}

func (g *graph) dist(q []float32, node uint32) float32 {
	return distance(g.l2, q, g.vec(node))
}

// greedyDescend walks from the entry point down to level stop+1 taking the closest neighbour
// at each step (ef = 1), returning the closest node found and its distance. Tombstones count:
// they still route.
func (g *graph) greedyDescend(q []float32, stop int) (uint32, float32) {
	cur := g.entry
	curDist := g.dist(q, cur)
	for lvl := g.maxLevel; lvl > stop; lvl-- {
		for changed := true; changed; {
			changed = false
			for _, nb := range g.links(cur, lvl) {
				if d := g.dist(q, nb); d < curDist {
					cur, curDist, changed = nb, d, true
				}
			}
		}
	}
	return cur, curDist
}

// searchLayer is the beam search of the HNSW paper (hnswlib's searchBaseLayerST): it leaves
// the best ef admitted nodes in s.res. A node is admitted when admitAll is set (construction,
// where tombstones are fine link targets), or when it is live and passes filter. Nodes that
// are not admitted are still expanded, so deleted or filtered-out regions are walked through.
// When some nodes may be refused, the walk does not stop before ef results are held (the
// bound is infinite until then): that is what widens a filtered search adaptively.
func (g *graph) searchLayer(s *scratch, q []float32, ep uint32, epDist float32, lvl, ef int,
	admitAll bool, filter func(Key) bool) {
	s.newEpoch(g.n)
	visited := s.visited
	epoch := s.epoch
	cand, res := &s.cand, &s.res
	cand.reset()
	res.reset()

	strict := !admitAll && (filter != nil || g.tombstones > 0)
	lower := float32(math.Inf(1))
	visited[ep] = epoch
	cand.push(candidate{epDist, ep})
	if g.admit(ep, admitAll, filter) {
		res.push(candidate{epDist, ep})
		lower = epDist
	}

	l2 := g.l2
	dim := g.dim
	for cand.len() > 0 {
		c := cand.top()
		if c.dist > lower && (res.len() >= ef || !strict) {
			break
		}
		cand.pop()

		// links, vec, distance and admit are written out by hand below, specialised to this
		// call's level and metric: this loop is where a search spends its time.
		var nbs []uint32
		if lvl == 0 {
			block := g.links0[c.node>>blockShift]
			off := int(c.node&blockMask) * g.stride0
			nbs = block[off+1 : off+1+int(block[off])]
		} else {
			nbs = g.links(c.node, lvl)
		}
		for _, nb := range nbs {
			if visited[nb] == epoch {
				continue
			}
			visited[nb] = epoch
			off := int(nb&blockMask) * dim
			v := g.vecs[nb>>blockShift][off : off+dim : off+dim]
			var d float32
			if l2 {
				d = l2sq(q, v)
			} else {
				d = -dot(q, v)
			}
			if res.len() < ef || d < lower {
				cand.push(candidate{d, nb})
				if admitAll || (!g.deleted[nb] && (filter == nil || filter(g.keys[nb]))) {
					res.push(candidate{d, nb})
					if res.len() > ef {
						res.pop()
					}
					lower = res.top().dist
				}
			}
		}
	}
}

func (g *graph) admit(node uint32, admitAll bool, filter func(Key) bool) bool {
	if admitAll {
		return true
	}
	return !g.deleted[node] && (filter == nil || filter(g.keys[node]))
}

// selectNeighbors applies the paper's heuristic (hnswlib's getNeighborsByHeuristic2) to
// candidates sorted closest first: a candidate is kept only if it is closer to the base than
// to every neighbour already kept, which spreads links across directions instead of
// clustering them. With fewer than m candidates all are kept.
func (g *graph) selectNeighbors(sorted []candidate, m int, dst []candidate) []candidate {
	dst = dst[:0]
	if len(sorted) <= m {
		return append(dst, sorted...)
	}
	for _, c := range sorted {
		if len(dst) >= m {
			break
		}
		cv := g.vec(c.node)
		good := true
		for _, s := range dst {
			if distance(g.l2, cv, g.vec(s.node)) < c.dist {
				good = false
				break
			}
		}
		if good {
			dst = append(dst, c)
		}
	}
	return dst
}

func sortCandidates(c []candidate) {
	slices.SortFunc(c, func(a, b candidate) int {
		switch {
		case a.dist < b.dist:
			return -1
		case a.dist > b.dist:
			return 1
		default:
			return int(a.node) - int(b.node)
		}
	})
}
