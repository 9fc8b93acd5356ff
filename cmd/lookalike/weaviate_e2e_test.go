package main

import (
	"path/filepath"
	"testing"

	"lookalike/internal/weaviatetest"
)

// TestEndToEndWeaviate runs the binary as a user would against a Weaviate node: serve with
// --backend weaviate, ingest a manifest, search by photo and by id, restart the server and
// find the catalogue still there (it lives in Weaviate, not on the server's disk).
func TestEndToEndWeaviate(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Weaviate and the server")
	}
	cluster := weaviatetest.Start(t, 1)
	e := newE2E(t)
	manifest := e.writeManifest()
	flags := []string{"--backend", "weaviate", "--weaviate-url", cluster.URLs()[0]}

	srv := e.startServerWith(flags...)
	res := e.run(exitFailure, "ingest", "--json", manifest)
	var sum ingestSummary
	mustJSON(t, res.stdout, &sum)
	if sum.Created != 10 || sum.Failed != 2 {
		t.Fatalf("ingest into Weaviate: %+v", sum)
	}
	query := filepath.Join(e.photos, "val__Garant-Ecological-Standard-Milk_005.jpg")
	var search searchJSON
	mustJSON(t, e.run(exitOK, "search", "--json", "--k", "5", query).stdout, &search)
	if len(search.Results) != 5 || search.Results[0].Product.Title != "Garant-Ecological-Standard-Milk" {
		t.Fatalf("search: %+v", search.Results)
	}
	var juice searchJSON
	mustJSON(t, e.run(exitOK, "search", "--json", "--category", "Juice", query).stdout, &juice)
	if len(juice.Results) != 3 {
		t.Errorf("category filter in Weaviate: %d results, want the 3 juice photos", len(juice.Results))
	}
	first := search.Results[0].Product.ID
	srv.stop()

	e.startServerWith(flags...)
	var again searchJSON
	mustJSON(t, e.run(exitOK, "search", "--json", "--k", "5", query).stdout, &again)
	if len(again.Results) != 5 || again.Results[0].Product.ID != first {
		t.Fatalf("after a restart: %+v, want %s first again", again.Results, first)
	}
	var like searchJSON
	mustJSON(t, e.run(exitOK, "similar", "--json", "--k", "3", first).stdout, &like)
	for _, r := range like.Results {
		if r.Product.ID == first {
			t.Fatal("more-like-this returned the product itself")
		}
	}
	if len(like.Results) != 3 {
		t.Fatalf("more like this: %+v", like.Results)
	}
}
