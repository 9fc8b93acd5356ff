package index

import "unsafe"

// candidate pairs a node with its internal distance (lower is closer).
type candidate struct {
	dist float32
	node uint32
}

// minHeap keeps the closest candidate on top; it is the frontier of a graph walk. It is a
// typed heap (no container/heap interface) so pushes and pops inline and never allocate once
// the backing slice has grown.
type minHeap struct{ items []candidate }

func (h *minHeap) reset()         { h.items = h.items[:0] }
func (h *minHeap) len() int       { return len(h.items) }
func (h *minHeap) top() candidate { return h.items[0] }
func (h *minHeap) push(c candidate) {
	h.items = append(h.items, c)
	items := h.items
	i := len(items) - 1
	for i > 0 {
		parent := (i - 1) / 2
		if items[parent].dist <= c.dist {
			break
		}
		items[i] = items[parent]
		i = parent
	}
	items[i] = c
}

func (h *minHeap) pop() candidate {
	items := h.items
	top := items[0]
	last := items[len(items)-1]
	items = items[:len(items)-1]
	h.items = items
	n := len(items)
	if n == 0 {
		return top
	}
	i := 0
	for {
		child := 2*i + 1
		if child >= n {
			break
		}
		if r := child + 1; r < n && items[r].dist < items[child].dist {
			child = r
		}
		if last.dist <= items[child].dist {
			break
		}
		items[i] = items[child]
		i = child
	}
	items[i] = last
	return top
}

// maxHeap keeps the farthest candidate on top; it holds the best ef results found so far, so
// the top is the bound a new candidate must beat.
type maxHeap struct{ items []candidate }

func (h *maxHeap) reset()         { h.items = h.items[:0] }
func (h *maxHeap) len() int       { return len(h.items) }
func (h *maxHeap) top() candidate { return h.items[0] }
func (h *maxHeap) push(c candidate) {
	h.items = append(h.items, c)
	items := h.items
	i := len(items) - 1
	for i > 0 {
		parent := (i - 1) / 2
		if items[parent].dist >= c.dist {
			break
		}
		items[i] = items[parent]
		i = parent
	}
	items[i] = c
}

func (h *maxHeap) pop() candidate {
	items := h.items
	top := items[0]
	last := items[len(items)-1]
	items = items[:len(items)-1]
	h.items = items
	n := len(items)
	if n == 0 {
		return top
	}
	i := 0
	for {
		child := 2*i + 1
		if child >= n {
			break
		}
		if r := child + 1; r < n && items[r].dist > items[child].dist {
			child = r
		}
		if last.dist >= items[child].dist {
			break
		}
		items[i] = items[child]
		i = child
	}
	items[i] = last
	return top
}

// pushBounded keeps the k closest candidates seen: c goes in while fewer than k are held,
// afterwards only in place of a farther one.
func (h *maxHeap) pushBounded(c candidate, k int) {
	if h.len() < k {
		h.push(c)
	} else if c.dist < h.top().dist {
		h.pop()
		h.push(c)
	}
}

// drainAscending empties the heap into dst, closest first.
func (h *maxHeap) drainAscending(dst []candidate) []candidate {
	n := h.len()
	start := len(dst)
	for range n {
		dst = append(dst, candidate{})
	}
	for i := n - 1; i >= 0; i-- {
		dst[start+i] = h.pop()
	}
	return dst
}

// scratch is the per-search working memory, pooled so that a query allocates nothing in the
// steady state. visited uses epoch marks: a node is visited when its mark equals the current
// epoch, so starting a new search is one increment instead of clearing an array. The marks
// are bytes, a quarter of the cache footprint of uint32 marks, at the price of clearing the
// array once every 255 searches.
type scratch struct {
	visited []uint8
	epoch   uint8
	cand    minHeap
	res     maxHeap
	sorted  []candidate
	// spill holds, for a search on codes, the best spillSize scored nodes outside res.
	spill     maxHeap
	spillSize int
	// query is the search's or insertion's prepared query; base and kept are stored nodes
	// prepared as queries during neighbour selection.
	query prepared
	base  prepared
	kept  []prepared
	// batchIDs and batchPtrs are one expansion's unvisited neighbours and their elements;
	// rerankVecs the full vectors a re-rank scores.
	batchIDs   []uint32
	batchPtrs  []unsafe.Pointer
	rerankVecs [][]float32
	// Insertion state: per-level candidate lists from the search phase, the selected
	// neighbours, and the rewritten neighbour lists waiting to be applied.
	levelCands [][]candidate
	selected   []candidate
	pool       []candidate
	updates    []linkUpdate
	updateIDs  []uint32
}

// linkUpdate replaces the level-lvl neighbour list of node with updateIDs[from:to].
type linkUpdate struct {
	node     uint32
	lvl      int
	from, to int
}

// newEpoch prepares the visited marks for a graph of n nodes.
func (s *scratch) newEpoch(n int) {
	if len(s.visited) < n {
		grown := n + n/4 + 1024
		s.visited = make([]uint8, grown)
		s.epoch = 0
	}
	s.epoch++
	if s.epoch == 0 {
		clear(s.visited)
		s.epoch = 1
	}
}
