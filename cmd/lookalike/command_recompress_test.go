package main

import (
	"image"
	"os"
	"path/filepath"
	"testing"
)

func TestRecompressRealPhoto(t *testing.T) {
	src := sharedGroceryImage(t, "iconic__Arla-Standard-Milk_Iconic.jpg")
	dir := t.TempDir()
	tests := []struct {
		name    string
		args    []string
		wantW   int
		wantErr bool
	}{
		{"same size", []string{"--quality", "40"}, -1, false},
		{"half size", []string{"--scale", "0.5"}, -2, false},
		{"bad quality", []string{"--quality", "0"}, 0, true},
	}
	orig := decodeFile(t, src)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(dir, "out"+string(rune('a'+i))+".jpg")
			code, _, stderr := runCLI(t, nil, append(append([]string{"recompress"}, tt.args...), src, out)...)
			if tt.wantErr {
				if code == exitOK {
					t.Fatal("accepted a bad flag")
				}
				return
			}
			if code != exitOK {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			got := decodeFile(t, out)
			want := orig.Bounds().Dx()
			if tt.wantW == -2 {
				want /= 2
			}
			if got.Bounds().Dx() != want {
				t.Errorf("width %d, want %d", got.Bounds().Dx(), want)
			}
			a, _ := os.ReadFile(src)
			b, _ := os.ReadFile(out)
			if string(a) == string(b) {
				t.Error("output bytes equal the input: not re-encoded")
			}
		})
	}
}

func decodeFile(t *testing.T, path string) image.Image {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, _, err := image.Decode(f)
	if err != nil {
		t.Fatalf("decode %s: %v", path, err)
	}
	return img
}

// sharedGroceryImage returns a photo of the shared grocery dataset, failing (not skipping) when
// the shared data is missing: CI has it.
func sharedGroceryImage(t *testing.T, name string) string {
	t.Helper()
	dir, err := findSharedDir("datasets")
	if err != nil {
		t.Fatalf("shared datasets are required: %v", err)
	}
	p := filepath.Join(dir, "grocery", "images", name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("shared grocery photo missing: %v", err)
	}
	return p
}
