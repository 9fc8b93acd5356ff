package catalog_test

import (
	"context"
	"path/filepath"
	"testing"

	"lookalike/catalog"
	"lookalike/catalog/backendtest"
)

// TestEmbeddedConformance runs the backend suite against the embedded backend: a bbolt
// store in a temporary directory and its graph.
func TestEmbeddedConformance(t *testing.T) {
	root := t.TempDir()
	backendtest.Run(t, func(t *testing.T, name, model string, dim int) catalog.Backend {
		b, err := catalog.OpenEmbedded(context.Background(), catalog.EmbeddedConfig{
			DataDir: filepath.Join(root, name), ModelIdentity: model, Dim: dim,
		})
		if err != nil {
			t.Fatalf("OpenEmbedded: %v", err)
		}
		return b
	})
}
