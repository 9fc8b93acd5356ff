package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
)

// TestConcurrentReadersAndWriters runs writers (upsert, batch, delete, log truncation, backup)
// against readers (Get, GetByKey, ForEach, ChangesSince, counts) on one real file; run it with
// -race. Every item's vector is derived from its id and version (held in Title), so a reader
// can tell a torn or mixed-up read from a consistent one.
func TestConcurrentReadersAndWriters(t *testing.T) {
	const (
		dim     = 16
		writers = 3
		readers = 3
		ops     = 150
	)
	ctx := context.Background()
	s, err := Open(filepath.Join(t.TempDir(), "c.db"), Options{ModelIdentity: testModel, Dim: dim, NoSync: true, Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	itemFor := func(id string, version int) Item {
		title := fmt.Sprintf("%s/v%d", id, version)
		return Item{ID: id, Category: fmt.Sprint(len(id) % 3), Title: title, Vector: vectorFor(title, dim)}
	}
	consistent := func(it Item) error {
		if !sameVector(it.Vector, vectorFor(it.Title, dim)) {
			return fmt.Errorf("item %q (%s) holds another version's vector", it.ID, it.Title)
		}
		return nil
	}

	// Each writer owns its ids, so its final model of them is exact.
	finals := make([]map[string]Item, writers)
	var done atomic.Bool
	var writersWG, othersWG sync.WaitGroup
	for w := range writers {
		writersWG.Add(1)
		go func() {
			defer writersWG.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 99))
			live := map[string]Item{}
			for op := range ops {
				id := fmt.Sprintf("w%d-%d", w, rng.IntN(40))
				switch r := rng.IntN(10); {
				case r < 5:
					it, err := s.Upsert(ctx, itemFor(id, op))
					if err != nil {
						t.Error(err)
						return
					}
					live[id] = it
				case r < 7:
					batch := []Item{itemFor(id, op), itemFor(id+"b", op)}
					out, err := s.UpsertBatch(ctx, batch)
					if err != nil {
						t.Error(err)
						return
					}
					for _, it := range out {
						live[it.ID] = it
					}
				default:
					_, err := s.Delete(ctx, id)
					if _, ok := live[id]; ok != (err == nil) || (err != nil && !errors.Is(err, ErrNotFound)) {
						t.Errorf("Delete(%s): %v, live %v", id, err, ok)
						return
					}
					delete(live, id)
				}
			}
			finals[w] = live
		}()
	}
	othersWG.Add(1)
	go func() {
		defer othersWG.Done()
		for !done.Load() {
			if err := s.TruncateLog(s.Seq() / 2); err != nil {
				t.Error(err)
				return
			}
			if _, err := s.Backup(io.Discard); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for r := range readers {
		othersWG.Add(1)
		go func() {
			defer othersWG.Done()
			rng := rand.New(rand.NewPCG(uint64(r), 7))
			var lastSeq uint64
			for !done.Load() {
				if seq := s.Seq(); seq < lastSeq {
					t.Errorf("Seq went back from %d to %d", lastSeq, seq)
					return
				} else {
					lastSeq = seq
				}
				id := fmt.Sprintf("w%d-%d", rng.IntN(writers), rng.IntN(40))
				if it, err := s.Get(id); err == nil {
					if err := consistent(it); err != nil {
						t.Error(err)
						return
					}
					if byKey, err := s.GetByKey(it.Key); err == nil && byKey.ID != id {
						t.Errorf("key %d of %q maps to %q", it.Key, id, byKey.ID)
						return
					}
				} else if !errors.Is(err, ErrNotFound) {
					t.Error(err)
					return
				}
				var n int
				if err := s.ForEach(func(it Item) error { n++; return consistent(it) }); err != nil {
					t.Error(err)
					return
				}
				err := s.ChangesSince(s.Seq(), func(Change) error { return nil })
				if err != nil && !errors.Is(err, ErrChangesUnavailable) {
					t.Error(err)
					return
				}
				if _, err := s.CountByCategory(); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	writersWG.Wait()
	done.Store(true)
	othersWG.Wait()
	if t.Failed() {
		return
	}

	want := map[string]Item{}
	for _, f := range finals {
		maps.Copy(want, f)
	}
	got := map[string]Item{}
	if err := s.ForEach(func(it Item) error { got[it.ID] = it; return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) || s.Count() != len(want) {
		t.Fatalf("%d items stored, Count %d, writers hold %d", len(got), s.Count(), len(want))
	}
	for id, w := range want {
		sameItem(t, got[id], w)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}
