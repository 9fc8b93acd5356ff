package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

func TestDedupHTMLReport(t *testing.T) {
	milk := sharedGroceryImage(t, "iconic__Arla-Standard-Milk_Iconic.jpg")
	juice := sharedGroceryImage(t, "iconic__Bravo-Apple-Juice_Iconic.jpg")
	out := dedupJSON{
		Threshold: 0.9,
		Clusters: []clusterJSON{{
			IDs:   []string{"a", "b", "c"},
			Edges: []edgeJSON{{A: "a", B: "b", Score: 0.97}, {A: "b", B: "c", Score: 0.91}},
			Products: []productJSON{
				{ID: "a", Title: "Milk <script>alert(1)</script>", Category: "Milk", ImageURL: milk},
				{ID: "b", Title: "Juice", ImageURL: juice},
				{ID: "c", Title: "Gone", ImageURL: "/nonexistent/c.jpg"},
			},
		}},
	}
	var buf bytes.Buffer
	if err := renderDedupHTML(context.Background(), &buf, out, newImageLoader(time.Second), time.Unix(0, 0)); err != nil {
		t.Fatal(err)
	}
	page := buf.String()
	if n := strings.Count(page, `src="data:image/jpeg;base64,`); n != 2 {
		t.Errorf("%d embedded thumbnails, want 2 (the third photo is missing)", n)
	}
	if strings.Contains(page, "<script>alert") {
		t.Error("a product title was not escaped")
	}
	for _, want := range []string{"Cluster 1: 3 products", "0.9100 to 0.9700", "no thumbnail", "no such file", "a ~ b", "threshold 0.90"} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	// Self-contained: nothing is fetched when the page is opened.
	for _, bad := range []string{`src="http`, `href="http`, "<link"} {
		if strings.Contains(page, bad) {
			t.Errorf("page refers to an outside resource: %q", bad)
		}
	}
}

func TestThumbnailRejectsGarbage(t *testing.T) {
	if _, err := thumbnail([]byte("not an image")); err == nil {
		t.Fatal("thumbnail of garbage succeeded")
	}
}
