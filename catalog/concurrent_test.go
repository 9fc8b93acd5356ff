package catalog

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
)

// TestConcurrentPhotoEditsOfOneProduct has several writers add and remove photos of one
// product at once, each with KeepOtherPhotos, some from vectors and some from real photos:
// every write plans on the state it read and, when another writer got there first, plans
// again on top of the new state, so no write may undo another's. Readers search and read
// the product meanwhile. At the end the product holds exactly the photos nobody removed,
// each searchable, and the model ran once per photo image. Beside them, another product's
// whole photo set is replaced again and again while readers ask for it by id.
func TestConcurrentPhotoEditsOfOneProduct(t *testing.T) {
	ctx := context.Background()
	const writers, perWriter = 6, 6
	photos := groceryChoice(t, 0).photos
	imageWriters := map[int][]groceryPhoto{0: photos["Arla-Natural-Yoghurt"][1:], 3: photos["Garant-Ecological-Medium-Fat-Milk"][1:]}
	base := cachedEmbedder(t)
	for _, ps := range imageWriters {
		base.warm(t, imagesOf(ps[:perWriter]), true)
	}
	emb := &countingEmbedder{Embedder: base}
	c := openWith(t, t.TempDir(), emb)
	vecs := randomVectors(writers*perWriter+1, c.Dim(), 51)
	if _, err := c.Upsert(ctx, Write{ID: "p", Title: "shared", Photos: []PhotoWrite{{ID: "base", Vector: vecs[0]}}}); err != nil {
		t.Fatal(err)
	}
	// Other products, so that searches have something to rank.
	for i := range 20 {
		if _, err := c.Upsert(ctx, single(Write{ID: fmt.Sprint("o", i)}, PhotoWrite{Vector: randomVectors(1, c.Dim(), uint64(100+i))[0]})); err != nil {
			t.Fatal(err)
		}
	}
	photoOf := func(w, j int) PhotoWrite {
		id := fmt.Sprintf("w%d-%d", w, j)
		if ps, ok := imageWriters[w]; ok {
			return PhotoWrite{ID: id, Image: ps[j].image}
		}
		return PhotoWrite{ID: id, Vector: vecs[1+w*perWriter+j]}
	}

	var embedded atomic.Int64
	var writersDone sync.WaitGroup
	stop := make(chan struct{})
	for w := range writers {
		writersDone.Add(1)
		go func() {
			defer writersDone.Done()
			for j := range perWriter {
				r, err := c.Upsert(ctx, Write{ID: "p", Title: "shared", KeepOtherPhotos: true, Photos: []PhotoWrite{photoOf(w, j)}})
				if err != nil {
					t.Error(err)
					return
				}
				embedded.Add(int64(r.Embedded))
				if j%2 == 1 {
					// Remove this writer's previous photo: the odd ones stay.
					if _, err := c.Upsert(ctx, Write{ID: "p", Title: "shared", KeepOtherPhotos: true, RemovePhotos: []string{fmt.Sprintf("w%d-%d", w, j-1)}}); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	// "r" gets a whole new set of photos again and again: SearchByID and Get of it must
	// never find it missing.
	rVecs := randomVectors(8, c.Dim(), 61)
	rSet := func(n int) []PhotoWrite {
		return []PhotoWrite{{ID: fmt.Sprint("r", n%4, "a"), Vector: rVecs[2*(n%4)]}, {ID: fmt.Sprint("r", n%4, "b"), Vector: rVecs[2*(n%4)+1]}}
	}
	if _, err := c.Upsert(ctx, Write{ID: "r", Photos: rSet(0)}); err != nil {
		t.Fatal(err)
	}
	writersDone.Add(1)
	go func() {
		defer writersDone.Done()
		for n := 1; n <= 40; n++ {
			if _, err := c.Upsert(ctx, Write{ID: "r", Photos: rSet(n)}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	var readers sync.WaitGroup
	for range 2 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				p, err := c.Get(ctx, "p", true)
				if err != nil {
					t.Error(err)
					return
				}
				phIDs := photoIDs(p.Photos)
				if phIDs[0] != "base" || len(slices.Compact(slices.Sorted(slices.Values(phIDs)))) != len(phIDs) {
					t.Errorf("photos %v: base first, each once", phIDs)
					return
				}
				rs, err := c.SearchByID(ctx, "p", SearchOptions{K: 5})
				if err != nil || len(rs) != 5 || slices.Contains(ids(rs), "p") {
					t.Errorf("SearchByID: %v, %v", rs, err)
					return
				}
				if r, err := c.Get(ctx, "r", true); err != nil || len(r.Photos) != 2 {
					t.Errorf("Get of a product whose photos are being replaced: %+v, %v", r, err)
					return
				}
				if rs, err := c.SearchByID(ctx, "r", SearchOptions{K: 3}); err != nil || len(rs) != 3 {
					t.Errorf("SearchByID of a product whose photos are being replaced: %v, %v", ids(rs), err)
					return
				}
				if _, err := c.SearchByVector(ctx, vecs[0], SearchOptions{K: 3}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	writersDone.Wait()
	close(stop)
	readers.Wait()

	want := []string{"base"}
	for w := range writers {
		for j := 1; j < perWriter; j += 2 {
			want = append(want, fmt.Sprintf("w%d-%d", w, j))
		}
	}
	p, err := c.Get(ctx, "p", true)
	if err != nil {
		t.Fatal(err)
	}
	got := photoIDs(p.Photos)
	if got[0] != "base" || !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))) {
		t.Fatalf("photos after the concurrent edits: %v\nwant (in any order after base) %v", got, want)
	}
	st, err := c.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Photos != len(want)+22 || c.emb().graph.Len() != st.Photos || c.emb().store.Photos() != st.Photos {
		t.Fatalf("%d photos (graph %d, store %d), want %d", st.Photos, c.emb().graph.Len(), c.emb().store.Photos(), len(want)+22)
	}
	for _, ph := range p.Photos {
		rs, err := c.SearchByVector(ctx, ph.Vector, SearchOptions{K: 1})
		if err != nil || len(rs) != 1 || rs[0].Product.ID != "p" || rs[0].PhotoID != ph.ID || rs[0].Score < 0.999 {
			t.Fatalf("photo %s does not find itself: %+v, %v", ph.ID, rs, err)
		}
	}
	images := int64(len(imageWriters) * perWriter)
	if emb.analyzed.Load() != images || embedded.Load() != images {
		t.Fatalf("the model analysed %d photos (results say %d), want each of the %d images once", emb.analyzed.Load(), embedded.Load(), images)
	}
}
