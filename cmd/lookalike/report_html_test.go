package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"lookalike/embed"
)

func TestDedupHTMLReport(t *testing.T) {
	milk := sharedGroceryImage(t, "iconic__Arla-Standard-Milk_Iconic.jpg")
	juice := sharedGroceryImage(t, "iconic__Bravo-Apple-Juice_Iconic.jpg")
	out := dedupJSON{
		Threshold: 0.9,
		Clusters: []clusterJSON{{
			IDs:  []string{"a", "b", "c"},
			Tier: "look-alike",
			Edges: []edgeJSON{
				{A: "a", B: "b", Score: 0.97, Tier: "copy", Hamming: 3, CropHamming: -1, Decision: &decisionJSON{Verdict: "same", Keep: "a", By: "ann"}},
				{A: "b", B: "c", Score: 0.91, Tier: "copy", Hamming: 19, CropHamming: 4, CropCorrelation: 0.9991},
			},
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
	for _, want := range []string{"Cluster 1: 3 products", "0.9100 to 0.9700", "no thumbnail", "no such file", "a ~ b", "weakest tier look-alike", "3 of 64", "19 of 64", "4 of 64, correlation 0.9991", "same, keep a by ann"} {
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

// pngHeaderClaiming is a PNG of a signature and an IHDR chunk only, declaring w x h pixels:
// a few dozen bytes that an unchecked decoder would answer with w*h*4 bytes of pixels.
func pngHeaderClaiming(w, h uint32) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 2 // 8-bit RGB
	_ = binary.Write(&b, binary.BigEndian, uint32(len(ihdr)))
	chunk := append([]byte("IHDR"), ihdr...)
	b.Write(chunk)
	_ = binary.Write(&b, binary.BigEndian, crc32.ChecksumIEEE(chunk))
	return b.Bytes()
}

// TestThumbnailRefusesAHugeHeader: 12000x12000 is over the embedder's pixel limit, so the
// header alone refuses it, before any pixel buffer exists.
func TestThumbnailRefusesAHugeHeader(t *testing.T) {
	_, err := thumbnail(pngHeaderClaiming(12000, 12000))
	if !errors.Is(err, embed.ErrTooLarge) {
		t.Fatalf("thumbnail of a 12000x12000 header: %v, want an error wrapping embed.ErrTooLarge", err)
	}
}

// TestThumbnailRedirects: the review page follows a redirect within the photo's own host and
// refuses one to another host, which never sees a request.
func TestThumbnailRedirects(t *testing.T) {
	photo, err := os.ReadFile(sharedGroceryImage(t, "iconic__Arla-Standard-Milk_Iconic.jpg"))
	if err != nil {
		t.Fatal(err)
	}
	var elsewhereHits atomic.Int32
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhereHits.Add(1)
		_, _ = w.Write(photo)
	}))
	defer elsewhere.Close()
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/photo.jpg":
			_, _ = w.Write(photo)
		case "/moved.jpg":
			http.Redirect(w, r, "/photo.jpg", http.StatusFound)
		case "/away.jpg":
			http.Redirect(w, r, elsewhere.URL+"/photo.jpg", http.StatusFound)
		case "/loop.jpg":
			http.Redirect(w, r, "/loop.jpg", http.StatusFound)
		default:
			http.NotFound(w, r)
		}
	}))
	defer origin.Close()
	tests := []struct {
		path    string
		missing string // "" for a thumbnail, else a word of the reason there is none
	}{
		{"/photo.jpg", ""},
		{"/moved.jpg", ""},
		{"/away.jpg", "another host"},
		{"/loop.jpg", "redirects"},
	}
	loader := newThumbnailLoader(10 * time.Second)
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			uri, missing := memberThumbnail(context.Background(), loader, productJSON{ID: "x", ImageURL: origin.URL + tt.path})
			if tt.missing == "" {
				if uri == "" || missing != "" {
					t.Fatalf("no thumbnail: %s", missing)
				}
				return
			}
			if uri != "" || !strings.Contains(missing, tt.missing) {
				t.Fatalf("a thumbnail of %d bytes, reason %q; want none because of %q", len(uri), missing, tt.missing)
			}
		})
	}
	if n := elsewhereHits.Load(); n != 0 {
		t.Fatalf("the other host was asked %d times", n)
	}
}
