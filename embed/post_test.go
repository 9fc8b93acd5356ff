package embed

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"lookalike/adapt"
)

// projectedSpec fits a projection on real vectors of the default model, writes it and a spec
// naming it into dir, and returns the spec's path and the projection.
func projectedSpec(t *testing.T, raw *Embedder, dir string, meta map[string]string) (string, *adapt.Projection) {
	t.Helper()
	var samples []adapt.Sample
	for _, ph := range photos(t, "grocery", 24) {
		v, err := raw.Embed(context.Background(), readFile(t, ph.Path))
		if err != nil {
			t.Fatal(err)
		}
		samples = append(samples, adapt.Sample{Vector: v, Group: ph.Label})
	}
	p, err := adapt.Train(samples, adapt.Options{Dims: 16, Shrink: 0.3, Meta: meta})
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "catalogue.proj"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	s := raw.Spec()
	s.Post = []PostStep{{Op: PostProject, File: "catalogue.proj", SHA256: hex.EncodeToString(sum[:])}}
	specPath := filepath.Join(dir, "projected.json")
	if err := os.WriteFile(specPath, s.CanonicalJSON(), 0o644); err != nil {
		t.Fatal(err)
	}
	return specPath, p
}

func TestPostProjectionIsAppliedToEveryVector(t *testing.T) {
	// The model's own embedding, and pooled multi-view vectors (their own pipeline).
	for _, base := range []string{"", filepath.Join("..", "docs", "specs", "mobilenetv2-int8-rmac-4views.json")} {
		name := filepath.Base(base)
		if base == "" {
			name = "built-in"
		}
		t.Run(name, func(t *testing.T) { checkPostProjection(t, base) })
	}
}

func checkPostProjection(t *testing.T, baseSpec string) {
	raw := openTest(t, Config{SpecPath: baseSpec})
	dir := t.TempDir()
	specPath, p := projectedSpec(t, raw, dir, map[string]string{"model": raw.Identity()})
	e := openTest(t, Config{SpecPath: specPath})
	if e.Dim() != p.Out() || e.Spec().Dim != raw.Dim() {
		t.Fatalf("Dim %d, spec dim %d; want the projection's %d and the model's %d", e.Dim(), e.Spec().Dim, p.Out(), raw.Dim())
	}
	if e.Identity() == raw.Identity() {
		t.Fatal("a projected model has the raw model's identity")
	}
	ctx := context.Background()
	imgs := [][]byte{readFile(t, photos(t, "grocery", 3)[1].Path), readFile(t, photos(t, "clothing", 3)[2].Path)}
	vecs, errs := e.EmbedBatch(ctx, imgs)
	for i, img := range imgs {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		rv, err := raw.Embed(ctx, img)
		if err != nil {
			t.Fatal(err)
		}
		want, err := p.Apply(rv)
		if err != nil {
			t.Fatal(err)
		}
		an, err := e.Analyze(ctx, img, AnalyzeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for name, got := range map[string][]float32{"EmbedBatch": vecs[i], "Analyze": an.Vector} {
			if len(got) != len(want) {
				t.Fatalf("%s: %d dims, want %d", name, len(got), len(want))
			}
			for k := range want {
				if got[k] != want[k] {
					t.Fatalf("%s: image %d dim %d = %v, want the projection of the raw vector, %v", name, i, k, got[k], want[k])
				}
			}
		}
	}

	// The identity names the projection's bytes, not where the file lies.
	moved := t.TempDir()
	if err := os.Rename(filepath.Join(dir, "catalogue.proj"), filepath.Join(moved, "other-name.proj")); err != nil {
		t.Fatal(err)
	}
	s := e.Spec()
	s.Post[0].File = filepath.Join(moved, "other-name.proj")
	again := openTest(t, Config{Spec: &s})
	if again.Identity() != e.Identity() {
		t.Fatalf("identity %s after moving the projection, was %s", again.Identity(), e.Identity())
	}
}

func TestPostProjectionRefusesTheWrongFile(t *testing.T) {
	raw := openTest(t, Config{})
	dir := t.TempDir()
	specPath, _ := projectedSpec(t, raw, dir, map[string]string{"model": raw.Identity()})
	good, err := os.ReadFile(specPath)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := ParseSpec(good)
	if err != nil {
		t.Fatal(err)
	}
	otherDir := t.TempDir()
	otherModel, _ := projectedSpec(t, raw, otherDir, map[string]string{"model": "another-model@sha256:0123456789abcdef"})
	other, err := ParseSpec(readFile(t, otherModel))
	if err != nil {
		t.Fatal(err)
	}
	other.Post[0].File = filepath.Join(otherDir, other.Post[0].File)
	floatModel := sharedModel(t, "mobilenetv2-12-dequant-fp32-emb.onnx")
	tests := []struct {
		name  string
		model string
		edit  func(*Spec)
		want  error
	}{
		{"digest differs", "", func(s *Spec) { s.Post[0].SHA256 = hex.EncodeToString(make([]byte, 32)) }, ErrSpecMismatch},
		{"missing file", "", func(s *Spec) { s.Post[0].File = "absent.proj" }, os.ErrNotExist},
		{"fitted on another model", "", func(s *Spec) { *s = other }, ErrSpecMismatch},
		// The float variant has the same spec but other weights: its vectors are another space.
		{"fitted on the int8 model", floatModel, func(*Spec) {}, ErrSpecMismatch},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := spec
			s.Post = append([]PostStep(nil), spec.Post...)
			s.Post[0].File = filepath.Join(dir, s.Post[0].File)
			tc.edit(&s)
			rt, err := FindRuntime()
			if err != nil {
				t.Fatal(err)
			}
			cfg := Config{Spec: &s, ModelPath: tc.model, RuntimePath: rt}
			e, err := Open(context.Background(), cfg)
			if err == nil {
				e.Close()
				t.Fatal("opened")
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}
