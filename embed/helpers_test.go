package embed

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"testing"

	"lookalike/internal/dataset"
)

// openTest opens an Embedder on the real model, failing (never skipping) when the model or
// the runtime is missing: CI has both.
func openTest(t testing.TB, cfg Config) *Embedder {
	t.Helper()
	if cfg.ModelPath == "" {
		p, err := FindModel()
		if err != nil {
			t.Fatalf("the embedding model is required: %v", err)
		}
		cfg.ModelPath = p
	}
	if cfg.RuntimePath == "" {
		p, err := FindRuntime()
		if err != nil {
			t.Fatalf("ONNX Runtime is required: %v", err)
		}
		cfg.RuntimePath = p
	}
	e, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return e
}

// sharedModel returns the path of a file in ../shared/models.
func sharedModel(t testing.TB, name string) string {
	t.Helper()
	p, err := FindModel()
	if err != nil {
		t.Fatalf("the shared models are required: %v", err)
	}
	p = filepath.Join(filepath.Dir(p), name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("shared model missing: %v", err)
	}
	return p
}

// photos returns up to n photos of a collection, taking every k-th so that labels vary.
func photos(t testing.TB, collection string, n int) []dataset.Photo {
	t.Helper()
	all, err := dataset.LoadPhotos(collection)
	if err != nil {
		t.Fatalf("shared photos are required: %v", err)
	}
	if n >= len(all) {
		return all
	}
	step := len(all) / n
	out := make([]dataset.Photo, 0, n)
	for i := 0; i < n; i++ {
		out = append(out, all[i*step])
	}
	return out
}

// decodeWith decodes data, failing the test on an error.
func decodeWith(t testing.TB, data []byte, opt DecodeOptions) Decoded {
	t.Helper()
	d, err := Decode(data, opt)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	return d
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func cosine(a, b []float32) float64 {
	var dot, na, nb float64
	for i := range a {
		dot += float64(a[i]) * float64(b[i])
		na += float64(a[i]) * float64(a[i])
		nb += float64(b[i]) * float64(b[i])
	}
	return dot / math.Sqrt(na*nb)
}
