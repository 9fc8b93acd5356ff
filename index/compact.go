package index

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// A compaction rebuilds the graph without its tombstones. It runs beside the writes, as vald
// builds its index in the background: it takes the live nodes of the moment it starts, builds
// a new graph from their vectors with no lock held against writers, then catches up with the
// writes made meanwhile from a change log and swaps the new graph in. Searches and writes keep
// using the old graph until the swap; only the last few changes of the log are replayed with
// writers waiting.

// catchUpUnderLock is the size of change log the compaction replays with writers waiting,
// so that the swap sees every write; a longer log is replayed with writers going, in rounds,
// each replaying what was written during the one before. Writers never wait for more: while
// they write faster than the replay goes, the compaction goes on and they write at full speed
// to the old graph, whose tombstones keep routing searches as they did before it started.
const catchUpUnderLock = 16

// compaction is one rebuild in progress; HNSW.compaction points to it while it runs.
type compaction struct {
	// old is the graph being rebuilt. Its nodes' vectors never change once published, so
	// the rebuild reads them while writers keep adding nodes and links to it.
	old *graph
	// log lists the writes made to old since the rebuild took its live nodes, in order;
	// guarded by HNSW.writeMu.
	log []change
	// dropped is how many tombstones old had when the rebuild started.
	dropped int
	// stop asks the rebuild to give up (Close).
	stop atomic.Bool
	// done is closed when the rebuild has swapped its graph in or given up.
	done chan struct{}
}

// change says that key has node's vector in the old graph, or is deleted when node is
// deletedNode: a write during a compaction, or one of the live nodes it starts from.
type change struct {
	key  Key
	node uint32
}

const deletedNode = ^uint32(0)

// noteChange records a write for a running compaction; the caller holds writeMu.
func (h *HNSW) noteChange(key Key, node uint32) {
	if c := h.compaction; c != nil {
		c.log = append(c.log, change{key: key, node: node})
	}
}

// maybeCompact starts a compaction when tombstones pile up and none runs; the caller holds
// writeMu.
func (h *HNSW) maybeCompact() {
	if h.compaction != nil || h.noUpkeep {
		return
	}
	g := h.g
	if len(g.byKey) == 0 && g.n > 0 {
		h.swap(newGraph(h.dim, h.cfg))
		return
	}
	if g.tombstones >= minCompaction && float64(g.tombstones) > h.cfg.MaxTombstoneFraction*float64(g.n) {
		h.startCompaction()
	}
}

// startCompaction takes the graph's live nodes and starts their rebuild; the caller holds
// writeMu, so nothing changes while they are listed.
func (h *HNSW) startCompaction() {
	old := h.g
	live := make([]change, 0, len(old.byKey))
	for node := 0; node < old.n; node++ {
		if !old.deleted[node] {
			live = append(live, change{key: old.keys[node], node: uint32(node)})
		}
	}
	fresh := NewHNSW(h.dim, h.cfg)
	// Its own tombstones (replayed replacements and deletions) wait for the next compaction,
	// which the swapped-in graph starts as any other.
	fresh.noUpkeep = true
	fresh.inserted.Store(h.inserted.Load())
	fresh.g.trainAt, fresh.g.trainer = old.trainAt, old.trainer
	if old.quant != nil {
		// The new graph keeps the fitted ranges instead of scoring on full vectors until it
		// has been refitted.
		fresh.g.quant = old.quant
	}
	c := &compaction{old: old, dropped: old.tombstones, done: make(chan struct{})}
	h.compaction = c
	h.compacting.Store(true)
	h.logger().Info("index: compaction started", "live", len(live), "tombstones", old.tombstones)
	go h.compact(c, fresh, live)
}

// compact builds fresh from the live nodes, catches up with the change log and swaps fresh
// in, all beside the writes.
func (h *HNSW) compact(c *compaction, fresh *HNSW, live []change) {
	defer close(c.done)
	start := time.Now()
	// Leave a core to the searches and writes that go on meanwhile, where there is more
	// than one.
	workers := min(max(1, runtime.GOMAXPROCS(0)-1), max(1, len(live)/1000))
	var wg sync.WaitGroup
	var next atomic.Int64
	for range workers {
		wg.Go(func() {
			for !c.stop.Load() {
				i := int(next.Add(1)) - 1
				if i >= len(live) {
					return
				}
				if v := h.vectorOf(c.old, live[i].node); v != nil {
					_ = fresh.Add(live[i].key, v)
				}
			}
		})
	}
	wg.Wait()
	replayed := 0
	for round := 0; ; round++ {
		if h.compactionRound != nil {
			h.compactionRound(round)
		}
		h.writeMu.Lock()
		batch := c.log
		c.log = nil
		if c.stop.Load() {
			h.compaction = nil
			h.compacting.Store(false)
			h.writeMu.Unlock()
			h.logger().Info("index: compaction abandoned", "took", time.Since(start))
			return
		}
		if len(batch) <= catchUpUnderLock {
			h.replay(fresh, c.old, batch)
			replayed += len(batch)
			h.inserted.Store(max(h.inserted.Load(), fresh.inserted.Load()))
			h.swap(fresh.g)
			h.compaction = nil
			h.compacting.Store(false)
			h.compactions.Add(1)
			h.writeMu.Unlock()
			h.logger().Info("index: compacted HNSW graph", "live", len(live), "tombstones_dropped", c.dropped,
				"caught_up", replayed, "rounds", round+1, "took", time.Since(start))
			return
		}
		h.writeMu.Unlock()
		h.replay(fresh, c.old, batch)
		replayed += len(batch)
	}
}

// replay applies logged writes of old to fresh, in order.
func (h *HNSW) replay(fresh *HNSW, old *graph, log []change) {
	for _, ch := range log {
		if ch.node == deletedNode {
			fresh.Delete(ch.key)
			continue
		}
		// A vector source may have lost the key since; its deletion follows in the log.
		if v := h.vectorOf(old, ch.node); v != nil {
			_ = fresh.Add(ch.key, v)
		}
	}
}

// vectorOf reads node's full vector from g. The read lock keeps writers from replacing g's
// blocks while it is looked up; the vector itself never changes once published, so the slice
// stays valid after.
func (h *HNSW) vectorOf(g *graph, node uint32) []float32 {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return g.fullVec(node)
}

// WaitCompaction returns when no compaction is running; one that started before the call
// has then swapped its graph in (or given up, after Close).
func (h *HNSW) WaitCompaction() {
	h.writeMu.Lock()
	c := h.compaction
	h.writeMu.Unlock()
	if c != nil {
		<-c.done
	}
}

// Close ends the index's background work: a running compaction is abandoned (the graph keeps
// its tombstones) and none starts from now on. Searches, writes and snapshots still work.
// Call it before the vector source of Config.Vectors goes away.
func (h *HNSW) Close() {
	if c := h.stopUpkeep(); c != nil {
		<-c.done
	}
}

// stopUpkeep is Close without the wait: it returns the compaction it asked to stop, if any.
func (h *HNSW) stopUpkeep() *compaction {
	h.writeMu.Lock()
	defer h.writeMu.Unlock()
	h.noUpkeep = true
	if c := h.compaction; c != nil {
		c.stop.Store(true)
		return c
	}
	return nil
}
