package index

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// TestCompactionRunsBesideWrites holds a compaction between its build and its catch-up, and
// meanwhile adds, replaces, deletes and searches: all of it returns while the compaction
// waits, which it could not if the compaction ran inside the write that started it (the
// test would hang). After the swap the graph must hold exactly the writes' outcome.
func TestCompactionRunsBesideWrites(t *testing.T) {
	for _, qz := range []Quantization{QuantizeNone, QuantizeInt8} {
		t.Run(qz.String(), func(t *testing.T) {
			const dim, n = 16, 600
			vecs, queries := clustered(5, n+200, 20, dim, 12, true)
			h := NewHNSW(dim, Config{Seed: 3, Quantize: qz})
			h.g.trainAt = 256 // train the quantiser well before the compaction
			want := addKeys(t, h, vecs[:n])
			built, release := make(chan struct{}), make(chan struct{})
			h.compactionRound = func(round int) {
				if round == 0 {
					close(built)
					<-release
				}
			}
			// 150 deletions: the 121st crosses 20% of 600 nodes and starts the compaction.
			for k := Key(1); k <= 150; k++ {
				if !h.Delete(k) {
					t.Fatalf("Delete(%d) found nothing", k)
				}
				delete(want, k)
			}
			<-built
			if st := h.Stats(); !st.Compacting || st.Compactions != 0 {
				t.Fatalf("held compaction: stats %+v, want compacting and none finished", st)
			}
			// Writes while the compaction holds: new keys, replacements, deletions of keys
			// the new graph already holds and of keys it has never seen.
			for i := range 100 {
				k := Key(1001 + i)
				if err := h.Add(k, vecs[n+i]); err != nil {
					t.Fatal(err)
				}
				want[k] = vecs[n+i]
			}
			for k := Key(300); k < 320; k++ {
				v := vecs[n+100+int(k-300)]
				if err := h.Add(k, v); err != nil {
					t.Fatal(err)
				}
				want[k] = v
			}
			for _, k := range []Key{400, 401, 402, 1001, 1002} {
				if !h.Delete(k) {
					t.Fatalf("Delete(%d) found nothing", k)
				}
				delete(want, k)
			}
			if got := h.Search(queries[0], 5, SearchOptions{}); len(got) != 5 {
				t.Fatalf("search during the compaction: %d results", len(got))
			}
			close(release)
			h.WaitCompaction()

			st := h.Stats()
			if st.Compacting || st.Compactions != 1 {
				t.Fatalf("after the compaction: stats %+v, want one finished", st)
			}
			// Left behind: the replayed deletions (the 29 after the one that started the
			// compaction, and 5 more) and replacements (20) only.
			if st.Live != len(want) || st.Tombstones != 54 {
				t.Fatalf("after the compaction: %d live, %d tombstones; want %d live, 54 tombstones",
					st.Live, st.Tombstones, len(want))
			}
			checkHolds(t, h, want, n+200)
		})
	}
}

// addKeys adds vecs under keys 1, 2, ... and returns what h then holds.
func addKeys(t *testing.T, h *HNSW, vecs [][]float32) map[Key][]float32 {
	t.Helper()
	want := make(map[Key][]float32, len(vecs))
	for i, v := range vecs {
		if err := h.Add(Key(i+1), v); err != nil {
			t.Fatal(err)
		}
		want[Key(i+1)] = v
	}
	return want
}

// checkHolds asserts that h holds exactly want (keys 1..maxKey, and 1001.. above), each with
// its vector, and finds each live vector's own key first.
func checkHolds(t *testing.T, h *HNSW, want map[Key][]float32, maxKey int) {
	t.Helper()
	for k := Key(1); k <= Key(maxKey)+1000; k++ {
		v, ok := h.Vector(k)
		wv, live := want[k]
		if ok != live {
			t.Fatalf("key %d: in index %v, want %v", k, ok, live)
		}
		if live && !slices.Equal(v, wv) {
			t.Fatalf("key %d holds another vector", k)
		}
	}
	e := NewExact(h.Dim(), h.Config().Metric)
	var queries [][]float32
	for k, v := range want {
		if err := e.Add(k, v); err != nil {
			t.Fatal(err)
		}
		if len(queries) < 50 {
			queries = append(queries, v)
		}
	}
	if r := RecallAtK(searchAll(h, queries, 10, SearchOptions{}), searchAll(e, queries, 10, SearchOptions{}), 10); r < 0.95 {
		t.Fatalf("recall@10 after the compaction %.3f, want >= 0.95", r)
	}
}

// TestCompactionCatchesUpInRounds makes the writes during the build outnumber what the
// compaction replays with writers waiting, so that it replays them in a round with writers
// going; a write made after that round took its batch must still reach the new graph.
func TestCompactionCatchesUpInRounds(t *testing.T) {
	const dim, n = 16, 400
	vecs, _ := clustered(8, n+300, 1, dim, 8, true)
	var logs strings.Builder
	h := NewHNSW(dim, Config{Seed: 4, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	want := addKeys(t, h, vecs[:n])
	built, release := make(chan struct{}), make(chan struct{})
	h.compactionRound = func(round int) {
		switch round {
		case 0:
			close(built)
			<-release
		case 1:
			if err := h.Add(2000, vecs[n+299]); err != nil {
				t.Error(err)
			}
		}
	}
	for k := Key(1); k <= 100; k++ {
		h.Delete(k)
		delete(want, k)
	}
	<-built
	for i := range 3 * catchUpUnderLock {
		k := Key(1001 + i)
		if err := h.Add(k, vecs[n+i]); err != nil {
			t.Fatal(err)
		}
		want[k] = vecs[n+i]
	}
	want[2000] = vecs[n+299]
	close(release)
	h.WaitCompaction()
	// The 81st deletion started the compaction; the 19 after it are replayed tombstones.
	if st := h.Stats(); st.Compactions != 1 || st.Live != len(want) || st.Tombstones != 19 {
		t.Fatalf("after the compaction: %+v, want %d live, 19 tombstones", st, len(want))
	}
	if !strings.Contains(logs.String(), "rounds=2") {
		t.Fatalf("the compaction did not catch up in two rounds; its log:\n%s", logs.String())
	}
	checkHolds(t, h, want, n+1000)
}

// TestCloseAbandonsCompaction: Close stops a compaction that has not swapped yet; the graph
// keeps its tombstones and every key, and no compaction starts after.
func TestCloseAbandonsCompaction(t *testing.T) {
	const dim, n = 16, 400
	vecs, _ := clustered(9, n, 1, dim, 8, true)
	h := NewHNSW(dim, Config{Seed: 5})
	want := addKeys(t, h, vecs[:n])
	h.compactionRound = func(round int) {
		if h.stopUpkeep() == nil {
			t.Error("stopUpkeep found no compaction running")
		}
	}
	for k := Key(1); k <= 100; k++ {
		h.Delete(k)
		delete(want, k)
	}
	h.WaitCompaction()
	st := h.Stats()
	if st.Compacting || st.Compactions != 0 || st.Tombstones != 100 {
		t.Fatalf("after an abandoned compaction: %+v, want 100 tombstones and none finished", st)
	}
	for k := Key(101); k <= 200; k++ {
		h.Delete(k)
		delete(want, k)
	}
	if st := h.Stats(); st.Compacting || st.Tombstones != 200 {
		t.Fatalf("after Close: %+v, want no compaction started", st)
	}
	h.Close() // a second stop is harmless
	checkHolds(t, h, want, n)
}

// TestSaveSnapshotFreezesTheGraph holds a save after it has copied the graph's links and
// flags, changes the graph (new nodes linked into old ones, deletions, a replacement, and the
// int8 quantiser's training), then lets the save write: the file must be byte for byte the
// one an identical graph that was never changed writes.
func TestSaveSnapshotFreezesTheGraph(t *testing.T) {
	cases := []struct {
		name    string
		qz      Quantization
		trainAt int
		outside bool // SnapshotInfo.VectorsOutside
	}{
		{"float32", QuantizeNone, quantTrainSize, false},
		{"float32 vectors outside", QuantizeNone, quantTrainSize, true},
		{"int8", QuantizeInt8, 100, false},
		{"int8 vectors outside", QuantizeInt8, 100, true},
		{"int8 trained while saving", QuantizeInt8, 320, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			const dim, n = 16, 300
			vecs, _ := clustered(11, n+60, 1, dim, 8, true)
			build := func() *HNSW {
				h := NewHNSW(dim, Config{Seed: 7, Quantize: tc.qz})
				h.g.trainAt = tc.trainAt
				for i := range n {
					if err := h.Add(Key(i+1), vecs[i]); err != nil {
						t.Fatal(err)
					}
				}
				for k := Key(1); k <= 10; k++ {
					h.Delete(k)
				}
				return h
			}
			changed, quiet := build(), build()
			changed.savedFrozen = func() {
				for i := range 60 {
					if err := changed.Add(Key(1001+i), vecs[n+i]); err != nil {
						t.Error(err)
					}
				}
				for k := Key(20); k < 30; k++ {
					changed.Delete(k)
				}
				if err := changed.Add(50, vecs[n]); err != nil {
					t.Error(err)
				}
			}
			dir := t.TempDir()
			a, b := filepath.Join(dir, "changed.hnsw"), filepath.Join(dir, "quiet.hnsw")
			info := SnapshotInfo{Seq: 9, VectorsOutside: tc.outside}
			if err := changed.SaveSnapshot(a, info); err != nil {
				t.Fatal(err)
			}
			if err := quiet.SaveSnapshot(b, info); err != nil {
				t.Fatal(err)
			}
			if changed.Len() != n-10+60-10 {
				t.Fatalf("the changed graph has %d keys, want %d", changed.Len(), n-10+60-10)
			}
			if tc.trainAt == 320 && !changed.Stats().Quantized {
				t.Fatal("the quantiser was not trained during the save")
			}
			fa, err := os.ReadFile(a)
			if err != nil {
				t.Fatal(err)
			}
			fb, err := os.ReadFile(b)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(fa, fb) {
				t.Fatalf("the snapshot of the graph changed while saving (%d bytes) differs from the unchanged graph's (%d bytes)", len(fa), len(fb))
			}
		})
	}
}

// TestUpkeepBesideConcurrentWriters runs writers, searchers and snapshot saves at once over
// enough churn for several compactions, for the race detector; every writer owns its keys,
// so the final content is known.
func TestUpkeepBesideConcurrentWriters(t *testing.T) {
	const dim, writers, perWriter, rounds = 16, 3, 150, 6
	vecs, queries := clustered(13, writers*perWriter*2, 10, dim, 10, true)
	h := NewHNSW(dim, Config{Seed: 8})
	dir := t.TempDir()
	wants := make([]map[Key][]float32, writers)
	var wg sync.WaitGroup
	done := make(chan struct{})
	for w := range writers {
		wants[w] = map[Key][]float32{}
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for r := range rounds {
				for i := range perWriter {
					k := Key(w*perWriter + i + 1)
					v := vecs[rng.IntN(len(vecs))]
					if r%2 == 1 && i%3 == 0 {
						h.Delete(k)
						delete(wants[w], k)
						continue
					}
					if err := h.Add(k, v); err != nil {
						t.Error(err)
						return
					}
					wants[w][k] = v
				}
			}
		})
	}
	var aux sync.WaitGroup
	aux.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			h.Search(queries[i%len(queries)], 5, SearchOptions{})
		}
	})
	aux.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			path := filepath.Join(dir, fmt.Sprintf("g%d.hnsw", i%2))
			if err := h.Save(path, uint64(i)); err != nil {
				t.Error(err)
				return
			}
			if _, _, err := LoadHNSW(path); err != nil {
				t.Error(err)
				return
			}
		}
	})
	wg.Wait()
	close(done)
	aux.Wait()
	h.WaitCompaction()
	want := map[Key][]float32{}
	for _, m := range wants {
		for k, v := range m {
			want[k] = v
		}
	}
	st := h.Stats()
	if st.Compactions == 0 {
		t.Fatalf("no compaction ran: %+v", st)
	}
	t.Logf("%d compactions; %+v", st.Compactions, st)
	checkHolds(t, h, want, writers*perWriter)
}
