package catalog

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"lookalike/adapt"
	"lookalike/embed"
)

// TestDeriveProjectsWithoutEmbedding derives a projected catalogue from a raw one (real model,
// real bbolt) and checks it answers exactly as a catalogue that embedded the same photos
// through the projected spec, holding the same kept photos and decisions.
func TestDeriveProjectsWithoutEmbedding(t *testing.T) {
	if testing.Short() {
		t.Skip("embeds grocery photos twice")
	}
	ctx := context.Background()
	raw := testEmbedder(t)
	items := groceryItems(t, 30)
	rawDir := t.TempDir()
	c, err := Open(ctx, Config{DataDir: rawDir, Embedder: raw, KeepPhotos: true})
	if err != nil {
		t.Fatal(err)
	}
	var samples []adapt.Sample
	for _, r := range c.UpsertBatch(ctx, items) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		p, err := c.Get(ctx, r.ID, true)
		if err != nil {
			t.Fatal(err)
		}
		samples = append(samples, adapt.Sample{Vector: p.Photos[0].Vector, Group: p.Title})
	}
	if _, err := c.Resolve(ctx, Resolution{IDs: []string{items[0].ID, items[1].ID}, Verdict: Different, By: "test"}); err != nil {
		t.Fatal(err)
	}
	policy := DefaultPolicy()
	policy.LookAlike, policy.Source = 0.95, "a calibration"
	if err := c.SetPolicy(ctx, policy); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	// A projection fitted on the raw vectors, and the spec that applies it.
	p, err := adapt.Train(samples, adapt.Options{Dims: 16, Shrink: 0.3, Meta: map[string]string{"model": raw.Identity()}})
	if err != nil {
		t.Fatal(err)
	}
	specDir := t.TempDir()
	b, _ := p.MarshalBinary()
	if err := os.WriteFile(filepath.Join(specDir, "p.proj"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	spec := raw.Spec()
	spec.Post = []embed.PostStep{{Op: embed.PostProject, File: "p.proj", SHA256: hex.EncodeToString(sum[:])}}
	specPath := filepath.Join(specDir, "projected.json")
	if err := os.WriteFile(specPath, spec.CanonicalJSON(), 0o644); err != nil {
		t.Fatal(err)
	}
	target := func(source string) (DeriveTarget, error) {
		d, err := embed.DeriveFrom(raw.ModelPath(), specPath, source)
		if err != nil {
			return DeriveTarget{}, err
		}
		return DeriveTarget{ModelIdentity: d.Identity, Dim: d.Dim, Transform: d.Apply}, nil
	}

	derivedDir := filepath.Join(t.TempDir(), "derived")
	rep, err := Derive(ctx, DeriveConfig{From: rawDir, To: derivedDir, Target: target})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Products != len(items) || rep.Photos != len(items) || rep.KeptPhotos != len(items) || rep.Decisions != 1 || !rep.PolicyDropped {
		t.Fatalf("derive report %+v for %d products, one decision and a policy", rep, len(items))
	}
	if _, err := Derive(ctx, DeriveConfig{From: rawDir, To: derivedDir, Target: target}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("deriving into a catalogue: %v, want ErrInvalidArgument", err)
	}
	// The derived catalogue is not the raw one's space: deriving it again finds no step to add.
	if _, err := Derive(ctx, DeriveConfig{From: derivedDir, To: t.TempDir(), Target: func(source string) (DeriveTarget, error) {
		_, err := embed.DeriveFrom(raw.ModelPath(), filepath.Join("..", "docs", "specs", "mobilenetv2-int8-rmac.json"), source)
		return DeriveTarget{}, err
	}}); !errors.Is(err, embed.ErrSpecMismatch) {
		t.Errorf("deriving a pooled spec from projected vectors: %v, want embed.ErrSpecMismatch", err)
	}

	projected, err := embed.Open(ctx, embed.Config{ModelPath: raw.ModelPath(), SpecPath: specPath, RuntimePath: raw.Config().RuntimePath})
	if err != nil {
		t.Fatal(err)
	}
	defer projected.Close()
	derived, err := Open(ctx, Config{DataDir: derivedDir, Embedder: projected, KeepPhotos: true})
	if err != nil {
		t.Fatal(err)
	}
	defer derived.Close()
	direct, err := Open(ctx, Config{DataDir: t.TempDir(), Embedder: projected, KeepPhotos: true})
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	for _, r := range direct.UpsertBatch(ctx, items) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	if pol, err := derived.Policy(ctx); err != nil || pol.Source != "default" {
		t.Errorf("derived policy %+v, %v: a calibration of the raw space was carried over", pol, err)
	}
	if ds, err := derived.Decisions(ctx); err != nil || len(ds) != 1 {
		t.Errorf("derived decisions %v, %v", ds, err)
	}
	for _, it := range items[:6] {
		img := it.Photos[0].Image
		want, err := direct.SearchByImage(ctx, img, SearchOptions{K: 5, EF: 200})
		if err != nil {
			t.Fatal(err)
		}
		got, err := derived.SearchByImage(ctx, img, SearchOptions{K: 5, EF: 200})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ids(got), ids(want)) {
			t.Fatalf("derived catalogue found %v, the one that embedded through the projection %v", ids(got), ids(want))
		}
		for i := range got {
			if got[i].Score != want[i].Score {
				t.Fatalf("scores differ: %v and %v", got[i].Score, want[i].Score)
			}
		}
		kd, _, err := derived.KeptPhoto(ctx, it.ID, want[0].PhotoID)
		if it.ID == want[0].Product.ID && (err != nil || len(kd) == 0) {
			t.Errorf("kept photo of %s: %d bytes, %v", it.ID, len(kd), err)
		}
	}
	// Kept photos are the raw catalogue's bytes, not new ones.
	rawAgain, err := Open(ctx, Config{DataDir: rawDir, Embedder: raw})
	if err != nil {
		t.Fatal(err)
	}
	defer rawAgain.Close()
	p0, err := rawAgain.Get(ctx, items[2].ID, false)
	if err != nil {
		t.Fatal(err)
	}
	kr, _, err := rawAgain.KeptPhoto(ctx, items[2].ID, p0.Photos[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	kd, _, err := derived.KeptPhoto(ctx, items[2].ID, p0.Photos[0].ID)
	if err != nil || !bytes.Equal(kr, kd) {
		t.Errorf("derived kept photo differs from the raw catalogue's (%v)", err)
	}
}
