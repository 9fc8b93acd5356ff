package main

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestEmbedRealModel(t *testing.T) {
	milk := sharedGroceryImage(t, "iconic__Arla-Standard-Milk_Iconic.jpg")
	juice := sharedGroceryImage(t, "iconic__Bravo-Apple-Juice_Iconic.jpg")
	missing := filepath.Join(t.TempDir(), "missing.jpg")

	code, stdout, stderr := runCLI(t, nil, "embed", "--json", "--cosine", "--threads", "2", milk, milk, juice, missing)
	if code != exitFailure {
		t.Fatalf("exit %d with a missing file among the images, want 1; stderr %q", code, stderr)
	}
	if !strings.Contains(stderr, "missing.jpg") || !strings.Contains(lastLine(stderr), "lookalike embed: 1 of 4 images failed") {
		t.Errorf("stderr %q", stderr)
	}
	var out embedCosineJSON
	mustJSON(t, stdout, &out)
	if len(out.Images) != 4 || out.Images[0].Dim != 1280 || len(out.Images[0].Vector) != 1280 || out.Images[3].Error == "" {
		t.Fatalf("images: dims %d, error %q", out.Images[0].Dim, out.Images[3].Error)
	}
	if !strings.HasPrefix(out.Model, "mobilenetv2-12-int8-emb.onnx@sha256:") {
		t.Errorf("model identity %q", out.Model)
	}
	same, different := *out.Cosine[0][1], *out.Cosine[0][2]
	if same < 0.9999 || same > 1.0001 {
		t.Errorf("the same photo twice: cosine %v, want 1", same)
	}
	if different > 0.95 {
		t.Errorf("milk vs juice: cosine %v, want clearly below a duplicate", different)
	}
	if out.Cosine[0][3] != nil {
		t.Error("cosine reported for a failed image")
	}

	code, stdout, stderr = runCLI(t, nil, "embed", "--threads", "2", milk)
	if code != exitOK || !strings.Contains(stdout, "1280 dims") {
		t.Errorf("table output: exit %d %q %q", code, stdout, stderr)
	}
}

func TestModelRealModel(t *testing.T) {
	code, stdout, stderr := runCLI(t, nil, "model", "--json", "--threads", "1")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var m modelJSON
	mustJSON(t, stdout, &m)
	if m.Dim != 1280 || m.Spec.Input != "input" || m.Spec.Output != "embedding" || m.Identity == "" || m.Runtime == "" {
		t.Fatalf("model: %+v", m)
	}
	var sawInput, sawOutput bool
	for _, in := range m.Inputs {
		sawInput = sawInput || in.Name == "input"
	}
	for _, out := range m.Outputs {
		sawOutput = sawOutput || (out.Name == "embedding" && len(out.Shape) == 2 && out.Shape[1] == 1280)
	}
	if !sawInput || !sawOutput {
		t.Errorf("inputs %+v outputs %+v", m.Inputs, m.Outputs)
	}

	code, _, stderr = runCLI(t, map[string]string{"LOOKALIKE_MODEL": "/nonexistent/model.onnx"}, "model")
	if code != exitFailure || !strings.Contains(stderr, "/nonexistent/model.onnx") || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
		t.Errorf("missing model: exit %d, stderr %q", code, stderr)
	}
}
