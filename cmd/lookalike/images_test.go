package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestImageLoader(t *testing.T) {
	photo := sharedGroceryImage(t, "iconic__Arla-Standard-Milk_Iconic.jpg")
	want, err := os.ReadFile(photo)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/milk.jpg":
			w.Write(want)
		case "/empty.jpg":
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	empty := filepath.Join(t.TempDir(), "empty.jpg")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, ref, wantErr string
	}{
		{"local file", photo, ""},
		{"http", srv.URL + "/milk.jpg", ""},
		{"http 404", srv.URL + "/nope.jpg", "404"},
		{"http empty body", srv.URL + "/empty.jpg", "is empty"},
		{"empty file", empty, "is empty"},
		{"missing file", filepath.Join(t.TempDir(), "nope.jpg"), "no such file"},
	}
	l := newImageLoader(5 * time.Second)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := l.load(context.Background(), tt.ref)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(want) {
				t.Errorf("got %d bytes, want the %d of the photo", len(got), len(want))
			}
		})
	}
}
