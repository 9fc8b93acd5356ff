package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
)

// TestConcurrentReadersAndWriters runs writers (upsert, batch, metadata-only change, photo
// removal, delete, log truncation, backup) against readers (Get, GetWithVectors, Vector,
// KeptPhoto, ForEach, ForEachVector, ChangesSince, counts, Stats) on one real file; run it
// with -race. A product's photos and vectors are derived from its id and its vector version
// (the attribute "vv"), while Title changes on every write, so a reader can tell a torn or
// mixed-up read (a record of one write with vectors of another) from a consistent one.
func TestConcurrentReadersAndWriters(t *testing.T) {
	const (
		dim     = 16
		writers = 3
		readers = 3
		ops     = 150
	)
	ctx := context.Background()
	s := openFast(t, filepath.Join(t.TempDir(), "c.db"), dim)
	// productFor is version vv of id: 1 + vv%3 photos, each vector derived from (id, photo, vv).
	productFor := func(id string, vv, op int) Product {
		p := Product{ID: id, Category: fmt.Sprint(len(id) % 3), Title: fmt.Sprintf("%s/op%d", id, op),
			Attributes: map[string]string{"vv": strconv.Itoa(vv)}}
		for i := range 1 + vv%3 {
			ph := Photo{ID: fmt.Sprint("p", i), Vector: vectorFor(fmt.Sprintf("%s/p%d/v%d", id, i, vv), dim)}
			if i == 0 {
				ph.Kept = []byte(fmt.Sprintf("%s/v%d", id, vv))
			}
			p.Photos = append(p.Photos, ph)
		}
		return p
	}
	// shapeOK checks what a metadata-only read can: the photo set matches the vector version.
	shapeOK := func(p Product) error {
		vv, err := strconv.Atoi(p.Attributes["vv"])
		if err != nil {
			return fmt.Errorf("%q: attribute vv %q", p.ID, p.Attributes["vv"])
		}
		want := productFor(p.ID, vv, 0)
		if len(p.Photos) != len(want.Photos) {
			return fmt.Errorf("%q (vv %d) has %d photos, want %d", p.ID, vv, len(p.Photos), len(want.Photos))
		}
		for i, ph := range p.Photos {
			if ph.ID != want.Photos[i].ID || ph.KeptBytes != len(want.Photos[i].Kept) || ph.Key == 0 {
				return fmt.Errorf("%q (vv %d) photo %d is %+v", p.ID, vv, i, withoutVector(ph))
			}
		}
		return nil
	}
	// consistent checks a read with vectors: every vector is of the record's version.
	consistent := func(p Product) error {
		if err := shapeOK(p); err != nil {
			return err
		}
		vv, _ := strconv.Atoi(p.Attributes["vv"])
		want := productFor(p.ID, vv, 0)
		for i, ph := range p.Photos {
			if !sameVector(ph.Vector, want.Photos[i].Vector) {
				return fmt.Errorf("%q (vv %d) photo %s holds another version's vector", p.ID, vv, ph.ID)
			}
		}
		return nil
	}

	// Each writer owns its ids, so its final model of them is exact.
	finals := make([]map[string]Product, writers)
	var done atomic.Bool
	var writersWG, othersWG sync.WaitGroup
	for w := range writers {
		writersWG.Add(1)
		go func() {
			defer writersWG.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 99))
			live := map[string]Product{}
			fail := func(err error) { t.Error(err); done.Store(true) }
			for op := range ops {
				id := fmt.Sprintf("w%d-%d", w, rng.IntN(40))
				switch r := rng.IntN(10); {
				case r < 4:
					p, err := s.Upsert(ctx, productFor(id, op, op))
					if err != nil {
						fail(err)
						return
					}
					live[id] = p
				case r < 6:
					out, err := s.UpsertBatch(ctx, []Product{productFor(id, op, op), productFor(id+"b", op, op)})
					if err != nil {
						fail(err)
						return
					}
					for _, p := range out {
						live[p.ID] = p
					}
				case r < 8:
					// A metadata-only change of a live product: new title, vectors kept.
					old, ok := live[id]
					if !ok {
						continue
					}
					next := keepAll(old)
					next.Title = fmt.Sprintf("%s/op%d", id, op)
					p, err := s.Upsert(ctx, next)
					if err != nil {
						fail(err)
						return
					}
					live[id] = p
				default:
					_, err := s.Delete(ctx, id)
					if _, ok := live[id]; ok != (err == nil) || (err != nil && !errors.Is(err, ErrNotFound)) {
						fail(fmt.Errorf("Delete(%s): %v, live %v", id, err, ok))
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
				if p, err := s.GetWithVectors(id); err == nil {
					if err := consistent(p); err != nil {
						t.Error(err)
						return
					}
					// Read separately, a photo may have been rewritten or deleted meanwhile,
					// but never be something else.
					for _, ph := range p.Photos {
						if _, err := s.Vector(ph.Key); err != nil && !errors.Is(err, ErrNotFound) {
							t.Error(err)
							return
						}
						if _, err := s.KeptPhoto(ph.Key); err != nil && !errors.Is(err, ErrNotFound) {
							t.Error(err)
							return
						}
					}
				} else if !errors.Is(err, ErrNotFound) {
					t.Error(err)
					return
				}
				if p, err := s.Get(id); err == nil {
					if err := shapeOK(p); err != nil {
						t.Error(err)
						return
					}
				} else if !errors.Is(err, ErrNotFound) {
					t.Error(err)
					return
				}
				if err := s.ForEach(shapeOK); err != nil {
					t.Error(err)
					return
				}
				if err := s.ForEachVector(func(uint32, []float32) error { return nil }); err != nil {
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
				if _, err := s.Stats(); err != nil {
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

	want := map[string]Product{}
	for _, f := range finals {
		maps.Copy(want, f)
	}
	got := map[string]Product{}
	if err := s.ForEach(func(p Product) error { got[p.ID] = p; return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) || s.Count() != len(want) {
		t.Fatalf("%d products stored, Count %d, writers hold %d", len(got), s.Count(), len(want))
	}
	photos := 0
	for id, w := range want {
		sameProduct(t, got[id], w)
		p, err := s.GetWithVectors(id)
		if err != nil {
			t.Fatal(err)
		}
		if err := consistent(p); err != nil {
			t.Fatal(err)
		}
		jpeg, err := s.KeptPhoto(p.Photos[0].Key)
		if err != nil || string(jpeg) != id+"/v"+p.Attributes["vv"] {
			t.Fatalf("kept photo of %q: %q, %v", id, jpeg, err)
		}
		photos += len(p.Photos)
	}
	if s.Photos() != photos {
		t.Fatalf("Photos %d, products hold %d", s.Photos(), photos)
	}
	mustCheck(t, s)
}
