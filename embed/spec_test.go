package embed

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSpecValidate(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(*Spec)
		wantErr string
	}{
		{"default", func(*Spec) {}, ""},
		{"stretch", func(s *Spec) { s.Resize = Resize{Policy: ResizeStretch, Kernel: KernelCatmullRom} }, ""},
		{"no input", func(s *Spec) { s.Input = "" }, "input tensor name"},
		{"crop bigger than resize", func(s *Spec) { s.Resize.ShorterSide = 200 }, "shorter_side"},
		{"unknown policy", func(s *Spec) { s.Resize.Policy = "pad" }, "resize.policy"},
		{"unknown kernel", func(s *Spec) { s.Resize.Kernel = "lanczos" }, "resize.kernel"},
		{"channels", func(s *Spec) { s.Channels = "RGBA" }, "channels"},
		{"layout", func(s *Spec) { s.Layout = "CHW" }, "layout"},
		{"zero std", func(s *Spec) { s.Std[1] = 0 }, "std[1]"},
		{"zero dim", func(s *Spec) { s.Dim = 0 }, "dim"},
		{"projection", func(s *Spec) {
			s.Post = []PostStep{{Op: PostProject, File: "p.proj", SHA256: strings.Repeat("ab", 32)}}
		}, ""},
		{"unknown post op", func(s *Spec) { s.Post = []PostStep{{Op: "center", File: "p", SHA256: strings.Repeat("0", 64)}} }, `post[0].op "center"`},
		{"post without file", func(s *Spec) { s.Post = []PostStep{{Op: PostProject, SHA256: strings.Repeat("0", 64)}} }, "post[0].file"},
		{"post short digest", func(s *Spec) { s.Post = []PostStep{{Op: PostProject, File: "p", SHA256: "abc"}} }, "post[0].sha256"},
		{"post upper-case digest", func(s *Spec) { s.Post = []PostStep{{Op: PostProject, File: "p", SHA256: strings.Repeat("AB", 32)}} }, "post[0].sha256"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := DefaultSpec()
			tc.edit(&s)
			err := s.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want one mentioning %q", err, tc.wantErr)
			}
		})
	}
}

func TestSpecJSONRoundTripAndIdentity(t *testing.T) {
	s := DefaultSpec()
	back, err := ParseSpec(s.CanonicalJSON())
	if err != nil {
		t.Fatal(err)
	}
	if string(back.CanonicalJSON()) != string(s.CanonicalJSON()) {
		t.Fatalf("round trip changed the spec:\n%s\n%s", s.CanonicalJSON(), back.CanonicalJSON())
	}
	if _, err := ParseSpec([]byte(`{"input":"input","typo_field":1}`)); err == nil || !strings.Contains(err.Error(), "typo_field") {
		t.Fatalf("unknown field not refused: %v", err)
	}
	model := []byte("model bytes")
	id := Identity("/x/m.onnx", model, s)
	if !strings.HasPrefix(id, "m.onnx@sha256:") || len(id) != len("m.onnx@sha256:")+16 {
		t.Fatalf("identity %q", id)
	}
	if Identity("/elsewhere/m.onnx", model, s) != id {
		t.Fatal("identity depends on the directory")
	}
	other := s
	other.Resize.Kernel = KernelCatmullRom
	for name, got := range map[string]string{
		"other model bytes": Identity("/x/m.onnx", []byte("model bytez"), s),
		"other spec":        Identity("/x/m.onnx", model, other),
	} {
		if got == id {
			t.Errorf("%s: identity unchanged", name)
		}
	}
}

func TestSpecCheckModel(t *testing.T) {
	ins := []TensorInfo{{Name: "input", Type: "float32", Shape: []int64{-1, 3, 224, 224}}}
	outs := []TensorInfo{{Name: "output", Type: "float32", Shape: []int64{-1, 1000}},
		{Name: "embedding", Type: "float32", Shape: []int64{-1, 1280}}}
	tests := []struct {
		name string
		edit func(*Spec)
		want []string // substrings of the error; none means no error
	}{
		{"matches", func(*Spec) {}, nil},
		{"wrong input name", func(s *Spec) { s.Input = "data" }, []string{`"data"`, `["input"]`}},
		{"wrong output name", func(s *Spec) { s.Output = "features" }, []string{`"features"`, `"embedding"`}},
		{"wrong dim", func(s *Spec) { s.Dim = 512 }, []string{"dimension 1280", "dim 512"}},
		{"wrong size", func(s *Spec) { s.Width, s.Height, s.Resize.ShorterSide = 299, 299, 320 }, []string{"299x299"}},
		{"wrong layout", func(s *Spec) { s.Layout = LayoutNHWC }, []string{"NHWC"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := DefaultSpec()
			tc.edit(&s)
			err := s.CheckModel(ins, outs)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrSpecMismatch) {
				t.Fatalf("err = %v, want ErrSpecMismatch", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %s", err, w)
				}
			}
		})
	}
}

// TestOpenSpecFileBesideModel links the real model into a temporary directory (no copy) with
// a spec JSON beside it, and checks that Open reads the spec and refuses one that disagrees
// with the model, naming the disagreement.
func TestOpenSpecFileBesideModel(t *testing.T) {
	dir := t.TempDir()
	model := filepath.Join(dir, "custom.onnx")
	if err := os.Symlink(sharedModel(t, DefaultModelFile), model); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ResolveSpec(model, ""); err == nil || !strings.Contains(err.Error(), "custom.onnx.json") {
		t.Fatalf("a model without a spec was accepted or the error does not say what to write: %v", err)
	}
	catmull := DefaultSpec()
	catmull.Resize.Kernel = KernelCatmullRom
	if err := os.WriteFile(filepath.Join(dir, "custom.json"), catmull.CanonicalJSON(), 0o644); err != nil {
		t.Fatal(err)
	}
	e := openTest(t, Config{ModelPath: model})
	if e.Spec().Resize.Kernel != KernelCatmullRom || e.SpecPath() != filepath.Join(dir, "custom.json") {
		t.Fatalf("spec %+v from %q", e.Spec(), e.SpecPath())
	}
	if !strings.HasPrefix(e.Identity(), "custom.onnx@sha256:") {
		t.Fatalf("identity %q", e.Identity())
	}

	bad := DefaultSpec()
	bad.Output, bad.Dim = "logits", 1000
	if err := os.WriteFile(model+".json", bad.CanonicalJSON(), 0o644); err != nil {
		t.Fatal(err)
	}
	rt, err := FindRuntime()
	if err != nil {
		t.Fatalf("ONNX Runtime is required: %v", err)
	}
	_, err = Open(context.Background(), Config{ModelPath: model, RuntimePath: rt})
	if !errors.Is(err, ErrSpecMismatch) || !strings.Contains(err.Error(), `"logits"`) {
		t.Fatalf("Open with a mismatched spec: %v", err)
	}
}
