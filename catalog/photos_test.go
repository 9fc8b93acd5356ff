package catalog

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"image/jpeg"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"lookalike/embed"
	"lookalike/index"
	"lookalike/store"
)

// trainPhotos returns the first n train photos of a grocery product, checking that their
// bytes are distinct.
func trainPhotos(t testing.TB, label string, n int) []groceryPhoto {
	t.Helper()
	var out []groceryPhoto
	seen := map[[32]byte]bool{}
	for _, p := range groceryPhotos(t) {
		if p.label == label && p.split == "train" && len(out) < n {
			sum := sha256.Sum256(p.image)
			if seen[sum] {
				t.Fatalf("%s is a byte copy of an earlier photo", p.name)
			}
			seen[sum] = true
			out = append(out, p)
		}
	}
	if len(out) != n {
		t.Fatalf("%s has %d train photos, want %d", label, len(out), n)
	}
	return out
}

func photoIDOf(image []byte) string {
	sum := sha256.Sum256(image)
	return store.BytesPhotoID(hex.EncodeToString(sum[:]))
}

func photoIDs(ps []Photo) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.ID
	}
	return out
}

func imagesOf(ps []groceryPhoto) [][]byte {
	out := make([][]byte, len(ps))
	for i, p := range ps {
		out[i] = p.image
	}
	return out
}

// photoWrites lists images as photos with derived ids.
func photoWrites(images [][]byte) []PhotoWrite {
	out := make([]PhotoWrite, len(images))
	for i, b := range images {
		out[i] = PhotoWrite{Image: b}
	}
	return out
}

// graphFigures is what a write that touches no vector must leave alone.
func graphFigures(c *Catalog) index.Stats {
	s := c.emb().graph.Stats()
	s.Bytes = 0
	return s
}

// TestProductPhotoLifecycle follows products with 1, 2 and 32 real photos through every
// kind of write: each photo is searchable on its own, removing one takes it out of search
// and Get, a re-ingest with one photo changed runs the model for that photo only, and a
// metadata-only edit runs no model, logs one metadata change and leaves the graph alone.
// The photo count in Stats and the graph follows each step, and a reopen keeps the result.
func TestProductPhotoLifecycle(t *testing.T) {
	ctx := context.Background()
	yog := trainPhotos(t, "Arla-Natural-Yoghurt", 36) // 32 for "many", 4 spares
	juice := trainPhotos(t, "Bravo-Orange-Juice", 3)  // 2 for "two", 1 spare
	oat := trainPhotos(t, "Oatly-Oat-Milk", 1)
	base := cachedEmbedder(t)
	base.warm(t, slices.Concat(imagesOf(yog), imagesOf(juice), imagesOf(oat)), true)
	base.warm(t, slices.Concat(imagesOf(yog), imagesOf(juice)), false)
	emb := &countingEmbedder{Embedder: base}
	dir := t.TempDir()
	c := openWith(t, dir, emb)

	// calls checks how many photos the model saw since the last check.
	var lastAnalyzed int64
	calls := func(step string, want int) {
		t.Helper()
		got := emb.analyzed.Load() - lastAnalyzed
		lastAnalyzed = emb.analyzed.Load()
		if got != int64(want) {
			t.Fatalf("%s: the model analysed %d photos, want %d", step, got, want)
		}
	}
	photosAre := func(step string, products, photos int) {
		t.Helper()
		st, err := c.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Count != products || st.Photos != photos || st.Index.Size != photos || c.emb().graph.Len() != photos {
			t.Fatalf("%s: %d products, %d photos, graph %d/%d; want %d products, %d photos",
				step, st.Count, st.Photos, st.Index.Size, c.emb().graph.Len(), products, photos)
		}
	}
	get := func(id string) Product {
		t.Helper()
		p, err := c.Get(ctx, id, true)
		if err != nil {
			t.Fatalf("Get %s: %v", id, err)
		}
		for _, ph := range p.Photos {
			if len(ph.Vector) != c.Dim() {
				t.Fatalf("%s photo %s: vector of %d", id, ph.ID, len(ph.Vector))
			}
		}
		return p
	}
	// top returns the best result for an image.
	top := func(image []byte) Result {
		t.Helper()
		rs, err := c.SearchByImage(ctx, image, SearchOptions{K: 1})
		if err != nil || len(rs) != 1 {
			t.Fatalf("search: %v, %v", rs, err)
		}
		return rs[0]
	}

	manyImages := imagesOf(yog[:32])
	manyWrite := Write{ID: "many", Category: "Yoghurt", Title: "Arla natural yoghurt", Attributes: map[string]string{"brand": "Arla"}, Photos: photoWrites(manyImages)}
	twoWrite := Write{ID: "two", Category: "Juice", Photos: []PhotoWrite{
		{ID: "front", Image: juice[0].image, ImageURL: "https://example.com/front.jpg"},
		{ID: "back", Image: juice[1].image},
	}}
	oneWrite := Write{ID: "one", Category: "Oat-Milk", Photos: photoWrites(imagesOf(oat))}

	res := c.UpsertBatch(ctx, []Write{oneWrite, twoWrite, manyWrite})
	for i, want := range []struct {
		photos []string
	}{
		{[]string{photoIDOf(oat[0].image)}},
		{[]string{"front", "back"}},
		{func() []string {
			var ids []string
			for _, b := range manyImages {
				ids = append(ids, photoIDOf(b))
			}
			return ids
		}()},
	} {
		r := res[i]
		if r.Err != nil || r.Outcome != Created || r.Embedded != len(want.photos) || !slices.Equal(photoIDs(r.Photos), want.photos) {
			t.Fatalf("create %s: %v, %v, embedded %d, photos %v; want created, %d embedded, photos %v",
				r.ID, r.Err, r.Outcome, r.Embedded, photoIDs(r.Photos), len(want.photos), want.photos)
		}
	}
	calls("create", 35)
	photosAre("create", 3, 35)
	manyIDs := photoIDs(res[2].Photos)
	many := get("many")
	if !slices.Equal(photoIDs(many.Photos), manyIDs) {
		t.Fatalf("Get many: photos %v, want %v in write order", photoIDs(many.Photos), manyIDs)
	}
	for i, ph := range many.Photos {
		sum := sha256.Sum256(manyImages[i])
		if ph.SHA256 != hex.EncodeToString(sum[:]) || ph.Created.IsZero() || ph.Updated.IsZero() || ph.Kept {
			t.Fatalf("photo %d: %+v", i, ph)
		}
		// Every photo finds its product, through itself.
		if r := top(manyImages[i]); r.Product.ID != "many" || r.PhotoID != ph.ID || r.Score < 0.999 {
			t.Fatalf("search by photo %d found %s photo %s score %v", i, r.Product.ID, r.PhotoID, r.Score)
		}
	}
	if two := get("two"); two.Photos[0].ImageURL != "https://example.com/front.jpg" || two.Photos[1].ImageURL != "" {
		t.Fatalf("two: photo URLs %q, %q", two.Photos[0].ImageURL, two.Photos[1].ImageURL)
	}
	if d, err := c.CheckDuplicate(ctx, manyImages[3], 0, Filter{}); err != nil || !d.IsDuplicate || d.BestMatch.Product.ID != "many" || d.BestMatch.PhotoID != manyIDs[3] {
		t.Fatalf("CheckDuplicate of a stored photo: %+v, %v", d, err)
	}
	lastAnalyzed = emb.analyzed.Load() // a query, analysed for its pHash; the counts are of writes

	// Remove one photo, keeping the others: gone from Get and from search.
	removed := manyIDs[5]
	removedVec := many.Photos[5].Vector
	w := manyWrite
	w.Photos, w.KeepOtherPhotos, w.RemovePhotos = nil, true, []string{removed}
	r, err := c.Upsert(ctx, w)
	wantIDs := slices.Delete(slices.Clone(manyIDs), 5, 6)
	if err != nil || r.Outcome != Updated || r.Embedded != 0 || !slices.Equal(photoIDs(r.Photos), wantIDs) {
		t.Fatalf("remove photo: %v, %v, embedded %d, photos %v", err, r.Outcome, r.Embedded, photoIDs(r.Photos))
	}
	calls("remove a photo", 0)
	photosAre("remove a photo", 3, 34)
	if got := photoIDs(get("many").Photos); !slices.Equal(got, wantIDs) {
		t.Fatalf("Get after removing %s: %v", removed, got)
	}
	for _, q := range [][]float32{removedVec} {
		rs, err := c.SearchByVector(ctx, q, SearchOptions{K: 3})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			if r.PhotoID == removed || (r.Product.ID == "many" && r.Score > 0.999) {
				t.Fatalf("the removed photo still answers searches: %s photo %s score %v", r.Product.ID, r.PhotoID, r.Score)
			}
		}
	}
	if _, _, err := c.KeptPhoto(ctx, "many", removed); !errors.Is(err, ErrNotFound) {
		t.Fatalf("KeptPhoto of a removed photo: %v, want ErrNotFound", err)
	}

	// Add one photo, keeping the others: only it is embedded, and it comes last.
	w = manyWrite
	w.Photos, w.KeepOtherPhotos = photoWrites([][]byte{yog[32].image}), true
	r, err = c.Upsert(ctx, w)
	wantIDs = append(wantIDs, photoIDOf(yog[32].image))
	if err != nil || r.Outcome != Updated || r.Embedded != 1 || !slices.Equal(photoIDs(r.Photos), wantIDs) {
		t.Fatalf("add photo: %v, %v, embedded %d, photos %v", err, r.Outcome, r.Embedded, photoIDs(r.Photos))
	}
	calls("add a photo", 1)
	photosAre("add a photo", 3, 35)

	// Re-ingest the whole set with one photo's bytes changed (its derived id changes with
	// them): that photo alone runs through the model.
	current := slices.Concat(manyImages[:5], manyImages[6:], [][]byte{yog[32].image})
	current[0] = yog[33].image
	w = manyWrite
	w.Photos = photoWrites(current)
	r, err = c.Upsert(ctx, w)
	wantIDs[0] = photoIDOf(yog[33].image)
	if err != nil || r.Outcome != Updated || r.Embedded != 1 || !slices.Equal(photoIDs(r.Photos), wantIDs) {
		t.Fatalf("re-ingest with one photo changed: %v, %v, embedded %d, photos %v", err, r.Outcome, r.Embedded, photoIDs(r.Photos))
	}
	calls("re-ingest with one photo changed", 1)
	photosAre("re-ingest with one photo changed", 3, 35)
	if r := top(yog[33].image); r.Product.ID != "many" || r.PhotoID != wantIDs[0] {
		t.Fatalf("the new photo is not searchable: %+v", r)
	}

	// The same with an explicit photo id: "back" gets new bytes under its old id.
	before := get("two")
	w = twoWrite
	w.Photos = slices.Clone(twoWrite.Photos)
	w.Photos[1].Image = juice[2].image
	r, err = c.Upsert(ctx, w)
	if err != nil || r.Outcome != Updated || r.Embedded != 1 || !slices.Equal(photoIDs(r.Photos), []string{"front", "back"}) {
		t.Fatalf("new bytes for photo back: %v, %v, embedded %d, photos %v", err, r.Outcome, r.Embedded, photoIDs(r.Photos))
	}
	calls("new bytes under an explicit id", 1)
	photosAre("new bytes under an explicit id", 3, 35)
	after := get("two")
	if !reflect.DeepEqual(after.Photos[0], before.Photos[0]) {
		t.Fatalf("photo front changed although its bytes did not:\n%+v\n%+v", before.Photos[0], after.Photos[0])
	}
	if b, a := before.Photos[1], after.Photos[1]; a.SHA256 == b.SHA256 || !a.Created.Equal(b.Created) || slices.Equal(a.Vector, b.Vector) {
		t.Fatalf("photo back after new bytes: sha %s -> %s, created %v -> %v", b.SHA256, a.SHA256, b.Created, a.Created)
	}
	if r := top(juice[2].image); r.Product.ID != "two" || r.PhotoID != "back" || r.Score < 0.999 {
		t.Fatalf("search by the new back photo: %+v", r)
	}

	// A metadata-only edit: no model, one metadata change in the store's log, the graph
	// untouched and every search answering as before.
	query := yog[34].image
	searchBefore, err := c.SearchByImage(ctx, query, SearchOptions{K: 3})
	if err != nil {
		t.Fatal(err)
	}
	graphBefore := graphFigures(c)
	seq := c.emb().store.Seq()
	w = manyWrite
	w.Photos = photoWrites(current)
	w.Title, w.Attributes = "renamed", map[string]string{"brand": "Arla", "size": "1l"}
	r, err = c.Upsert(ctx, w)
	if err != nil || r.Outcome != Updated || r.Embedded != 0 || !slices.Equal(photoIDs(r.Photos), wantIDs) {
		t.Fatalf("metadata-only edit: %v, %v, embedded %d, photos %v", err, r.Outcome, r.Embedded, photoIDs(r.Photos))
	}
	calls("metadata-only edit", 0)
	photosAre("metadata-only edit", 3, 35)
	var changes []store.Change
	if err := c.emb().store.ChangesSince(seq, func(ch store.Change) error { changes = append(changes, ch); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(changes) != 1 || !changes[0].Metadata() || c.emb().store.Seq() != seq+1 {
		t.Fatalf("metadata-only edit logged %+v (seq %d -> %d), want one metadata change", changes, seq, c.emb().store.Seq())
	}
	if g := graphFigures(c); g != graphBefore {
		t.Fatalf("metadata-only edit changed the graph: %+v -> %+v", graphBefore, g)
	}
	searchAfter, err := c.SearchByImage(ctx, query, SearchOptions{K: 3})
	if err != nil {
		t.Fatal(err)
	}
	for i := range searchAfter {
		a, b := searchAfter[i], searchBefore[i]
		if a.Product.ID != b.Product.ID || a.PhotoID != b.PhotoID || a.Score != b.Score {
			t.Fatalf("a metadata-only edit changed search result %d: %s/%s %v -> %s/%s %v", i, b.Product.ID, b.PhotoID, b.Score, a.Product.ID, a.PhotoID, a.Score)
		}
		if a.Product.ID == "many" && a.Product.Title != "renamed" {
			t.Fatalf("search returned the old title %q", a.Product.Title)
		}
	}
	// Keeping photos by reference, with a new URL: metadata again.
	seq = c.emb().store.Seq()
	r, err = c.Upsert(ctx, Write{ID: "two", Category: "Juice", Photos: []PhotoWrite{
		{ID: "front", ImageURL: "https://example.com/front-2.jpg"}, {ID: "back", ImageURL: "https://example.com/back.jpg"},
	}})
	if err != nil || r.Outcome != Updated || r.Embedded != 0 || r.Photos[0].ImageURL != "https://example.com/front-2.jpg" || r.Photos[1].ImageURL != "https://example.com/back.jpg" {
		t.Fatalf("URL-only edit: %v, %v, embedded %d, photos %+v", err, r.Outcome, r.Embedded, r.Photos)
	}
	calls("URL-only edit", 0)
	if c.emb().store.Seq() != seq+1 || graphFigures(c) != graphBefore {
		t.Fatalf("URL-only edit: seq %d -> %d, graph %+v -> %+v", seq, c.emb().store.Seq(), graphBefore, graphFigures(c))
	}

	// An identical write changes nothing at all.
	seq = c.emb().store.Seq()
	r, err = c.Upsert(ctx, w)
	if err != nil || r.Outcome != Unchanged || r.Embedded != 0 || !slices.Equal(photoIDs(r.Photos), wantIDs) || c.emb().store.Seq() != seq {
		t.Fatalf("identical re-upsert: %v, %v, embedded %d, seq %d -> %d", err, r.Outcome, r.Embedded, seq, c.emb().store.Seq())
	}
	calls("identical re-upsert", 0)

	// A reopen serves the same products and photos.
	snapshot := map[string]Product{}
	for _, id := range []string{"one", "two", "many"} {
		snapshot[id] = get(id)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c = openWith(t, dir, emb)
	photosAre("reopen", 3, 35)
	for id, want := range snapshot {
		if got := get(id); !reflect.DeepEqual(got, want) {
			t.Fatalf("%s after reopen:\n%+v\nwant\n%+v", id, got, want)
		}
	}

	// Deleting the product takes all its photos out.
	if _, err := c.Delete(ctx, "many"); err != nil {
		t.Fatal(err)
	}
	photosAre("delete", 2, 3)
	for _, b := range current {
		if r := top(b); r.Product.ID == "many" {
			t.Fatalf("a deleted product's photo answers searches: %+v", r)
		}
	}
	calls("searches", 0)
}

// TestProductPhotoWriteErrors checks the writes that must be refused, each before any
// photo reaches the model and without touching the store.
func TestProductPhotoWriteErrors(t *testing.T) {
	ctx := context.Background()
	oat := trainPhotos(t, "Oatly-Oat-Milk", 2)
	emb := &countingEmbedder{Embedder: cachedEmbedder(t)}
	c := openWith(t, t.TempDir(), emb)
	vecs := randomVectors(2*store.MaxPhotos, c.Dim(), 31)
	vectorPhotos := func(n, from int) []PhotoWrite {
		out := make([]PhotoWrite, n)
		for i := range out {
			out[i] = PhotoWrite{ID: fmt.Sprint("v", from+i), Vector: vecs[from+i]}
		}
		return out
	}
	if _, err := c.Upsert(ctx, Write{ID: "p", Photos: []PhotoWrite{{ID: "a", Vector: vecs[0]}, {ID: "b", Image: oat[0].image}}}); err != nil {
		t.Fatal(err)
	}
	// Exactly MaxPhotos is fine.
	if r, err := c.Upsert(ctx, Write{ID: "full", Photos: vectorPhotos(store.MaxPhotos, 0)}); err != nil || len(r.Photos) != store.MaxPhotos {
		t.Fatalf("%d photos: %v", store.MaxPhotos, err)
	}
	stored, err := c.Get(ctx, "p", true)
	if err != nil {
		t.Fatal(err)
	}
	seq, analyzed := c.emb().store.Seq(), emb.analyzed.Load()

	tests := []struct {
		name string
		w    Write
		want error
	}{
		{"one image listed twice", Write{ID: "new", Photos: photoWrites([][]byte{oat[1].image, oat[1].image})}, ErrInvalidArgument},
		{"one photo id twice", Write{ID: "new", Photos: []PhotoWrite{{ID: "x", Vector: vecs[1]}, {ID: "x", Image: oat[1].image}}}, ErrInvalidArgument},
		{"a kept photo also sent again", Write{ID: "p", KeepOtherPhotos: true, Photos: []PhotoWrite{{ID: "a"}, {ID: "a", Vector: vecs[2]}}}, ErrInvalidArgument},
		{"more than MaxPhotos", Write{ID: "new", Photos: vectorPhotos(store.MaxPhotos+1, 0)}, ErrInvalidArgument},
		{"more than MaxPhotos with the kept ones", Write{ID: "p", KeepOtherPhotos: true, Photos: vectorPhotos(store.MaxPhotos-1, 1)}, ErrInvalidArgument},
		{"removing an unknown photo", Write{ID: "p", KeepOtherPhotos: true, RemovePhotos: []string{"nope"}}, ErrNotFound},
		{"removing a photo of a new product", Write{ID: "new", KeepOtherPhotos: true, Photos: vectorPhotos(1, 3), RemovePhotos: []string{"a"}}, ErrNotFound},
		{"keeping an unknown photo", Write{ID: "p", Photos: []PhotoWrite{{ID: "a"}, {ID: "nope"}}}, ErrNotFound},
		{"keeping a photo of a new product", Write{ID: "new", Photos: []PhotoWrite{{ID: "a"}}}, ErrNotFound},
		{"removing every photo", Write{ID: "p", KeepOtherPhotos: true, RemovePhotos: []string{"a", "b"}}, ErrInvalidArgument},
		{"a write with no photo for a stored product", Write{ID: "p", Title: "no photos"}, ErrInvalidArgument},
		{"a new product with no photo", Write{ID: "new", KeepOtherPhotos: true}, ErrInvalidArgument},
		{"writing and removing one photo", Write{ID: "p", KeepOtherPhotos: true, Photos: []PhotoWrite{{ID: "a", Vector: vecs[4]}}, RemovePhotos: []string{"a"}}, ErrInvalidArgument},
		{"removing without keep_other_photos", Write{ID: "p", Photos: []PhotoWrite{{ID: "a"}}, RemovePhotos: []string{"b"}}, ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := c.Upsert(ctx, tt.w)
			if !errors.Is(err, tt.want) || r.Outcome != 0 || r.Err != err {
				t.Fatalf("got %v (outcome %v), want %v", err, r.Outcome, tt.want)
			}
			if c.emb().store.Seq() != seq || emb.analyzed.Load() != analyzed {
				t.Fatalf("a refused write reached the store (seq %d -> %d) or the model (%d calls)", seq, c.emb().store.Seq(), emb.analyzed.Load()-analyzed)
			}
			if got, err := c.Get(ctx, "p", true); err != nil || !reflect.DeepEqual(got, stored) {
				t.Fatalf("a refused write changed the product: %+v, %v", got, err)
			}
			if _, err := c.Get(ctx, "new", false); !errors.Is(err, ErrNotFound) {
				t.Fatalf("a refused write created a product: %v", err)
			}
		})
	}

	// In a batch, a bad write fails alone, and writes to one id apply in order, each on
	// top of the one before.
	res := c.UpsertBatch(ctx, []Write{
		{ID: "p", KeepOtherPhotos: true, Photos: []PhotoWrite{{ID: "c", Vector: vecs[5]}}},
		{ID: "bad", Photos: []PhotoWrite{{ID: "nope"}}},
		{ID: "p", KeepOtherPhotos: true, RemovePhotos: []string{"a"}},
		{ID: "q", Photos: vectorPhotos(1, 6)},
	})
	if res[0].Err != nil || res[2].Err != nil || res[3].Err != nil || !errors.Is(res[1].Err, ErrNotFound) {
		t.Fatalf("batch: %v, %v, %v, %v", res[0].Err, res[1].Err, res[2].Err, res[3].Err)
	}
	if got := photoIDs(res[2].Photos); !slices.Equal(got, []string{"b", "c"}) {
		t.Fatalf("after adding c and then removing a: photos %v, want [b c]", got)
	}
	if p, err := c.Get(ctx, "p", false); err != nil || !slices.Equal(photoIDs(p.Photos), []string{"b", "c"}) {
		t.Fatalf("Get p: %v, %v", p, err)
	}
	if emb.analyzed.Load() != analyzed {
		t.Fatalf("the batch ran the model %d times; it held no new image", emb.analyzed.Load()-analyzed)
	}
}

// TestSearchReturnsKProducts checks that searches count products, not photos: on products
// of nine real photos each, a filter that admits a few products still gets k of them (a
// photo-level top k would spend its places on one product's photos), SearchByID never
// returns the product it starts from, and its scores are the best pair of photos.
func TestSearchReturnsKProducts(t *testing.T) {
	ctx := context.Background()
	g := smallGrocery(t)
	c := openWith(t, t.TempDir(), cachedEmbedder(t))
	upsertAll(t, c, g.multiPhotoWrites())
	n := c.Len()
	if n != 31 {
		t.Fatalf("%d products", n)
	}
	vectors := map[string][][]float32{}
	for _, label := range g.labels {
		p, err := c.Get(ctx, label, true)
		if err != nil {
			t.Fatal(err)
		}
		for _, ph := range p.Photos {
			vectors[label] = append(vectors[label], ph.Vector)
		}
	}
	// bruteForce scores every other admitted product by its best pair of photos.
	bruteForce := func(id string, admit func(string) bool) []float32 {
		var scores []float32
		for _, other := range g.labels {
			if other == id || !admit(other) {
				continue
			}
			best := float32(math.Inf(-1))
			for _, a := range vectors[id] {
				for _, b := range vectors[other] {
					best = max(best, dot(a, b))
				}
			}
			scores = append(scores, best)
		}
		slices.SortFunc(scores, func(a, b float32) int { return -cmpFloat(a, b) })
		return scores
	}

	for _, id := range g.labels {
		rs, err := c.SearchByID(ctx, id, SearchOptions{K: MaxK})
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) != n-1 || slices.Contains(ids(rs), id) {
			t.Fatalf("SearchByID(%s, K=%d) returned %d results (itself among them: %v), want the %d others", id, MaxK, len(rs), slices.Contains(ids(rs), id), n-1)
		}
	}

	photoLevelShort := 0
	for _, kind := range []string{"Milk", "Juice", "Yoghurt"} {
		var members []string
		for _, label := range g.labels {
			if g.kind[label] == kind {
				members = append(members, label)
			}
		}
		inKind := func(id string) bool { return g.kind[id] == kind }
		filters := []Filter{{Categories: []string{kind}}, {Attributes: map[string]string{"kind": kind}}}
		for _, f := range filters {
			for _, id := range members {
				want := bruteForce(id, inKind)
				for _, k := range []int{3, len(members) - 1, len(members) + 5} {
					rs, err := c.SearchByID(ctx, id, SearchOptions{K: k, Filter: f, EF: 400})
					if err != nil {
						t.Fatal(err)
					}
					if len(rs) != min(k, len(members)-1) {
						t.Fatalf("%s filter %+v k=%d: %d results, want %d", id, f, k, len(rs), min(k, len(members)-1))
					}
					for i, r := range rs {
						if r.Product.ID == id || !inKind(r.Product.ID) || math.Abs(float64(r.Score-want[i])) > 1e-5 {
							t.Fatalf("%s filter %+v k=%d result %d: %s score %v, want another %s product scoring %v", id, f, k, i, r.Product.ID, r.Score, kind, want[i])
						}
						if _, ok := r.Product.Photo(r.PhotoID); !ok {
							t.Fatalf("result %s names photo %q it does not have", r.Product.ID, r.PhotoID)
						}
					}
				}
			}
			// From a street photo: k products of the kind, where the photo-level top k
			// often holds fewer.
			for _, q := range g.queries {
				k := len(members)
				rs, err := c.SearchByImage(ctx, q.image, SearchOptions{K: k, Filter: f})
				if err != nil {
					t.Fatal(err)
				}
				if len(rs) != k {
					t.Fatalf("%s filter %+v k=%d: %d results", q.name, f, k, len(rs))
				}
				vec, err := c.embedder.Embed(ctx, q.image)
				if err != nil {
					t.Fatal(err)
				}
				a := c.compileFilter(f)
				distinct := map[*entry]bool{}
				for _, nb := range c.emb().graph.Search(vec, k, index.SearchOptions{EF: 200, Filter: a.fn()}) {
					c.metaMu.RLock()
					distinct[c.byKey[nb.Key]] = true
					c.metaMu.RUnlock()
				}
				if len(distinct) < k {
					photoLevelShort++
				}
			}
		}
	}
	if photoLevelShort == 0 {
		t.Errorf("the photo-level top k always held k products: the test proves nothing")
	}

	// A filter that admits only the product itself leaves nothing, without an error.
	if rs, err := c.SearchByID(ctx, "Arla-Sour-Milk", SearchOptions{K: 5, Filter: Filter{Categories: []string{"Sour-Milk"}}}); err != nil || len(rs) != 0 {
		t.Fatalf("SearchByID with only itself in the filter: %v, %v", ids(rs), err)
	}
}

func cmpFloat(a, b float32) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// TestKeptPhotosOff: without Config.KeepPhotos no photo is kept, and asking for one is
// ErrNotFound.
func TestKeptPhotosOff(t *testing.T) {
	ctx := context.Background()
	oat := trainPhotos(t, "Oatly-Oat-Milk", 1)
	c := openWith(t, t.TempDir(), cachedEmbedder(t))
	r, err := c.Upsert(ctx, Write{ID: "p", Photos: photoWrites(imagesOf(oat))})
	if err != nil {
		t.Fatal(err)
	}
	if r.Photos[0].Kept || r.Photos[0].KeptBytes != 0 {
		t.Fatalf("a photo was kept without KeepPhotos: %+v", r.Photos[0])
	}
	if _, _, err := c.KeptPhoto(ctx, "p", r.Photos[0].ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("KeptPhoto: %v, want ErrNotFound", err)
	}
	for _, bad := range [][2]string{{"p", "nope"}, {"nope", r.Photos[0].ID}} {
		if _, _, err := c.KeptPhoto(ctx, bad[0], bad[1]); !errors.Is(err, ErrNotFound) {
			t.Fatalf("KeptPhoto(%q, %q): %v, want ErrNotFound", bad[0], bad[1], err)
		}
	}
	if st, err := c.Stats(ctx); err != nil || st.KeptPhotos != 0 || st.KeptBytes != 0 {
		t.Fatalf("Stats: %+v, %v", st, err)
	}
}

// TestKeptPhotosAndPHash: with Config.KeepPhotos each photo stored from an image keeps a
// JPEG of the model's resize size (shorter side 256) and its perceptual hash; the copies
// come back through KeptPhoto, count in Stats, leave with their photo and survive a reopen.
// A photo stored from a vector has neither.
func TestKeptPhotosAndPHash(t *testing.T) {
	ctx := context.Background()
	juice := trainPhotos(t, "Bravo-Orange-Juice", 2)
	emb := cachedEmbedder(t)
	probe, err := emb.Analyze(ctx, juice[0].image, embed.AnalyzeOptions{Keep: true})
	if err != nil {
		t.Fatal(err)
	}
	if probe.Kept == nil {
		t.Skip("needs embed.Analyze with kept photos")
	}
	want := map[string]embed.Analysis{}
	for _, p := range juice {
		a, err := emb.Analyze(ctx, p.image, embed.AnalyzeOptions{Keep: true})
		if err != nil {
			t.Fatal(err)
		}
		want[photoIDOf(p.image)] = a
	}
	dir := t.TempDir()
	open := func() *Catalog {
		c, err := Open(ctx, Config{DataDir: dir, Embedder: emb, KeepPhotos: true})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := open()
	vec := randomVectors(1, c.Dim(), 41)[0]
	r, err := c.Upsert(ctx, Write{ID: "p", Photos: append(photoWrites(imagesOf(juice)), PhotoWrite{ID: "from-vector", Vector: vec})})
	if err != nil {
		t.Fatal(err)
	}
	check := func(c *Catalog, step string, kept int) {
		t.Helper()
		p, err := c.Get(ctx, "p", false)
		if err != nil {
			t.Fatal(err)
		}
		var total int64
		n := 0
		for _, ph := range p.Photos {
			if ph.ID == "from-vector" {
				if ph.Kept || ph.HasPHash {
					t.Fatalf("%s: a photo stored from a vector has a kept copy or a pHash: %+v", step, ph)
				}
				if _, _, err := c.KeptPhoto(ctx, "p", ph.ID); !errors.Is(err, ErrNotFound) {
					t.Fatalf("%s: KeptPhoto of a vector photo: %v", step, err)
				}
				continue
			}
			a := want[ph.ID]
			if !ph.HasPHash || ph.PHash != a.PHash || ph.PHash == 0 {
				t.Fatalf("%s: photo %s pHash %x (has %v), want %x", step, ph.ID, ph.PHash, ph.HasPHash, a.PHash)
			}
			jpg, meta, err := c.KeptPhoto(ctx, "p", ph.ID)
			if err != nil || !ph.Kept || ph.KeptBytes != len(jpg) || !bytes.Equal(jpg, a.Kept) || meta.ID != ph.ID {
				t.Fatalf("%s: kept photo %s: %d bytes (photo says %d, kept %v), %v", step, ph.ID, len(jpg), ph.KeptBytes, ph.Kept, err)
			}
			cfg, err := jpeg.DecodeConfig(bytes.NewReader(jpg))
			if err != nil || min(cfg.Width, cfg.Height) != 256 {
				t.Fatalf("%s: kept photo %s is %dx%d (%v), want a JPEG with shorter side 256", step, ph.ID, cfg.Width, cfg.Height, err)
			}
			n++
			total += int64(len(jpg))
		}
		st, err := c.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n != kept || st.KeptPhotos != kept || st.KeptBytes != total {
			t.Fatalf("%s: %d kept photos (Stats %d, %d bytes; counted %d bytes), want %d", step, n, st.KeptPhotos, st.KeptBytes, total, kept)
		}
	}
	check(c, "upsert", 2)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c = open()
	defer c.Close()
	check(c, "reopen", 2)
	gone := r.Photos[0].ID
	if _, err := c.Upsert(ctx, Write{ID: "p", KeepOtherPhotos: true, RemovePhotos: []string{gone}}); err != nil {
		t.Fatal(err)
	}
	check(c, "remove a photo", 1)
	if _, _, err := c.KeptPhoto(ctx, "p", gone); !errors.Is(err, ErrNotFound) {
		t.Fatalf("KeptPhoto of a removed photo: %v", err)
	}
}

// TestFindDuplicatesAcrossProducts: near-identical photos of one product are never a
// pair, while a photo of another product close to any of its photos joins the two, and
// the edge names the two photos that matched.
func TestFindDuplicatesAcrossProducts(t *testing.T) {
	ctx := context.Background()
	c := openCatalog(t, t.TempDir())
	defer c.Close()
	rng := rand.New(rand.NewPCG(7, 8))
	b := randomVectors(6, c.Dim(), 17)
	side := near(b[1], 0.02, rng)
	shot := near(b[0], 0.05, rng)
	writes := []Write{
		// m's back and side are near copies of each other: one product, not duplicates.
		{ID: "m", Photos: []PhotoWrite{{ID: "front", Vector: b[0]}, {ID: "back", Vector: b[1]}, {ID: "side", Vector: side}}},
		{ID: "n", Photos: []PhotoWrite{{ID: "other", Vector: b[2]}, {ID: "shot", Vector: shot}}},
		{ID: "s", Photos: []PhotoWrite{{ID: "a", Vector: b[3]}, {ID: "b", Vector: near(b[3], 0.02, rng)}}},
		{ID: "t", Photos: []PhotoWrite{{ID: "a", Vector: b[4]}}},
	}
	for _, r := range c.UpsertBatch(ctx, writes) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	n0, _ := normalise(b[0], c.Dim())
	ns, _ := normalise(shot, c.Dim())
	var got []Cluster
	if err := c.FindDuplicates(ctx, DuplicateOptions{Threshold: 0.9}, func(cl Cluster) error { got = append(got, cl); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !slices.Equal(got[0].IDs, []string{"m", "n"}) || len(got[0].Edges) != 1 {
		t.Fatalf("clusters %+v, want only {m, n}", got)
	}
	e := got[0].Edges[0]
	if e.A != "m" || e.B != "n" || e.PhotoA != "front" || e.PhotoB != "shot" || math.Abs(float64(e.Score-dot(n0, ns))) > 1e-5 {
		t.Fatalf("edge %+v, want m/front - n/shot scoring %v", e, dot(n0, ns))
	}
	// Only the product's own near copies pass the threshold: no cluster.
	if err := c.FindDuplicates(ctx, DuplicateOptions{Threshold: 0.9, Filter: Filter{ExcludeIDs: []string{"n"}}}, func(cl Cluster) error {
		return fmt.Errorf("unexpected cluster %v", cl.IDs)
	}); err != nil {
		t.Fatal(err)
	}
}
