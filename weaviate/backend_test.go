package weaviate

import (
	"context"
	"testing"

	"lookalike/catalog"
	"lookalike/catalog/backendtest"
	"lookalike/internal/weaviatetest"
)

// TestConformance runs the backend suite against a real one-node Weaviate.
func TestConformance(t *testing.T) {
	cluster := weaviatetest.Start(t, 1)
	backendtest.Run(t, func(t *testing.T, name, model string, dim int) catalog.Backend {
		b, err := Open(context.Background(), Config{URLs: cluster.URLs(), Prefix: "T" + name, ModelIdentity: model, Dim: dim})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return b
	})
}
