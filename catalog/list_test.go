package catalog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
)

// TestList pages through a catalogue of vector-only products: id order, filters, the total,
// cursors that neither repeat nor skip products across writes, and refused page sizes.
func TestList(t *testing.T) {
	ctx := context.Background()
	c, err := Open(ctx, Config{DataDir: t.TempDir(), Embedder: vectorEmbedder{dim: 8}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	vec := func(i int) []float32 {
		v := make([]float32, 8)
		v[i%8] = 1
		return v
	}
	put := func(id, category string, i int) {
		t.Helper()
		if _, err := c.Upsert(ctx, Write{ID: id, Category: category, Attributes: map[string]string{"odd": fmt.Sprint(i%2 == 1)},
			Photos: []PhotoWrite{{Vector: vec(i)}}}); err != nil {
			t.Fatal(err)
		}
	}
	var all []string
	for i := range 25 {
		id := fmt.Sprintf("p%02d", 24-i) // written out of order
		put(id, []string{"a", "b"}[i%2], i)
		all = append(all, id)
	}
	slices.Sort(all)

	walk := func(opt ListOptions) (ids []string, total int) {
		t.Helper()
		for {
			page, err := c.List(ctx, opt)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range page.Products {
				ids = append(ids, p.ID)
			}
			total = page.Total
			if !page.More {
				return ids, total
			}
			opt.After = page.Products[len(page.Products)-1].ID
		}
	}
	for _, c := range []struct {
		name  string
		opt   ListOptions
		count int
	}{
		{"everything, default page", ListOptions{}, 25},
		{"pages of 4", ListOptions{Limit: 4}, 25},
		{"one category", ListOptions{Limit: 3, Filter: Filter{Categories: []string{"a"}}}, 13},
		{"an attribute", ListOptions{Limit: 5, Filter: Filter{Attributes: map[string]string{"odd": "true"}}}, 12},
		{"excluded ids", ListOptions{Limit: 7, Filter: Filter{ExcludeIDs: []string{"p00", "p24"}}}, 23},
	} {
		ids, total := walk(c.opt)
		if len(ids) != c.count || total != c.count || !slices.IsSorted(ids) {
			t.Errorf("%s: %d products (total %d), sorted %v; want %d", c.name, len(ids), total, slices.IsSorted(ids), c.count)
		}
	}
	if ids, _ := walk(ListOptions{Limit: 10}); !slices.Equal(ids, all) {
		t.Errorf("pages %v, want %v", ids, all)
	}

	// A cursor is a position: products written or deleted before it do not shift the rest.
	first, err := c.List(ctx, ListOptions{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	put("p005", "a", 3) // sorts inside the first page
	if _, err := c.Delete(ctx, "p03"); err != nil {
		t.Fatal(err)
	}
	rest, _ := walk(ListOptions{Limit: 10, After: first.Products[9].ID})
	if want := all[10:]; !slices.Equal(rest, want) {
		t.Errorf("after the first page and writes before it: %v, want %v", rest, want)
	}

	for _, limit := range []int{-1, MaxPageSize + 1} {
		if _, err := c.List(ctx, ListOptions{Limit: limit}); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("page size %d: %v, want ErrInvalidArgument", limit, err)
		}
	}
}
