// Package backendtest is the conformance suite every catalog.Backend passes: the embedded
// backend (catalog's own tests) and the Weaviate one (package weaviate's tests) run the same
// Run, on real photos embedded by the real model, so that the catalogue behaves the same over
// either.
//
// It must never import a backend implementation: each backend's tests hand it an Opener.
package backendtest

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"math"
	"os"
	"slices"
	"sync"
	"testing"

	"lookalike/catalog"
	"lookalike/embed"
	"lookalike/index"
	"lookalike/internal/dataset"
	"lookalike/store"
)

// Opener opens the backend named name for the embedder's model; opening a name again (after
// Close) opens the same catalogue, as a restart would. Names are fresh per subtest.
type Opener func(t *testing.T, name, modelIdentity string, dim int) catalog.Backend

// Embedder is the real model, opened once per test binary (Close it in TestMain, if at all).
var Embedder = sync.OnceValues(func() (*embed.Embedder, error) {
	return embed.Open(context.Background(), embed.Config{})
})

// photos are grocery photos and their analyses, shared by the subtests.
type photo struct {
	label    string
	image    []byte
	analysis embed.Analysis
}

var groceryPhotos = sync.OnceValues(func() ([]photo, error) {
	e, err := Embedder()
	if err != nil {
		return nil, err
	}
	ps, err := dataset.LoadPhotos(dataset.PhotosGrocery)
	if err != nil {
		return nil, err
	}
	var out []photo
	for i := 0; i < len(ps) && len(out) < 60; i += len(ps) / 60 {
		b, err := os.ReadFile(ps[i].Path)
		if err != nil {
			return nil, err
		}
		a, err := e.Analyze(context.Background(), b, embed.AnalyzeOptions{Keep: true})
		if err != nil {
			return nil, fmt.Errorf("analyse %s: %w", ps[i].Path, err)
		}
		out = append(out, photo{label: ps[i].Label, image: b, analysis: a})
	}
	return out, nil
})

func setup(t *testing.T) (*embed.Embedder, []photo) {
	t.Helper()
	e, err := Embedder()
	if err != nil {
		t.Fatalf("open embedder: %v", err)
	}
	ps, err := groceryPhotos()
	if err != nil {
		t.Fatalf("grocery photos: %v", err)
	}
	return e, ps
}

// Run runs the suite against the backends open makes.
func Run(t *testing.T, open Opener) {
	t.Run("Backend", func(t *testing.T) { testBackend(t, open) })
	t.Run("Catalog", func(t *testing.T) { testCatalog(t, open) })
}

func storePhoto(id string, p photo) store.Photo {
	return store.Photo{
		ID: id, ImageURL: "https://shop.example/" + id + ".jpg", PHash: p.analysis.PHash, PHashMirror: p.analysis.PHashMirror,
		HasPHash: true, Vector: p.analysis.Vector, Kept: p.analysis.Kept,
	}
}

func dot(a, b []float32) float32 {
	var s float32
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

// testBackend checks the Backend contract directly.
func testBackend(t *testing.T, open Opener) {
	ctx := context.Background()
	e, ps := setup(t)
	b := open(t, "backend", e.Identity(), e.Dim())
	if model, dim := b.Identity(); model != e.Identity() || dim != e.Dim() {
		t.Fatalf("Identity() = %q, %d", model, dim)
	}

	// Twenty products: one with three photos, the others with one; categories alternate.
	var products []store.Product
	for i := range 20 {
		p := store.Product{
			ID: fmt.Sprintf("p%02d", i), Category: []string{"fruit", "dairy"}[i%2], Title: fmt.Sprintf("Product %d", i),
			Attributes: map[string]string{"shelf": fmt.Sprint(i % 3)},
			Photos:     []store.Photo{storePhoto("front", ps[i])},
		}
		if i == 0 {
			p.Photos = append(p.Photos, storePhoto("back", ps[40]), storePhoto("side", ps[41]))
		}
		products = append(products, p)
	}
	stored, err := b.Put(ctx, products)
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	keys := map[index.Key]string{}
	for i, sp := range stored {
		if sp.ID != products[i].ID || len(sp.Photos) != len(products[i].Photos) || sp.Created.IsZero() {
			t.Fatalf("stored product %d: %+v", i, sp)
		}
		for j, ph := range sp.Photos {
			if ph.Key == 0 || keys[ph.Key] != "" || ph.ID != products[i].Photos[j].ID || ph.KeptBytes != len(products[i].Photos[j].Kept) {
				t.Fatalf("stored photo %s/%s: key %d (taken by %q), kept bytes %d", sp.ID, ph.ID, ph.Key, keys[ph.Key], ph.KeptBytes)
			}
			keys[ph.Key] = sp.ID + "/" + ph.ID
		}
	}
	p0 := stored[0]

	t.Run("Products", func(t *testing.T) {
		var got []store.Product
		if err := b.Products(ctx, func(p store.Product) error { got = append(got, p); return nil }); err != nil {
			t.Fatal(err)
		}
		if len(got) != len(stored) {
			t.Fatalf("Products listed %d, want %d", len(got), len(stored))
		}
		slices.SortFunc(got, func(x, y store.Product) int { return cmp.Compare(x.ID, y.ID) })
		for i, p := range got {
			w := stored[i]
			if p.ID != w.ID || p.Category != w.Category || p.Title != w.Title || fmt.Sprint(p.Attributes) != fmt.Sprint(w.Attributes) ||
				!p.Created.Equal(w.Created) || !p.Updated.Equal(w.Updated) || len(p.Photos) != len(w.Photos) {
				t.Fatalf("listed %+v, stored %+v", p, w)
			}
			for j, ph := range p.Photos {
				wp := w.Photos[j]
				if ph.ID != wp.ID || ph.Key != wp.Key || ph.ImageURL != wp.ImageURL || ph.PHash != wp.PHash || ph.PHashMirror != wp.PHashMirror ||
					ph.KeptBytes != wp.KeptBytes || !ph.Created.Equal(wp.Created) || ph.Vector != nil {
					t.Fatalf("listed photo %+v, stored %+v", ph, wp)
				}
			}
		}
	})

	t.Run("SearchExactScores", func(t *testing.T) {
		for i, sp := range stored[:6] {
			q := products[i].Photos[0].Vector
			ns, err := b.Search(ctx, q, 5, catalog.PhotoQuery{})
			if err != nil {
				t.Fatal(err)
			}
			if len(ns) != 5 || ns[0].Key != sp.Photos[0].Key || math.Abs(float64(ns[0].Score)-1) > 1e-3 {
				t.Fatalf("search by %s's own vector: %+v, want its key %d first at score 1", sp.ID, ns, sp.Photos[0].Key)
			}
			vs, err := b.Vectors(ctx, []index.Key{ns[1].Key, ns[4].Key})
			if err != nil {
				t.Fatal(err)
			}
			for j, n := range []index.Neighbor{ns[1], ns[4]} {
				if want := dot(q, vs[j]); math.Abs(float64(n.Score-want)) > 1e-4 {
					t.Fatalf("score %v of key %d, its inner product is %v", n.Score, n.Key, want)
				}
			}
			if !slices.IsSortedFunc(ns, func(x, y index.Neighbor) int { return cmp.Compare(y.Score, x.Score) }) {
				t.Fatalf("results not best first: %+v", ns)
			}
		}
	})

	t.Run("Filters", func(t *testing.T) {
		byKey := map[index.Key]store.Product{}
		for _, sp := range stored {
			for _, ph := range sp.Photos {
				byKey[ph.Key] = sp
			}
		}
		cases := []catalog.Filter{
			{Categories: []string{"dairy"}},
			{Categories: []string{"fruit", "dairy"}, ExcludeIDs: []string{"p00", "p02"}},
			{Attributes: map[string]string{"shelf": "1"}},
			{Categories: []string{"fruit"}, Attributes: map[string]string{"shelf": "2"}},
			{Categories: []string{"no such category"}},
		}
		for _, f := range cases {
			admits := func(sp store.Product) bool {
				if len(f.Categories) > 0 && !slices.Contains(f.Categories, sp.Category) || slices.Contains(f.ExcludeIDs, sp.ID) {
					return false
				}
				for k, v := range f.Attributes {
					if sp.Attributes[k] != v {
						return false
					}
				}
				return true
			}
			want := 0
			for _, sp := range stored {
				if admits(sp) {
					want += len(sp.Photos)
				}
			}
			q := products[5].Photos[0].Vector
			ns, err := b.Search(ctx, q, 30, catalog.PhotoQuery{Filter: f, Admit: func(k index.Key) bool { return admits(byKey[k]) }})
			if err != nil {
				t.Fatalf("filter %+v: %v", f, err)
			}
			if len(ns) != want {
				t.Fatalf("filter %+v: %d photos, want every one of the %d it admits", f, len(ns), want)
			}
			for _, n := range ns {
				if !admits(byKey[n.Key]) {
					t.Fatalf("filter %+v returned %s", f, keys[n.Key])
				}
			}
		}
	})

	t.Run("VectorsAndKeptPhotos", func(t *testing.T) {
		vs, err := b.Vectors(ctx, []index.Key{p0.Photos[1].Key, 999999, p0.Photos[0].Key})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(vs[0], products[0].Photos[1].Vector) || vs[1] != nil || !slices.Equal(vs[2], products[0].Photos[0].Vector) {
			t.Fatalf("Vectors: lengths %d %d %d; want the stored vectors and nil for an unknown key", len(vs[0]), len(vs[1]), len(vs[2]))
		}
		kept, err := b.KeptPhoto(ctx, p0.Photos[2].Key)
		if err != nil || !bytes.Equal(kept, products[0].Photos[2].Kept) {
			t.Fatalf("KeptPhoto: %d bytes, %v", len(kept), err)
		}
		if _, _, err := image.Decode(bytes.NewReader(kept)); err != nil {
			t.Fatalf("kept photo does not decode: %v", err)
		}
		if _, err := b.KeptPhoto(ctx, 999999); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("KeptPhoto of an unknown key: %v, want ErrNotFound", err)
		}
	})

	t.Run("Replace", func(t *testing.T) {
		// p00 keeps "front" as stored (no vector), gets a new "back", loses "side" and
		// gains "top"; its metadata changes.
		w := store.Product{ID: "p00", Category: "bakery", Title: "Renamed", Photos: []store.Photo{
			{ID: "front", ImageURL: "https://shop.example/front-2.jpg"},
			storePhoto("back", ps[42]),
			storePhoto("top", ps[43]),
		}}
		got, err := b.Put(ctx, []store.Product{w})
		if err != nil {
			t.Fatalf("Put: %v", err)
		}
		sp := got[0]
		if !sp.Created.Equal(p0.Created) || sp.Category != "bakery" || len(sp.Photos) != 3 {
			t.Fatalf("replaced: %+v (created was %v)", sp, p0.Created)
		}
		if sp.Photos[0].Key != p0.Photos[0].Key || sp.Photos[0].KeptBytes != p0.Photos[0].KeptBytes || sp.Photos[0].ImageURL != "https://shop.example/front-2.jpg" {
			t.Fatalf("kept photo: %+v, was %+v", sp.Photos[0], p0.Photos[0])
		}
		if sp.Photos[1].Key != p0.Photos[1].Key {
			t.Fatalf("a new image under an old photo id takes the old key: %d, was %d", sp.Photos[1].Key, p0.Photos[1].Key)
		}
		if top := sp.Photos[2].Key; keys[top] != "" {
			t.Fatalf("new photo got key %d, already %s", top, keys[top])
		}
		side := p0.Photos[2].Key
		vs, err := b.Vectors(ctx, []index.Key{sp.Photos[0].Key, sp.Photos[1].Key, side})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(vs[0], products[0].Photos[0].Vector) || !slices.Equal(vs[1], ps[42].analysis.Vector) || vs[2] != nil {
			t.Fatal("after replace: the kept photo must keep its vector, the new one have its own, the removed one none")
		}
		ns, err := b.Search(ctx, products[0].Photos[2].Vector, 3, catalog.PhotoQuery{Filter: catalog.Filter{Categories: []string{"bakery"}}})
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range ns {
			if n.Key == side {
				t.Fatal("the removed photo is still searchable")
			}
		}
		if len(ns) != 3 {
			t.Fatalf("filter on the new category: %d photos, want p00's 3", len(ns))
		}
		if _, err := b.KeptPhoto(ctx, side); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("kept copy of a removed photo: %v, want ErrNotFound", err)
		}
		p0 = sp
	})

	t.Run("Delete", func(t *testing.T) {
		gone, err := b.Delete(ctx, "p19")
		if err != nil || gone.ID != "p19" || len(gone.Photos) != 1 {
			t.Fatalf("Delete: %+v, %v", gone, err)
		}
		if _, err := b.Delete(ctx, "p19"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("second Delete: %v, want ErrNotFound", err)
		}
		ns, err := b.Search(ctx, products[19].Photos[0].Vector, 1, catalog.PhotoQuery{})
		if err != nil {
			t.Fatal(err)
		}
		if len(ns) == 1 && ns[0].Key == gone.Photos[0].Key {
			t.Fatal("a deleted product's photo is still searchable")
		}
	})

	t.Run("SettingsAndDecisions", func(t *testing.T) {
		if v, err := b.Setting(ctx, "policy"); err != nil || v != nil {
			t.Fatalf("unset setting: %q, %v", v, err)
		}
		if err := b.SetSetting(ctx, "policy", []byte(`{"x":1}`)); err != nil {
			t.Fatal(err)
		}
		if v, err := b.Setting(ctx, "policy"); err != nil || string(v) != `{"x":1}` {
			t.Fatalf("setting: %q, %v", v, err)
		}
		ds, err := b.PutDecisions(ctx, []store.Decision{
			{A: "p05", B: "p03", Verdict: store.VerdictSame, Keep: "p05", By: "reviewer", Note: "re-shot"},
			{A: "p07", B: "p08", Verdict: store.VerdictDifferent},
		})
		if err != nil || len(ds) != 2 || ds[0].A != "p03" || ds[0].At.IsZero() {
			t.Fatalf("PutDecisions: %+v, %v", ds, err)
		}
		if _, err := b.PutDecisions(ctx, []store.Decision{{A: "p01", B: "p01", Verdict: store.VerdictSame}}); !errors.Is(err, store.ErrInvalid) {
			t.Fatalf("a decision on one product: %v, want ErrInvalid", err)
		}
		got, err := b.Decisions(ctx)
		if err != nil || len(got) != 2 || got[0].A != "p03" || got[0].B != "p05" || got[0].Keep != "p05" || got[0].Note != "re-shot" || got[1].A != "p07" {
			t.Fatalf("Decisions: %+v, %v", got, err)
		}
		if err := b.DeleteDecision(ctx, "p08", "p07"); err != nil {
			t.Fatal(err)
		}
		if err := b.DeleteDecision(ctx, "p07", "p08"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("deleting a forgotten decision: %v, want ErrNotFound", err)
		}
	})

	t.Run("Reopen", func(t *testing.T) {
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		b = open(t, "backend", e.Identity(), e.Dim())
		var got []store.Product
		if err := b.Products(ctx, func(p store.Product) error { got = append(got, p); return nil }); err != nil {
			t.Fatal(err)
		}
		if len(got) != 19 {
			t.Fatalf("after reopen: %d products, want 19", len(got))
		}
		if v, err := b.Setting(ctx, "policy"); err != nil || string(v) != `{"x":1}` {
			t.Fatalf("setting after reopen: %q, %v", v, err)
		}
		if ds, err := b.Decisions(ctx); err != nil || len(ds) != 1 {
			t.Fatalf("decisions after reopen: %+v, %v", ds, err)
		}
		// Keys are never handed out again, across a restart too.
		sp, err := b.Put(ctx, []store.Product{{ID: "new", Photos: []store.Photo{storePhoto("front", ps[50])}}})
		if err != nil {
			t.Fatal(err)
		}
		if k := sp[0].Photos[0].Key; keys[k] != "" || k == p0.Photos[2].Key {
			t.Fatalf("a new photo after reopen got key %d, used before by %q", k, keys[k])
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

// testCatalog runs the catalogue over the backend on real photos: uploads, search by photo
// and by id, filters, duplicates of re-compressed copies, decisions.
func testCatalog(t *testing.T, open Opener) {
	ctx := context.Background()
	e, ps := setup(t)
	c, err := catalog.Open(ctx, catalog.Config{Backend: open(t, "catalog", e.Identity(), e.Dim()), Embedder: e, KeepPhotos: true})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer c.Close()
	var writes []catalog.Write
	for i, p := range ps[:40] {
		writes = append(writes, catalog.Write{ID: fmt.Sprintf("g%02d", i), Category: p.label, Photos: []catalog.PhotoWrite{{Image: p.image}}})
	}
	// A re-compressed copy of g03 uploaded as another product: a duplicate to find.
	img, _, err := image.Decode(bytes.NewReader(ps[3].image))
	if err != nil {
		t.Fatal(err)
	}
	var copyJPEG bytes.Buffer
	if err := jpeg.Encode(&copyJPEG, img, &jpeg.Options{Quality: 60}); err != nil {
		t.Fatal(err)
	}
	writes = append(writes, catalog.Write{ID: "g03-copy", Category: ps[3].label, Photos: []catalog.PhotoWrite{{Image: copyJPEG.Bytes()}}})
	for _, r := range c.UpsertBatch(ctx, writes) {
		if r.Err != nil || r.Outcome != catalog.Created {
			t.Fatalf("upsert %s: %v, %v", r.ID, r.Outcome, r.Err)
		}
	}
	if r, err := c.Upsert(ctx, writes[7]); err != nil || r.Outcome != catalog.Unchanged || r.Embedded != 0 {
		t.Fatalf("re-upsert of the same photo: %v, %+v", err, r)
	}

	rs, err := c.SearchByImage(ctx, ps[7].image, catalog.SearchOptions{K: 3})
	if err != nil || len(rs) != 3 || rs[0].Product.ID != "g07" || rs[0].Score < 0.999 {
		t.Fatalf("SearchByImage of g07's own photo: %+v, %v", rs, err)
	}
	rs, err = c.SearchByID(ctx, "g03", catalog.SearchOptions{K: 5})
	if err != nil || len(rs) != 5 || rs[0].Product.ID != "g03-copy" {
		t.Fatalf("SearchByID g03: %+v, %v; want its copy first", rs, err)
	}
	for _, r := range rs {
		if r.Product.ID == "g03" {
			t.Fatal("SearchByID returned the product itself")
		}
	}
	label := ps[7].label
	rs, err = c.SearchByImage(ctx, ps[7].image, catalog.SearchOptions{K: 40, Filter: catalog.Filter{Categories: []string{label}, ExcludeIDs: []string{"g07"}}})
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for _, w := range writes {
		if w.Category == label && w.ID != "g07" {
			want++
		}
	}
	if len(rs) != want {
		t.Fatalf("category filter %q: %d products, want all %d", label, len(rs), want)
	}
	for _, r := range rs {
		if r.Product.Category != label || r.Product.ID == "g07" {
			t.Fatalf("filtered search returned %s (%s)", r.Product.ID, r.Product.Category)
		}
	}
	p7, err := c.Get(ctx, "g07", true)
	if err != nil || len(p7.Photos) != 1 || len(p7.Photos[0].Vector) != e.Dim() {
		t.Fatalf("Get with vectors: %+v, %v", p7, err)
	}
	if kept, _, err := c.KeptPhoto(ctx, "g07", p7.Photos[0].ID); err != nil || len(kept) == 0 {
		t.Fatalf("KeptPhoto: %d bytes, %v", len(kept), err)
	}

	var clusters []catalog.Cluster
	err = c.FindDuplicates(ctx, catalog.DuplicateOptions{}, func(cl catalog.Cluster) error {
		clusters = append(clusters, cl)
		return nil
	})
	if err != nil {
		t.Fatalf("FindDuplicates: %v", err)
	}
	found := false
	for _, cl := range clusters {
		if slices.Contains(cl.IDs, "g03") && slices.Contains(cl.IDs, "g03-copy") {
			found = true
		}
	}
	if !found {
		t.Fatalf("the re-compressed copy is not in a cluster with its original: %+v", clusters)
	}
	if _, err := c.Resolve(ctx, catalog.Resolution{IDs: []string{"g03", "g03-copy"}, Verdict: catalog.Same, Keep: "g03"}); err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	if ds, err := c.Decisions(ctx); err != nil || len(ds) != 1 || ds[0].Keep != "g03" {
		t.Fatalf("Decisions: %+v, %v", ds, err)
	}
	if _, err := c.Delete(ctx, "g03-copy"); err != nil {
		t.Fatal(err)
	}
	if rs, err := c.SearchByID(ctx, "g03", catalog.SearchOptions{K: 1}); err != nil || rs[0].Product.ID == "g03-copy" {
		t.Fatalf("a deleted product is still found: %+v, %v", rs, err)
	}
}
