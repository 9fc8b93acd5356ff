package weaviate

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"lookalike/catalog"
	"lookalike/catalog/backendtest"
	"lookalike/internal/dataset"
	"lookalike/internal/weaviatetest"
)

// grocery returns the grocery catalogue (train and iconic photos) as one-photo products,
// and the street photos (val) as queries.
func grocery(t *testing.T) (catalogue []catalog.Write, street [][]byte) {
	t.Helper()
	photos, err := dataset.LoadPhotos(dataset.PhotosGrocery)
	if err != nil {
		t.Fatalf("load grocery photos: %v", err)
	}
	for _, p := range photos {
		b, err := os.ReadFile(p.Path)
		if err != nil {
			t.Fatal(err)
		}
		if p.Fields["split"] == "val" {
			street = append(street, b)
			continue
		}
		catalogue = append(catalogue, catalog.Write{
			ID: filepath.Base(p.Path), Category: p.Fields["coarse_label"], Title: p.Label,
			Attributes: map[string]string{"label": p.Label},
			Photos:     []catalog.PhotoWrite{{Image: b}},
		})
	}
	return catalogue, street
}

// TestThreeNodeCluster runs the catalogue over three Weaviate nodes with every shard on all
// three: it ingests the grocery catalogue, serves searches, keeps answering and acknowledging
// writes with one node killed -9, and after that node restarts every write acknowledged
// meanwhile is on every node.
func TestThreeNodeCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node Weaviate cluster")
	}
	if raceEnabled {
		t.Skip("the backend's concurrency is the catalogue's, which the conformance suite runs under -race; the cluster run is minutes")
	}
	ctx := context.Background()
	cluster := weaviatetest.Start(t, 3)
	e, err := backendtest.Embedder()
	if err != nil {
		t.Fatal(err)
	}
	b, err := Open(ctx, Config{URLs: cluster.URLs(), ModelIdentity: e.Identity(), Dim: e.Dim(), Replicas: 3, Shards: 3})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	c, err := catalog.Open(ctx, catalog.Config{Backend: b, Embedder: e})
	if err != nil {
		t.Fatalf("catalog.Open: %v", err)
	}
	defer c.Close()

	items, street := grocery(t)
	start := time.Now()
	for i := 0; i < len(items); i += 64 {
		for _, r := range c.UpsertBatch(ctx, items[i:min(i+64, len(items))]) {
			if r.Err != nil {
				t.Fatalf("upsert %s: %v", r.ID, r.Err)
			}
		}
	}
	t.Logf("ingested %d grocery products in %v", len(items), time.Since(start).Round(time.Millisecond))

	search := func(when string) {
		t.Helper()
		rs, err := c.SearchByImage(ctx, items[10].Photos[0].Image, catalog.SearchOptions{K: 5})
		if err != nil || len(rs) != 5 || rs[0].Product.ID != items[10].ID {
			t.Fatalf("%s: search by a catalogue photo: %+v, %v", when, rs, err)
		}
		for _, img := range street[:10] {
			if rs, err := c.SearchByImage(ctx, img, catalog.SearchOptions{K: 10}); err != nil || len(rs) != 10 {
				t.Fatalf("%s: search by a street photo: %d results, %v", when, len(rs), err)
			}
		}
		rs, err = c.SearchByID(ctx, items[20].ID, catalog.SearchOptions{K: 10, Filter: catalog.Filter{Categories: []string{items[20].Category}}})
		if err != nil || len(rs) == 0 {
			t.Fatalf("%s: search by id: %v", when, err)
		}
		for _, r := range rs {
			if r.Product.ID == items[20].ID || r.Product.Category != items[20].Category {
				t.Fatalf("%s: search by id returned %s (%s)", when, r.Product.ID, r.Product.Category)
			}
		}
	}
	search("all nodes up")

	down := cluster.Nodes[2]
	down.Kill()
	search("node3 killed")
	// Writes while node3 is down: acknowledged at QUORUM by the two others.
	var acked []catalog.Write
	for i, img := range street[:30] {
		w := catalog.Write{ID: fmt.Sprintf("street-%02d", i), Category: "street", Photos: []catalog.PhotoWrite{{Image: img}}}
		if _, err := c.Upsert(ctx, w); err != nil {
			t.Fatalf("write with node3 down: %v", err)
		}
		acked = append(acked, w)
	}
	goneKey := b.keyOf(t, items[0].ID)
	if _, err := c.Delete(ctx, items[0].ID); err != nil {
		t.Fatalf("delete with node3 down: %v", err)
	}
	search("node3 still down, after writes")

	rctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if err := down.Restart(rctx, 3); err != nil {
		t.Fatal(err)
	}
	// Every acknowledged write reaches node3 (async replication repairs it); read each
	// photo object from each node alone.
	var keys []uint32
	for _, w := range acked {
		keys = append(keys, b.keyOf(t, w.ID))
	}
	// wrong counts the node's disagreements with the acknowledged writes: photos written
	// that it lacks, and the deleted product's photo if it still has it.
	wrong := func(node string) int {
		n := 0
		q := url.Values{"node_name": {node}}
		for _, k := range keys {
			if err := b.c.do(rctx, http.MethodGet, "/v1/objects/"+b.cl.photos+"/"+b.cl.photoUUID(k), q, nil, nil); err != nil {
				n++
			}
		}
		if err := b.c.do(rctx, http.MethodGet, "/v1/objects/"+b.cl.photos+"/"+b.cl.photoUUID(goneKey), q, nil, nil); err == nil {
			n++
		}
		return n
	}
	for _, node := range cluster.Nodes {
		for {
			n := wrong(node.Name)
			if n == 0 {
				break
			}
			if rctx.Err() != nil {
				t.Fatalf("%s still disagrees on %d of the %d writes acknowledged while node3 was down", node.Name, n, len(keys)+1)
			}
			time.Sleep(time.Second)
		}
	}
	search("node3 back")
}

// keyOf is the photo key of a one-photo product.
func (b *Backend) keyOf(t *testing.T, id string) uint32 {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	p, ok := b.products[id]
	if !ok || len(p.Photos) != 1 {
		t.Fatalf("product %q: %+v", id, p)
	}
	return p.Photos[0].Key
}
