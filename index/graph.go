package index

import (
	"math"
	"slices"
	"unsafe"
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
	// cacheLine is the unit elements are aligned to and prefetched in.
	cacheLine = 64
)

// layout places one node's level-0 element: its vector (float32, or int8 codes padded to a
// whole number of cache lines), for codes two float32 terms of the dequantised vector, then
// the layer-0 links (a count and 2M ids). Keeping a node's links beside its vector, as
// hnswlib's level-0 block does, means an expanded node costs no second, distant memory
// access, and aligning elements to cache lines keeps every vector load within as few lines
// as its length allows.
type layout struct {
	vecBytes int // 4*dim, or codeLen for codes
	scalOff  int // codes only: ||x^||^2 then x^.offset, float32 each
	linksOff int
	elemSize int // a multiple of cacheLine
}

func newLayout(dim, m0 int, codes bool) layout {
	var l layout
	if codes {
		l.vecBytes = codeLen(dim)
		l.scalOff = l.vecBytes
		l.linksOff = l.vecBytes + 8
	} else {
		l.vecBytes = 4 * dim
		l.linksOff = l.vecBytes
	}
	l.elemSize = roundUp(l.linksOff+4*(1+m0), cacheLine)
	return l
}

func roundUp(n, to int) int { return (n + to - 1) / to * to }

// vecLines is how many cache lines of a neighbour's element the search loop prefetches: its
// whole vector, up to a cap past which the hardware prefetcher has long picked up the stream.
func (l layout) vecLines() int { return min((l.vecBytes+cacheLine-1)/cacheLine, 24) }

// graph is the HNSW structure itself. It has no locks: HNSW decides who may read and write it.
type graph struct {
	dim     int
	l2      bool
	m       int // links per node above layer 0
	m0      int // links per node on layer 0 (2M, as in the paper and hnswlib)
	stride0 int // 1 + m0: a count followed by the links
	strideU int // 1 + m
	lay     layout

	// codes is set when elements hold int8 codes (Config.Quantize == QuantizeInt8); quant is
	// nil until the quantiser has been trained, and until then distances use full vectors.
	codes bool
	quant *quantizer
	// full holds the float32 vectors outside the elements (blocks of blockSize*dim) when
	// elements hold codes: for Vector, re-ranking, compaction and snapshots. It is nil once
	// trained when src supplies the vectors instead.
	full [][]float32
	src  func(Key) []float32

	elems [][]byte   // blocks of lay.elemSize-byte elements, cache-line aligned (see grow)
	upper [][]uint32 // per node: levels 1..level, strideU each; nil for level-0 nodes

	keys    []Key
	levels  []uint8
	deleted []bool

	n          int // nodes, live and tombstoned
	tombstones int
	entry      uint32
	maxLevel   int // -1 while empty
	byKey      map[Key]uint32

	// noPrefetch turns the search loop's software prefetches off; tests use it to show that
	// they never change a result.
	noPrefetch bool
	// trainer, when set, fits the quantiser instead of trainQuantizer (the benchmark that
	// compares quantisers sets it); trainAt is the node count that triggers the fit.
	trainer func(sample [][]float32, dim int) *quantizer
	trainAt int
}

func newGraph(dim int, cfg Config) *graph {
	codes := cfg.Quantize == QuantizeInt8
	g := &graph{
		dim:      dim,
		l2:       cfg.Metric == L2,
		m:        cfg.M,
		m0:       2 * cfg.M,
		stride0:  1 + 2*cfg.M,
		strideU:  1 + cfg.M,
		lay:      newLayout(dim, 2*cfg.M, codes),
		codes:    codes,
		src:      cfg.Vectors,
		trainAt:  quantTrainSize,
		maxLevel: -1,
		byKey:    make(map[Key]uint32),
	}
	return g
}

// firstBlockRows is the size a graph's first block starts at; it doubles up to blockSize as
// nodes arrive, so that a small index (or a damaged snapshot header) costs little memory.
const firstBlockRows = 16

// newElemBlock allocates a block of rows elements starting on a cache line.
func (g *graph) newElemBlock(rows int) []byte {
	size := rows * g.lay.elemSize
	raw := make([]byte, size+cacheLine)
	skip := int(-uintptr(unsafe.Pointer(unsafe.SliceData(raw))) & (cacheLine - 1))
	return raw[skip : skip+size : skip+size]
}

// hasRoom reports whether node's slot is allocated.
func (g *graph) hasRoom(node uint32) bool {
	b := int(node >> blockShift)
	return b < len(g.elems) && len(g.elems[b]) >= (int(node&blockMask)+1)*g.lay.elemSize
}

// grow makes room for node g.n: it doubles a short last block (copying it) or adds a full
// one. The caller holds the write lock.
func (g *graph) grow() {
	if last := len(g.elems) - 1; last >= 0 && len(g.elems[last]) < blockSize*g.lay.elemSize {
		rows := min(blockSize, 2*len(g.elems[last])/g.lay.elemSize)
		g.resizeBlock(last, rows)
		return
	}
	rows := blockSize
	if len(g.elems) == 0 {
		rows = firstBlockRows
	}
	g.elems = append(g.elems, g.newElemBlock(rows))
	if g.keepsFull() {
		g.full = append(g.full, make([]float32, rows*g.dim))
	}
}

// resizeBlock replaces block b (and its full-vector block) by one of rows elements holding
// the same nodes.
func (g *graph) resizeBlock(b, rows int) {
	blk := g.newElemBlock(rows)
	copy(blk, g.elems[b])
	g.elems[b] = blk
	if b < len(g.full) {
		f := make([]float32, rows*g.dim)
		copy(f, g.full[b])
		g.full[b] = f
	}
}

// keepsFull reports whether full vectors are stored outside the elements: always for codes
// without a vector source, and for codes with one until the quantiser is trained on them.
func (g *graph) keepsFull() bool { return g.codes && (g.src == nil || g.quant == nil) }

// elem returns a pointer to node's level-0 element.
func (g *graph) elem(node uint32) unsafe.Pointer {
	blk := g.elems[node>>blockShift]
	return unsafe.Add(unsafe.Pointer(unsafe.SliceData(blk)), int(node&blockMask)*g.lay.elemSize)
}

// fvec is the float32 vector held in node's element (no codes).
func (g *graph) fvec(node uint32) []float32 {
	return unsafe.Slice((*float32)(g.elem(node)), g.dim)
}

// codesOf is node's int8 code vector, codeLen bytes.
func (g *graph) codesOf(node uint32) []byte {
	return unsafe.Slice((*byte)(g.elem(node)), g.lay.vecBytes)
}

// scalars are node's ||x^||^2 and x^.offset, stored beside its codes.
func (g *graph) scalars(node uint32) *[2]float32 {
	return (*[2]float32)(unsafe.Add(g.elem(node), g.lay.scalOff))
}

// fullVec returns node's float32 vector: from its element, the full-vector blocks, or the
// caller's source; nil when the source no longer has it.
func (g *graph) fullVec(node uint32) []float32 {
	switch {
	case !g.codes:
		return g.fvec(node)
	case g.full != nil:
		off := int(node&blockMask) * g.dim
		return g.full[node>>blockShift][off : off+g.dim : off+g.dim]
	default:
		v := g.src(g.keys[node])
		if len(v) != g.dim {
			return nil
		}
		return v
	}
}

// links0Slot is node's whole layer-0 slot: the count, then room for m0 ids.
func (g *graph) links0Slot(node uint32) []uint32 {
	return unsafe.Slice((*uint32)(unsafe.Add(g.elem(node), g.lay.linksOff)), g.stride0)
}

// links returns node's neighbour list on level lvl. The slice aliases the graph.
func (g *graph) links(node uint32, lvl int) []uint32 {
	if lvl == 0 {
		slot := g.links0Slot(node)
		return slot[1 : 1+slot[0]]
	}
	u := g.upper[node]
	off := (lvl - 1) * g.strideU
	return u[off+1 : off+1+int(u[off])]
}

// setLinks overwrites node's level-lvl list; the caller holds the write lock.
func (g *graph) setLinks(node uint32, lvl int, ids []uint32) {
	var slot []uint32
	if lvl == 0 {
		slot = g.links0Slot(node)
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

// store writes vec into node's slot (element, full-vector block, codes); no reader can reach
// the node yet, so it needs no lock.
func (g *graph) store(node uint32, vec []float32) {
	if !g.codes {
		copy(g.fvec(node), vec)
		return
	}
	if g.full != nil {
		off := int(node&blockMask) * g.dim
		copy(g.full[node>>blockShift][off:off+g.dim], vec)
	}
	if g.quant != nil {
		nn, xo := g.quant.encode(vec, g.codesOf(node))
		*g.scalars(node) = [2]float32{nn, xo}
	}
}

// train fits the quantiser to the first nodes' vectors and encodes every node; the caller
// holds the write lock.
func (g *graph) train() {
	sample := make([][]float32, 0, g.n)
	for node := range g.n {
		sample = append(sample, g.fullVec(uint32(node)))
	}
	if g.trainer != nil {
		g.setQuantizer(g.trainer(sample, g.dim))
		return
	}
	g.setQuantizer(trainQuantizer(sample, g.dim, quantMargin))
}

// setQuantizer installs q and encodes every node with it, dropping the full-vector blocks
// when a source supplies the vectors from now on.
func (g *graph) setQuantizer(q *quantizer) {
	g.quant = q
	for node := range g.n {
		v := g.fullVec(uint32(node))
		nn, xo := q.encode(v, g.codesOf(uint32(node)))
		*g.scalars(uint32(node)) = [2]float32{nn, xo}
	}
	if g.src != nil {
		g.full = nil
	}
}

// prepared is a query made ready for one graph: the float32 vector itself for float
// elements (and codes before training), or the int16 weights and terms the code distance
// needs (see quantizer).
type prepared struct {
	f         []float32
	w         []int16
	alpha     float32
	qo, qq    float32
	quantized bool
}

// prepare readies q for this graph, using p's buffers.
func (g *graph) prepare(p *prepared, q []float32) {
	p.f = q
	p.quantized = g.quant != nil
	if p.quantized {
		g.quant.prepareQuery(p, q)
	}
}

// prepareNode readies node's own vector as a query (the neighbour selection's distances
// between stored nodes). With codes it reads only the node's element.
func (g *graph) prepareNode(p *prepared, node uint32) {
	if g.quant == nil {
		p.f, p.quantized = g.fullVec(node), false
		return
	}
	p.quantized = true
	g.quant.prepareNode(p, g.codesOf(node), g.scalars(node))
}

// pdist is the lower-is-closer distance from a prepared query to node.
func (g *graph) pdist(p *prepared, node uint32) float32 {
	if p.quantized {
		return g.codeDist(p, node)
	}
	if g.codes {
		return distance(g.l2, p.f, g.fullVec(node))
	}
	return distance(g.l2, p.f, g.fvec(node))
}

// codeDist is the distance from a quantised query to node's codes: the inner product with
// the dequantised vector is qo + alpha*sum(w*codes), and the squared L2 distance follows from
// it and the two squared norms.
func (g *graph) codeDist(p *prepared, node uint32) float32 {
	el := g.elem(node)
	s := dotCodes(p.w, unsafe.Slice((*byte)(el), len(p.w)))
	xo := p.qo + p.alpha*s
	if g.l2 {
		nn := *(*float32)(unsafe.Add(el, g.lay.scalOff))
		return p.qq + nn - 2*xo
	}
	return -xo
}

// greedyDescend walks from the entry point down to level stop+1 taking the closest neighbour
// at each step (ef = 1), returning the closest node found and its distance. Tombstones count:
// they still route. Each node's neighbours are prefetched together, as in searchLayer.
func (g *graph) greedyDescend(s *scratch, p *prepared, stop int) (uint32, float32) {
	cur := g.entry
	curDist := g.pdist(p, cur)
	prefetch := !g.noPrefetch && (!g.codes || p.quantized)
	for lvl := g.maxLevel; lvl > stop; lvl-- {
		for changed := true; changed; {
			changed = false
			nbs := g.links(cur, lvl)
			if prefetch {
				ptrs := s.batchPtrs[:0]
				for _, nb := range nbs {
					ptrs = append(ptrs, g.elem(nb))
				}
				prefetchLines(ptrs, g.lay.vecLines())
				s.batchPtrs = ptrs
			}
			for _, nb := range nbs {
				if d := g.pdist(p, nb); d < curDist {
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
func (g *graph) searchLayer(s *scratch, p *prepared, ep uint32, epDist float32, lvl, ef int,
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

	// The layer-0 loop below is where a search spends its time, so element access, the
	// distance and admit are written out by hand there, specialised to the element kind.
	hot := lvl == 0 && (!g.codes || p.quantized)
	// With codes, a search (not an insertion) also keeps the best `spill` nodes the walk
	// scored outside its ef results, for the re-rank: code distances put the boundary of the
	// ef best slightly off, and the true k best may sit just past it.
	spill := 0
	s.spill.reset()
	if hot && p.quantized && !admitAll {
		spill = s.spillSize
	}
	lines := g.lay.vecLines()
	if g.noPrefetch {
		lines = 0
	}
	linksOff, elemSize := g.lay.linksOff, g.lay.elemSize
	for cand.len() > 0 {
		c := cand.top()
		if c.dist > lower && (res.len() >= ef || !strict) {
			break
		}
		cand.pop()

		if !hot {
			for _, nb := range g.links(c.node, lvl) {
				if visited[nb] == epoch {
					continue
				}
				visited[nb] = epoch
				d := g.pdist(p, nb)
				if res.len() < ef || d < lower {
					cand.push(candidate{d, nb})
					if g.admit(nb, admitAll, filter) {
						res.push(candidate{d, nb})
						if res.len() > ef {
							res.pop()
						}
						lower = res.top().dist
					}
				}
			}
			continue
		}

		// Gather the unvisited neighbours, start fetching all their elements at once, then
		// score them: the fetches overlap instead of each distance waiting for its own.
		el := unsafe.Pointer(unsafe.SliceData(g.elems[c.node>>blockShift]))
		el = unsafe.Add(el, int(c.node&blockMask)*elemSize+linksOff)
		slot := unsafe.Slice((*uint32)(el), 1+g.m0)
		ids := s.batchIDs[:0]
		ptrs := s.batchPtrs[:0]
		for _, nb := range slot[1 : 1+slot[0]] {
			if visited[nb] == epoch {
				continue
			}
			visited[nb] = epoch
			ids = append(ids, nb)
			ptrs = append(ptrs, unsafe.Add(unsafe.Pointer(unsafe.SliceData(g.elems[nb>>blockShift])), int(nb&blockMask)*elemSize))
		}
		if lines > 0 && len(ptrs) > 0 {
			prefetchLines(ptrs, lines)
		}
		for i, nb := range ids {
			var d float32
			switch {
			case p.quantized:
				sum := dotCodes(p.w, unsafe.Slice((*byte)(ptrs[i]), len(p.w)))
				xo := p.qo + p.alpha*sum
				if g.l2 {
					d = p.qq + *(*float32)(unsafe.Add(ptrs[i], g.lay.scalOff)) - 2*xo
				} else {
					d = -xo
				}
			case g.l2:
				d = l2sq(p.f, unsafe.Slice((*float32)(ptrs[i]), g.dim))
			default:
				d = -dot(p.f, unsafe.Slice((*float32)(ptrs[i]), g.dim))
			}
			if res.len() < ef || d < lower {
				cand.push(candidate{d, nb})
				if admitAll || (!g.deleted[nb] && (filter == nil || filter(g.keys[nb]))) {
					res.push(candidate{d, nb})
					if res.len() > ef {
						if out := res.pop(); spill > 0 {
							s.spill.pushBounded(out, spill)
						}
					}
					lower = res.top().dist
				}
			} else if spill > 0 && (!g.deleted[nb] && (filter == nil || filter(g.keys[nb]))) {
				s.spill.pushBounded(candidate{d, nb}, spill)
			}
		}
		s.batchIDs, s.batchPtrs = ids, ptrs
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
// clustering them. With fewer than m candidates all are kept. Each kept node is prepared as
// a query once, so that with codes every comparison reads only the candidate's element.
func (g *graph) selectNeighbors(s *scratch, sorted []candidate, m int, dst []candidate) []candidate {
	dst = dst[:0]
	if len(sorted) <= m {
		return append(dst, sorted...)
	}
	for len(s.kept) < m {
		s.kept = append(s.kept, prepared{})
	}
	for _, c := range sorted {
		if len(dst) >= m {
			break
		}
		good := true
		for i := range dst {
			if g.pdist(&s.kept[i], c.node) < c.dist {
				good = false
				break
			}
		}
		if good {
			g.prepareNode(&s.kept[len(dst)], c.node)
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
