package catalog

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"testing"

	"lookalike/index"
	"lookalike/store"
)

// The catch-up tests use a real store file and small vectors, so that a few hundred photos
// (more than catchUpAbove) make the background path run in a blink. The graph searches them
// with an ef larger than the catalogue, so that its answers are exact and every search can be
// compared with a brute-force scan of the store.
const (
	cuDim = 16
	cuEF  = 4000
)

func openCatchUp(t *testing.T, dir string, gate <-chan struct{}) *Embedded {
	t.Helper()
	b, err := OpenEmbedded(context.Background(), EmbeddedConfig{DataDir: dir, ModelIdentity: "test@1", Dim: cuDim,
		SnapshotChanges: -1, catchUpGate: gate})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// cuPut stores product id with one photo per vector (photo ids a, b, ...) and returns their keys.
func cuPut(t *testing.T, b *Embedded, id string, vecs ...[]float32) []index.Key {
	t.Helper()
	p := store.Product{ID: id, Category: "c"}
	for i, v := range vecs {
		p.Photos = append(p.Photos, store.Photo{ID: string(rune('a' + i)), Vector: v})
	}
	stored, err := b.Put(context.Background(), []store.Product{p})
	if err != nil {
		t.Fatal(err)
	}
	keys := make([]index.Key, len(stored[0].Photos))
	for i, ph := range stored[0].Photos {
		keys[i] = ph.Key
	}
	return keys
}

func cuDelete(t *testing.T, b *Embedded, id string) {
	t.Helper()
	if _, err := b.Delete(context.Background(), id); err != nil {
		t.Fatal(err)
	}
}

// crashEmbedded stops b as a kill -9 would leave it: no snapshot saved, the store closed.
func crashEmbedded(t *testing.T, b *Embedded) {
	t.Helper()
	b.stopBackground()
	if err := b.store.Close(); err != nil {
		t.Fatal(err)
	}
}

// crashedBehind writes products p0..p(total-1), one photo each from vecs, into a backend in
// dir, saves a snapshot after the first saved of them and crashes it after the rest: the next
// start has total-saved photos to catch up. It returns the crashed backend.
func crashedBehind(t *testing.T, dir string, vecs [][]float32, saved, total int) *Embedded {
	t.Helper()
	b := openCatchUp(t, dir, nil)
	for i := range total {
		if i == saved {
			if err := b.SaveSnapshot(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		cuPut(t, b, fmt.Sprint("p", i), unit(vecs[i]))
	}
	crashEmbedded(t, b)
	return b
}

// waitCatchUp waits until b's graph holds every photo (tests only).
func (b *Embedded) waitCatchUp() {
	if c := b.catchUp.Load(); c != nil {
		<-c.done
	}
}

// storeVectors is the truth a search must answer from: every vector in the store.
func storeVectors(t *testing.T, b *Embedded) map[index.Key][]float32 {
	t.Helper()
	out := make(map[index.Key][]float32)
	if err := b.store.ForEachVector(func(k uint32, v []float32) error {
		out[k] = v
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// bruteForce is the exact answer: the n best of truth that admit accepts, by the graph's
// metric, best first, ties by key.
func bruteForce(truth map[index.Key][]float32, q []float32, n int, admit func(index.Key) bool) []index.Neighbor {
	var all []index.Neighbor
	for k, v := range truth {
		if admit == nil || admit(k) {
			all = append(all, index.Neighbor{Key: k, Score: index.InnerProduct.Score(q, v)})
		}
	}
	slices.SortFunc(all, func(a, b index.Neighbor) int {
		if a.Score != b.Score {
			return cmp.Compare(b.Score, a.Score)
		}
		return cmp.Compare(a.Key, b.Key)
	})
	return all[:min(n, len(all))]
}

// checkServesStore demands that b's searches (unfiltered, and under a broad and a selective
// filter, for several result counts) and Vectors answer exactly what the store holds.
func checkServesStore(t *testing.T, b *Embedded, queries [][]float32, what string) {
	t.Helper()
	ctx := context.Background()
	truth := storeVectors(t, b)
	filters := []struct {
		name  string
		admit func(index.Key) bool
	}{
		{"none", nil},
		{"key%3!=0", func(k index.Key) bool { return k%3 != 0 }},
		{"key%7==0", func(k index.Key) bool { return k%7 == 0 }},
	}
	for qi, q := range queries {
		for _, f := range filters {
			for _, n := range []int{1, 10, 60} {
				got, err := b.Search(ctx, q, n, PhotoQuery{EF: cuEF, Admit: f.admit})
				if err != nil {
					t.Fatal(err)
				}
				if want := bruteForce(truth, q, n, f.admit); !slices.Equal(got, want) {
					t.Fatalf("%s: query %d, filter %s, n %d:\ngot  %v\nwant %v", what, qi, f.name, n, got, want)
				}
			}
		}
	}
	keys := make([]index.Key, 0, len(truth)+1)
	for k := range truth {
		keys = append(keys, k)
	}
	keys = append(keys, 1<<30) // never stored
	vecs, err := b.Vectors(ctx, keys)
	if err != nil {
		t.Fatal(err)
	}
	for i, k := range keys {
		if !slices.Equal(vecs[i], truth[k]) {
			t.Fatalf("%s: Vectors(%d) = %v, the store holds %v", what, k, vecs[i], truth[k])
		}
	}
}

// checkGraphIsStore demands that the catch-up is over and the graph holds exactly the store.
func checkGraphIsStore(t *testing.T, b *Embedded, what string) {
	t.Helper()
	if b.catchUp.Load() != nil || b.CatchingUp() != 0 {
		t.Fatalf("%s: still catching up (%d photos)", what, b.CatchingUp())
	}
	truth := storeVectors(t, b)
	if b.graph.Len() != len(truth) || b.store.Photos() != len(truth) {
		t.Fatalf("%s: graph %d photos, store %d (%d vectors)", what, b.graph.Len(), b.store.Photos(), len(truth))
	}
	for k, v := range truth {
		if gv, ok := b.graph.Vector(k); !ok || !slices.Equal(gv, v) {
			t.Fatalf("%s: graph holds %v for key %d, the store %v", what, gv, k, v)
		}
	}
}

// cuQueries are stored vectors of some keys (sure hits) and random vectors.
func cuQueries(b *Embedded, t *testing.T, keys []index.Key, random int) [][]float32 {
	t.Helper()
	var qs [][]float32
	for _, k := range keys {
		v, err := b.store.Vector(k)
		if err != nil {
			t.Fatal(err)
		}
		qs = append(qs, v)
	}
	for _, v := range randomVectors(random, cuDim, 99) {
		qs = append(qs, unit(v))
	}
	return qs
}

// TestCatchUpServesWhileHeld: a snapshot followed by more than catchUpAbove changes (adds,
// replacements, a product losing a photo, deletions) and a crash. The reopened backend
// serves at once with the catch-up held at its gate: every search, filtered or not, answers
// what an exact scan of the store does, Vectors gives the store's vectors, writes during the
// hold (a new photo, a pending photo replaced, a pending photo deleted, a photo only the graph
// held deleted) show at once, and no snapshot is saved. Released, the graph ends holding
// exactly the store, and a snapshot saves and loads back.
func TestCatchUpServesWhileHeld(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	vecs := randomVectors(2000, cuDim, 11)
	next := 0
	vec := func() []float32 { next++; return unit(vecs[next-1]) }

	b := openCatchUp(t, dir, nil)
	var old [][]index.Key
	for i := range 300 {
		if i%10 == 0 {
			old = append(old, cuPut(t, b, fmt.Sprint("old", i), vec(), vec()))
		} else {
			old = append(old, cuPut(t, b, fmt.Sprint("old", i), vec()))
		}
	}
	if err := b.SaveSnapshot(ctx); err != nil {
		t.Fatal(err)
	}
	var fresh [][]index.Key
	for i := range 400 {
		fresh = append(fresh, cuPut(t, b, fmt.Sprint("new", i), vec()))
	}
	for i := 1; i < 300; i += 7 { // replaced in place (same photo id, same key)
		if i%10 == 0 {
			continue
		}
		cuPut(t, b, fmt.Sprint("old", i), vec())
	}
	cuPut(t, b, "old10", vec()) // loses its photo b
	var deletedQ [][]float32    // the deleted photos' vectors: no search may return them
	for _, k := range []index.Key{old[2][0], fresh[5][0]} {
		v, err := b.store.Vector(k)
		if err != nil {
			t.Fatal(err)
		}
		deletedQ = append(deletedQ, v)
	}
	for i := 2; i < 300; i += 11 {
		cuDelete(t, b, fmt.Sprint("old", i))
	}
	for i := 5; i < 400; i += 13 {
		cuDelete(t, b, fmt.Sprint("new", i))
	}
	snapBefore, err := os.ReadFile(b.snapshotFile)
	if err != nil {
		t.Fatal(err)
	}
	crashEmbedded(t, b)

	gate := make(chan struct{})
	b2 := openCatchUp(t, dir, gate)
	released := false
	defer func() {
		if !released {
			close(gate)
		}
		b2.Close()
	}()
	c := b2.catchUp.Load()
	if c == nil || b2.CatchingUp() <= catchUpAbove {
		t.Fatalf("reopened: catching up %d photos, want more than %d in the background", b2.CatchingUp(), catchUpAbove)
	}
	if b2.graph.Len() != 330 {
		t.Fatalf("reopened: the graph holds %d photos, want the snapshot's 330", b2.graph.Len())
	}
	probe := []index.Key{old[0][0], old[1][0], old[7][0], old[10][0], fresh[0][0], fresh[100][0], fresh[399][0]}
	queries := cuQueries(b2, t, probe, 6)
	queries = append(queries, deletedQ...)
	checkServesStore(t, b2, queries, "held")

	// Writes while held.
	added := cuPut(t, b2, "added", vec())
	cuPut(t, b2, "new1", vec())  // a pending photo replaced
	cuDelete(t, b2, "new3")      // a pending photo deleted
	cuDelete(t, b2, "old4")      // a photo only the graph held
	cuPut(t, b2, "old20", vec()) // a graph photo replaced, and its photo b deleted
	queries = append(queries, cuQueries(b2, t, []index.Key{added[0], fresh[1][0]}, 0)...)
	queries = append(queries, unit(vecs[next-1]))
	checkServesStore(t, b2, queries, "held, after writes")
	for _, k := range []index.Key{fresh[3][0], old[4][0], old[20][1], old[2][0], fresh[5][0], old[10][1]} {
		if vs, _ := b2.Vectors(ctx, []index.Key{k}); vs[0] != nil {
			t.Fatalf("deleted photo %d still has a vector while held", k)
		}
	}

	// No snapshot while catching up.
	storeSeq, snapSeq, _ := b2.SnapshotState()
	if err := b2.SaveSnapshot(ctx); err != nil {
		t.Fatal(err)
	}
	if _, seq, _ := b2.SnapshotState(); seq != snapSeq || seq >= storeSeq {
		t.Fatalf("a snapshot at seq %d was saved while catching up (store %d, last snapshot %d)", seq, storeSeq, snapSeq)
	}
	if got, _ := os.ReadFile(b2.snapshotFile); !bytes.Equal(got, snapBefore) {
		t.Fatal("the snapshot file changed while catching up")
	}

	close(gate)
	released = true
	<-c.done
	checkGraphIsStore(t, b2, "caught up")
	checkServesStore(t, b2, queries, "caught up")

	if err := b2.SaveSnapshot(ctx); err != nil {
		t.Fatal(err)
	}
	if storeSeq, seq, _ := b2.SnapshotState(); seq != storeSeq {
		t.Fatalf("snapshot after the catch-up covers seq %d, store %d", seq, storeSeq)
	}
	crashEmbedded(t, b2)
	b3 := openCatchUp(t, dir, nil)
	defer b3.Close()
	if _, seq, _ := b3.SnapshotState(); seq != b3.store.Seq() {
		t.Fatalf("reloaded snapshot covers seq %d, store %d", seq, b3.store.Seq())
	}
	checkGraphIsStore(t, b3, "reloaded")
	checkServesStore(t, b3, queries, "reloaded")
}

// TestCatchUpRebuildServes: with no snapshot the graph is rebuilt from the store in the
// background, starting empty: held at its gate, every search and Vectors answers from the
// store exactly (all of it scored by the catch-up), and writes show at once; released, the
// graph holds the store.
func TestCatchUpRebuildServes(t *testing.T) {
	dir := t.TempDir()
	vecs := randomVectors(600, cuDim, 12)
	b := openCatchUp(t, dir, nil)
	var keys []index.Key
	for i := range 400 {
		keys = append(keys, cuPut(t, b, fmt.Sprint("p", i), unit(vecs[i]))...)
	}
	if err := b.Close(); err != nil { // saves a snapshot: remove it
		t.Fatal(err)
	}
	if err := os.Remove(b.snapshotFile); err != nil {
		t.Fatal(err)
	}

	gate := make(chan struct{})
	b2 := openCatchUp(t, dir, gate)
	released := false
	defer func() {
		if !released {
			close(gate)
		}
		b2.Close()
	}()
	c := b2.catchUp.Load()
	if c == nil || b2.graph.Len() != 0 || b2.CatchingUp() != 400 {
		t.Fatalf("reopened without a snapshot: graph %d, catching up %d; want 0 and 400 in the background",
			b2.graph.Len(), b2.CatchingUp())
	}
	queries := cuQueries(b2, t, []index.Key{keys[0], keys[200], keys[399]}, 4)
	checkServesStore(t, b2, queries, "rebuilding")
	added := cuPut(t, b2, "added", unit(vecs[500]))
	cuPut(t, b2, "p1", unit(vecs[501]))
	cuDelete(t, b2, "p2")
	queries = append(queries, unit(vecs[500]), unit(vecs[501]), unit(vecs[2]))
	checkServesStore(t, b2, queries, "rebuilding, after writes")
	// added is one more; p1's and p2's new states replace their pending ones.
	if b2.CatchingUp() != 401 {
		t.Fatalf("catching up %d photos after the writes, want 401", b2.CatchingUp())
	}
	if vs, _ := b2.Vectors(context.Background(), []index.Key{added[0], keys[2]}); vs[0] == nil || vs[1] != nil {
		t.Fatalf("Vectors of the added and the deleted photo while rebuilding: %v", vs)
	}

	close(gate)
	released = true
	<-c.done
	checkGraphIsStore(t, b2, "rebuilt")
	checkServesStore(t, b2, queries, "rebuilt")
}

// TestCatchUpCloseSavesNothing: a backend closed while its graph catches up (a write made
// meanwhile) saves no snapshot and leaves the store's change log whole, so the next start
// catches up again, that write included.
func TestCatchUpCloseSavesNothing(t *testing.T) {
	dir := t.TempDir()
	vecs := randomVectors(800, cuDim, 13)
	b := crashedBehind(t, dir, vecs, 50, 400)
	snap, err := os.ReadFile(b.snapshotFile)
	if err != nil {
		t.Fatal(err)
	}

	gate := make(chan struct{})
	defer close(gate)
	b2 := openCatchUp(t, dir, gate)
	cuPut(t, b2, "late", unit(vecs[700]))
	cuDelete(t, b2, "p3")
	if b2.CatchingUp() <= catchUpAbove {
		t.Fatalf("catching up %d photos, want the background path", b2.CatchingUp())
	}
	if err := b2.Close(); err != nil { // the workers are held: Close must not wait for them
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(b.snapshotFile); !bytes.Equal(got, snap) {
		t.Fatal("Close during the catch-up rewrote the snapshot")
	}

	gate3 := make(chan struct{})
	b3 := openCatchUp(t, dir, gate3)
	defer b3.Close()
	c := b3.catchUp.Load()
	close(gate3)
	if c == nil {
		t.Fatal("the second start did not catch up in the background")
	}
	<-c.done
	checkGraphIsStore(t, b3, "after the interrupted catch-up")
	checkServesStore(t, b3, cuQueries(b3, t, nil, 3), "after the interrupted catch-up")
	if truth := storeVectors(t, b3); len(truth) != 400 {
		t.Fatalf("%d photos, want 400 (p3 deleted, late added)", len(truth))
	}
}

// TestCatchUpConcurrentWritesAndSearches runs writes and searches beside the catch-up's
// workers (for the race detector, and for the hand-over from the catch-up to the graph at its
// end, wherever the writes fall) and demands the graph hold exactly the store afterwards.
func TestCatchUpConcurrentWritesAndSearches(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	vecs := randomVectors(1200, cuDim, 14)
	crashedBehind(t, dir, vecs, 100, 600)

	gate := make(chan struct{})
	b2 := openCatchUp(t, dir, gate)
	defer b2.Close()
	c := b2.catchUp.Load()
	if c == nil {
		t.Fatal("no background catch-up")
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		rng := rand.New(rand.NewPCG(3, 4))
		for i := range 300 {
			id := fmt.Sprint("p", rng.IntN(700))
			if i%5 == 4 {
				_, _ = b2.Delete(ctx, id) // may be absent
				continue
			}
			p := store.Product{ID: id, Photos: []store.Photo{{ID: "a", Vector: unit(vecs[600+i])}}}
			if _, err := b2.Put(ctx, []store.Product{p}); err != nil {
				t.Error(err)
				return
			}
		}
	})
	wg.Go(func() {
		for i := range 200 {
			q := unit(vecs[i*5%1200])
			ns, err := b2.Search(ctx, q, 10, PhotoQuery{EF: 64, Admit: func(k index.Key) bool { return k%2 == 0 }})
			if err != nil {
				t.Error(err)
				return
			}
			seen := make(map[index.Key]bool)
			for j, nb := range ns {
				if seen[nb.Key] || nb.Key%2 != 0 || (j > 0 && nb.Score > ns[j-1].Score) {
					t.Errorf("search %d: duplicate, unadmitted or unsorted results %v", i, ns)
					return
				}
				seen[nb.Key] = true
			}
			_, _ = b2.Vectors(ctx, []index.Key{index.Key(i)})
		}
	})
	close(gate)
	wg.Wait()
	<-c.done
	checkGraphIsStore(t, b2, "after concurrent writes")
}

// TestCatchUpReconcilesDisagreeingSnapshot: a snapshot holding a photo the store does not
// have (and lacking one it has), with nothing in the change log to say so, is found out by the
// count check at the end of the catch-up and reconciled with the store.
func TestCatchUpReconcilesDisagreeingSnapshot(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	vecs := randomVectors(40, cuDim, 15)
	b := openCatchUp(t, dir, nil)
	var keys []index.Key
	for i := range 30 {
		keys = append(keys, cuPut(t, b, fmt.Sprint("p", i), unit(vecs[i]))...)
	}
	// Corrupt the graph behind the store's back, then save it as the snapshot.
	if err := b.graph.Add(1<<20, unit(vecs[35])); err != nil {
		t.Fatal(err)
	}
	if err := b.graph.Add(1<<20+1, unit(vecs[36])); err != nil {
		t.Fatal(err)
	}
	b.graph.Delete(keys[4])
	if err := b.SaveSnapshot(ctx); err != nil {
		t.Fatal(err)
	}
	crashEmbedded(t, b)

	b2 := openCatchUp(t, dir, nil)
	defer b2.Close()
	checkGraphIsStore(t, b2, "reconciled")
	if _, ok := b2.graph.Vector(1 << 20); ok {
		t.Fatal("the photo the store never had is still in the graph")
	}
}
