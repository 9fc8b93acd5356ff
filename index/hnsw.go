package index

import (
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Config tunes an HNSW index. Zero fields take the defaults of DefaultConfig.
type Config struct {
	Metric Metric
	// M is the number of links per node above layer 0; layer 0 keeps 2M.
	M int
	// EFConstruction is the candidate-list size while inserting.
	EFConstruction int
	// EFSearch is the candidate-list size of a search whose options leave EF at 0.
	EFSearch int
	// Seed makes level assignment, and so single-threaded builds, reproducible.
	Seed int64
	// MaxTombstoneFraction is the share of deleted nodes that triggers a compaction (a rebuild
	// of the graph from the live vectors).
	MaxTombstoneFraction float64
	// Logger receives compaction progress; nil discards it. The index never logs through
	// the process-wide default logger.
	Logger *slog.Logger
	// Quantize selects compact vectors in the graph (QuantizeInt8: one byte per dimension,
	// the search re-scores its best candidates on the full vectors). The zero value keeps
	// float32 vectors, as before the option existed.
	Quantize Quantization
	// Rerank bounds how many of the best candidates by code distance a QuantizeInt8 search
	// re-scores on the full vectors. 0 re-scores all its ef results and the best ef/2 other
	// nodes it scored (code distances blur the boundary of the ef best, and with that margin
	// recall matches float32 vectors at the same ef); a positive value re-scores only the best
	// max(Rerank, k), trading recall for fewer full-vector reads. Ignored without Quantize.
	Rerank int
	// Vectors, with QuantizeInt8, supplies a key's full vector (nil when it has none), so that
	// the index keeps no float32 copy once its quantiser is trained: memory per vector is then
	// the codes and links only. The index calls it to re-score candidates, for Vector and for
	// compaction; it must be safe for concurrent use, must not call into the index, and the
	// slice it returns is only read. Snapshots of such an index hold no full vectors, so
	// LoadSnapshotWith must be given the same source. Ignored without Quantize.
	Vectors func(Key) []float32
}

// DefaultConfig returns the parameters the recall tests hold the index to: M=16,
// efConstruction=200, efSearch=64, compaction at 20% tombstones.
func DefaultConfig() Config {
	return Config{Metric: InnerProduct, M: 16, EFConstruction: 200, EFSearch: 64, Seed: 1, MaxTombstoneFraction: 0.2}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.M < 2 {
		c.M = d.M
	}
	if c.EFConstruction <= 0 {
		c.EFConstruction = d.EFConstruction
	}
	if c.EFSearch <= 0 {
		c.EFSearch = d.EFSearch
	}
	if c.MaxTombstoneFraction <= 0 || c.MaxTombstoneFraction >= 1 {
		c.MaxTombstoneFraction = d.MaxTombstoneFraction
	}
	if !c.Metric.valid() {
		c.Metric = InnerProduct
	}
	if !c.Quantize.valid() {
		c.Quantize = QuantizeNone
	}
	if c.Quantize == QuantizeNone {
		c.Vectors = nil
		c.Rerank = 0
	}
	c.Rerank = max(c.Rerank, 0)
	return c
}

// minCompaction keeps tiny indexes from rebuilding on every other delete.
const minCompaction = 64

// HNSW is a hierarchical navigable small world graph (Malkov and Yashunin), implemented as in
// the paper and hnswlib. It is safe for concurrent use.
//
// Locking: mu guards the graph. Searches hold its read lock; writers take the write lock only
// to publish a finished insertion or a deletion, which copies a few neighbour lists. The long
// parts of an insertion (the candidate search and the neighbour selection) run under the
// read lock and under writeMu, which orders writers among themselves without blocking
// readers. Upkeep holds writeMu only briefly: a compaction builds the new graph aside and
// swaps it in (compact.go), a snapshot save streams a frozen view of the graph, for which
// writers keep the links they change (snapshot.go).
type HNSW struct {
	dim int
	cfg Config
	mL  float64 // level multiplier 1/ln(M)

	mu      sync.RWMutex
	writeMu sync.Mutex
	g       *graph

	inserted atomic.Uint64 // drives the deterministic level sequence
	scratch  sync.Pool

	// compaction is the rebuild running beside the writes, nil when none; noUpkeep stops
	// new ones (Close, and the graph a compaction builds). Both are guarded by writeMu.
	// saving is the graph a snapshot save is writing, nil when none; guarded by mu, as
	// writers keep in it the links they change (frozen.keep). saveMu runs saves one at a time.
	saving *frozen
	saveMu sync.Mutex

	compaction  *compaction
	noUpkeep    bool
	compactions atomic.Int64 // finished ones, for Stats
	compacting  atomic.Bool  // compaction != nil, for Stats without waiting for writers

	// Test hooks, nil outside tests. compactionRound runs in a compaction before each round
	// of catching up with the writes made since it started (round 0: the new graph holds the
	// live nodes of its start, and nothing of the log yet);
	// savedFrozen runs in SaveSnapshot once the graph is copied and writers are let go,
	// before it is written; savedEncoded runs once the file is written, before it is made
	// durable.
	compactionRound func(round int)
	savedFrozen     func()
	savedEncoded    func()
}

// NewHNSW returns an empty index of dim-dimensional vectors.
func NewHNSW(dim int, cfg Config) *HNSW {
	cfg = cfg.withDefaults()
	h := &HNSW{dim: dim, cfg: cfg, mL: 1 / math.Log(float64(cfg.M))}
	h.g = newGraph(dim, cfg)
	h.scratch.New = func() any { return &scratch{} }
	return h
}

// Dim is the vector dimension.
func (h *HNSW) Dim() int { return h.dim }

// Config returns the parameters in effect (defaults filled in).
func (h *HNSW) Config() Config { return h.cfg }

func (h *HNSW) logger() *slog.Logger {
	if h.cfg.Logger != nil {
		return h.cfg.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func (h *HNSW) getScratch() *scratch  { return h.scratch.Get().(*scratch) }
func (h *HNSW) putScratch(s *scratch) { h.scratch.Put(s) }

// randomLevel draws the level of the n-th insertion from an exponential distribution, using
// a hash of (seed, n) so that no generator state has to be shared between writers.
func (h *HNSW) randomLevel() int {
	n := h.inserted.Add(1)
	x := uint64(h.cfg.Seed) + n*0x9e3779b97f4a7c15
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	u := (float64(x>>11) + 0.5) / (1 << 53)
	level := int(-math.Log(u) * h.mL)
	return min(level, maxLevelCap)
}

// Len counts the live keys.
func (h *HNSW) Len() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.g.byKey)
}

// Keys returns the live keys, in no particular order.
func (h *HNSW) Keys() []Key {
	h.mu.RLock()
	defer h.mu.RUnlock()
	keys := make([]Key, 0, len(h.g.byKey))
	for k := range h.g.byKey {
		keys = append(keys, k)
	}
	return keys
}

// Vector returns a copy of the vector stored under key (with Config.Vectors, of the one the
// source supplies for a key the index holds).
func (h *HNSW) Vector(key Key) ([]float32, bool) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	node, ok := h.g.byKey[key]
	if !ok {
		return nil, false
	}
	v := h.g.fullVec(node)
	if v == nil {
		return nil, false
	}
	return append([]float32(nil), v...), true
}

// Add inserts vec under key; an existing key is replaced (its old node becomes a tombstone).
func (h *HNSW) Add(key Key, vec []float32) error {
	if err := checkVector(h.dim, vec); err != nil {
		return err
	}
	s := h.getScratch()
	defer h.putScratch(s)
	level := h.randomLevel()

	// Search phase: concurrent with readers and other inserters.
	h.mu.RLock()
	planned := h.g
	plannedMax := planned.maxLevel
	plannedQuant := planned.quant
	top := planned.plan(s, vec, level, h.cfg.EFConstruction)
	h.mu.RUnlock()

	h.writeMu.Lock()
	defer h.writeMu.Unlock()
	g := h.g
	// A compaction swapped the graph, the graph grew taller than what was searched, or the
	// quantiser was trained meanwhile (the planned distances are on the other scale):
	// search again, now with no writer able to interfere.
	if g != planned || (g.maxLevel != plannedMax && level > plannedMax) || g.quant != plannedQuant {
		top = g.plan(s, vec, level, h.cfg.EFConstruction)
	}
	h.noteChange(key, h.insertPlanned(g, s, key, vec, level, top))
	h.maybeCompact()
	return nil
}

// plan runs the search phase of an insertion: the greedy descent to the new node's level,
// then an efConstruction beam search on each level it will live on, leaving the candidates
// of level l in s.levelCands[l], closest first. It returns the highest planned level, -1 for
// an empty graph.
func (g *graph) plan(s *scratch, q []float32, level, efc int) int {
	if g.maxLevel < 0 {
		return -1
	}
	top := min(level, g.maxLevel)
	p := &s.query
	g.prepare(p, q)
	ep, epDist := g.greedyDescend(s, p, top)
	for len(s.levelCands) <= top {
		s.levelCands = append(s.levelCands, nil)
	}
	for lvl := top; lvl >= 0; lvl-- {
		g.searchLayer(s, p, ep, epDist, lvl, efc, true, nil)
		s.levelCands[lvl] = s.res.drainAscending(s.levelCands[lvl][:0])
		ep, epDist = s.levelCands[lvl][0].node, s.levelCands[lvl][0].dist
	}
	return top
}

// insertPlanned links a new node using the planned candidates and returns it; the caller
// holds writeMu.
func (h *HNSW) insertPlanned(g *graph, s *scratch, key Key, vec []float32, level, top int) uint32 {
	id := uint32(g.n)
	if !g.hasRoom(id) {
		h.mu.Lock()
		g.grow()
		h.mu.Unlock()
	}
	// No reader can reach slot id before it is published below, so it is filled without mu.
	g.store(id, vec)

	s.updates = s.updates[:0]
	s.updateIDs = s.updateIDs[:0]
	for lvl := top; lvl >= 0; lvl-- {
		s.selected = g.selectNeighbors(s, s.levelCands[lvl], g.m, s.selected)
		from := len(s.updateIDs)
		for _, c := range s.selected {
			s.updateIDs = append(s.updateIDs, c.node)
		}
		s.updates = append(s.updates, linkUpdate{node: id, lvl: lvl, from: from, to: len(s.updateIDs)})

		maxL := g.maxLinks(lvl)
		for _, c := range s.selected {
			old := g.links(c.node, lvl)
			from := len(s.updateIDs)
			if len(old) < maxL {
				s.updateIDs = append(s.updateIDs, old...)
				s.updateIDs = append(s.updateIDs, id)
			} else {
				// Full: keep the best maxL of the old links plus the new node, chosen by the
				// same heuristic so the list stays diverse.
				g.prepareNode(&s.base, c.node)
				s.pool = append(s.pool[:0], candidate{c.dist, id})
				for _, o := range old {
					s.pool = append(s.pool, candidate{g.pdist(&s.base, o), o})
				}
				sortCandidates(s.pool)
				s.sorted = g.selectNeighbors(s, s.pool, maxL, s.sorted)
				for _, k := range s.sorted {
					s.updateIDs = append(s.updateIDs, k.node)
				}
			}
			s.updates = append(s.updates, linkUpdate{node: c.node, lvl: lvl, from: from, to: len(s.updateIDs)})
		}
	}
	var upper []uint32
	if level > 0 {
		upper = make([]uint32, level*g.strideU)
	}

	h.mu.Lock()
	defer h.mu.Unlock()
	g.keys = append(g.keys, key)
	g.levels = append(g.levels, uint8(level))
	g.deleted = append(g.deleted, false)
	g.upper = append(g.upper, upper)
	g.links0Slot(id)[0] = 0
	for _, u := range s.updates {
		if h.saving != nil {
			h.saving.keep(g, u.node, u.lvl)
		}
		g.setLinks(u.node, u.lvl, s.updateIDs[u.from:u.to])
	}
	g.n++
	if old, ok := g.byKey[key]; ok {
		g.deleted[old] = true
		g.tombstones++
	}
	g.byKey[key] = id
	if level > g.maxLevel {
		g.entry = id
		g.maxLevel = level
	}
	if g.codes && g.quant == nil && g.n >= g.trainAt {
		g.train()
	}
	return id
}

// Delete tombstones key: the node keeps routing searches but is never returned. It reports
// whether the key was live.
func (h *HNSW) Delete(key Key) bool {
	h.writeMu.Lock()
	defer h.writeMu.Unlock()
	h.mu.Lock()
	g := h.g
	node, ok := g.byKey[key]
	if ok {
		delete(g.byKey, key)
		g.deleted[node] = true
		g.tombstones++
	}
	h.mu.Unlock()
	if ok {
		h.noteChange(key, deletedNode)
		h.maybeCompact()
	}
	return ok
}

func (h *HNSW) swap(g *graph) {
	h.mu.Lock()
	h.g = g
	h.mu.Unlock()
}

// Search returns the k nearest live neighbours of query, best first.
func (h *HNSW) Search(query []float32, k int, opt SearchOptions) []Neighbor {
	return h.SearchAppend(nil, query, k, opt)
}

// SearchAppend is Search appending to dst, so a caller that reuses dst searches without
// allocating. The filter runs under the index's read lock: it must not call into the index.
func (h *HNSW) SearchAppend(dst []Neighbor, query []float32, k int, opt SearchOptions) []Neighbor {
	if k <= 0 || len(query) != h.dim {
		return dst
	}
	s := h.getScratch()
	defer h.putScratch(s)
	h.mu.RLock()
	defer h.mu.RUnlock()
	g := h.g
	live := len(g.byKey)
	if live == 0 {
		return dst
	}
	ef := opt.EF
	if ef <= 0 {
		ef = h.cfg.EFSearch
	}
	ef = max(ef, k)

	p := &s.query
	g.prepare(p, query)
	// With codes, the walk's distances are approximate: keep the best `keep` by code
	// distance and re-score them on the full vectors below.
	keep := k
	s.spillSize = 0
	if p.quantized {
		keep = ef
		s.spillSize = rerankSpill(ef)
	}
	if opt.Filter != nil && g.preferScan(opt.Filter, ef) {
		g.scan(s, p, keep, opt.Filter)
	} else {
		ep, epDist := g.greedyDescend(s, p, 0)
		g.searchLayer(s, p, ep, epDist, 0, ef, false, opt.Filter)
		if s.res.len() < min(k, live) {
			// The walk ran out of reachable matches. An exact scan of the matching subset is
			// the only way to be sure whether k of them exist.
			g.scan(s, p, keep, opt.Filter)
		}
	}
	s.sorted = s.res.drainAscending(s.sorted[:0])
	if p.quantized {
		s.sorted = s.spill.drainAscending(s.sorted)
		s.sorted = g.rerank(s, query, s.sorted, k, h.cfg.Rerank)
	}
	for i := 0; i < len(s.sorted) && i < k; i++ {
		c := s.sorted[i]
		dst = append(dst, Neighbor{Key: g.keys[c.node], Score: -c.dist})
	}
	return dst
}

// rerankLines is how many cache lines of each full vector the re-rank prefetches: the first
// few start every fetch at once, and the hardware prefetcher streams the rest.
const rerankLines = 4

// rerankSpill is how many scored nodes beyond its ef results a search on codes re-ranks.
func rerankSpill(ef int) int { return (ef + 1) / 2 }

// rerank re-scores the best candidates (all of them when limit is 0, else the best
// max(limit, k)) on their full vectors and sorts them by that exact distance. sorted holds
// the ef results closest first, then the spilled nodes closest first (all farther by code
// distance). Their full vectors are fetched together first: they are cold, outside the
// walk's memory.
func (g *graph) rerank(s *scratch, q []float32, sorted []candidate, k, limit int) []candidate {
	if limit > 0 {
		sorted = sorted[:min(len(sorted), max(limit, k))]
	}
	// Look every vector up first (from the full-vector blocks or the source), start all
	// their fetches, then score them.
	vecs := s.rerankVecs[:0]
	ptrs := s.batchPtrs[:0]
	for _, c := range sorted {
		v := g.fullVec(c.node)
		vecs = append(vecs, v)
		if v != nil {
			ptrs = append(ptrs, unsafe.Pointer(unsafe.SliceData(v)))
		}
	}
	if !g.noPrefetch {
		prefetchLines(ptrs, rerankLines)
	}
	for i, v := range vecs {
		if v == nil {
			// The source no longer has it: it sorts last.
			sorted[i].dist = float32(math.Inf(1))
		} else {
			sorted[i].dist = distance(g.l2, q, v)
		}
	}
	// No references into the source's storage outlive the search.
	clear(vecs)
	clear(ptrs)
	s.rerankVecs, s.batchPtrs = vecs, ptrs
	sortCandidates(sorted)
	return sorted
}

// scan leaves in s.res the k closest live nodes that pass filter (nil: all), by brute force.
func (g *graph) scan(s *scratch, p *prepared, k int, filter func(Key) bool) {
	res := &s.res
	res.reset()
	s.spill.reset() // a walk's spill would repeat nodes the scan finds again
	for node := 0; node < g.n; node++ {
		if g.deleted[node] || (filter != nil && !filter(g.keys[node])) {
			continue
		}
		res.pushBounded(candidate{g.pdist(p, uint32(node)), uint32(node)}, k)
	}
}

// selectivitySamples is how many live nodes a filtered search tests to estimate the share
// of the catalogue its filter keeps.
const selectivitySamples = 256

// preferScan estimates the filter's selectivity p from a fixed pseudo-random sample and
// compares the two costs in distance computations: an exact scan pays a cheap filter call per
// live node plus one distance per match; a filtered graph walk must expand about ef/p nodes,
// each with up to 2M neighbours.
func (g *graph) preferScan(filter func(Key) bool, ef int) bool {
	live := g.n - g.tombstones
	sampled, matched := 0, 0
	if live <= selectivitySamples {
		return true
	}
	x := uint32(2463534242)
	for tries := 0; sampled < selectivitySamples && tries < 4*selectivitySamples; tries++ {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		node := x % uint32(g.n)
		if g.deleted[node] {
			continue
		}
		sampled++
		if filter(g.keys[node]) {
			matched++
		}
	}
	p := (float64(matched) + 0.5) / (float64(sampled) + 1)
	scanCost := float64(live)/8 + p*float64(live)
	walkCost := 16 * float64(ef) / p
	return scanCost <= walkCost
}

// Stats describes the graph for logs and benchmarks.
type Stats struct {
	// Live counts the keys a search can return, Tombstones the deleted or replaced nodes
	// still routing searches, Nodes both; MaxLevel is the top layer, -1 while empty.
	Live, Tombstones, Nodes, MaxLevel int
	// Bytes estimates all the memory the index holds: vectors (codes and full vectors),
	// links, key tables and the quantiser. It does not count what a Config.Vectors source
	// keeps.
	Bytes int64
	// FullVectorBytes is the part of Bytes taken by float32 vectors kept beside int8 codes
	// (zero without Quantize, where the graph's own vectors are the full ones, and zero with
	// a Config.Vectors source once trained).
	FullVectorBytes int64
	// Quantized reports whether searches walk over trained int8 codes.
	Quantized bool
	// Compacting reports a compaction running beside the writes; Compactions counts those
	// that finished (swapped their graph in) since the index was made or loaded.
	Compacting  bool
	Compactions int64
}

// Stats returns the current figures.
func (h *HNSW) Stats() Stats {
	h.mu.RLock()
	defer h.mu.RUnlock()
	g := h.g
	var b, full int64
	for _, blk := range g.elems {
		b += int64(cap(blk)) + cacheLine
	}
	for _, blk := range g.full {
		full += int64(cap(blk)) * 4
	}
	b += full
	for _, u := range g.upper {
		b += int64(cap(u))*4 + 24
	}
	b += int64(cap(g.keys))*4 + int64(cap(g.levels)) + int64(cap(g.deleted))
	b += int64(len(g.byKey)) * 16 // approximate bucket cost of a map[uint32]uint32 entry
	if q := g.quant; q != nil {
		b += int64(len(q.offset)+len(q.scale)+len(q.invScale)+len(q.nodeA)+len(q.nodeB)) * 4
	}
	return Stats{Live: len(g.byKey), Tombstones: g.tombstones, Nodes: g.n, MaxLevel: g.maxLevel, Bytes: b,
		FullVectorBytes: full, Quantized: g.quant != nil, Compacting: h.compacting.Load(), Compactions: h.compactions.Load()}
}
