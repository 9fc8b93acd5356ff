package embed

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Environment variables that override where the runtime library and the model are found.
const (
	EnvRuntime = "LOOKALIKE_ORT_LIB"
	EnvModel   = "LOOKALIKE_MODEL"
)

// FindRuntime returns the ONNX Runtime shared library: $LOOKALIKE_ORT_LIB when set,
// otherwise .lookalike/onnxruntime/libonnxruntime.so.1 (where scripts/setup.sh puts it) under
// the project root found by walking up from the working directory or from the executable's
// directory.
func FindRuntime() (string, error) {
	return findFile(EnvRuntime, filepath.Join(".lookalike", "onnxruntime", "libonnxruntime.so.1"),
		"ONNX Runtime library",
		"run `make setup` in the project, or set "+EnvRuntime+" (or the runtime flag) to libonnxruntime.so.1")
}

// FindModel returns the embedding model: $LOOKALIKE_MODEL when set, otherwise
// ../shared/models/mobilenetv2-12-int8-emb.onnx beside the project root found by walking up
// from the working directory or from the executable's directory.
func FindModel() (string, error) {
	return findFile(EnvModel, filepath.Join("..", "shared", "models", DefaultModelFile),
		"model",
		"put the shared models at ../shared/models beside the project, or set "+EnvModel+" (or the model flag) to an .onnx file")
}

// findFile returns $env when it is set, else the first project root joined with rel that is
// a file. The error names what was sought, every path tried, and the hint.
func findFile(env, rel, what, hint string) (string, error) {
	if p := os.Getenv(env); p != "" {
		if !isFile(p) {
			return "", fmt.Errorf("embed: %s=%s: no such file", env, p)
		}
		return p, nil
	}
	var looked []string
	for _, root := range projectRoots() {
		p := filepath.Join(root, rel)
		if isFile(p) {
			return p, nil
		}
		looked = append(looked, p)
	}
	return "", fmt.Errorf("embed: %s not found (looked for %s): %s", what, lookedFor(looked, rel), hint)
}

// projectRoots returns the directories holding go.mod found above the working directory
// and above the executable, nearest first, without duplicates.
func projectRoots() []string {
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if exe, err := os.Executable(); err == nil {
		if resolved, err := filepath.EvalSymlinks(exe); err == nil {
			exe = resolved
		}
		starts = append(starts, filepath.Dir(exe))
	}
	seen := map[string]bool{}
	var roots []string
	for _, s := range starts {
		if r, ok := rootAbove(s); ok && !seen[r] {
			seen[r] = true
			roots = append(roots, r)
		}
	}
	return roots
}

// rootAbove walks up from dir to the first directory holding go.mod.
func rootAbove(dir string) (string, bool) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", false
	}
	for {
		if isFile(filepath.Join(dir, "go.mod")) {
			return dir, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

func lookedFor(paths []string, rel string) string {
	if len(paths) == 0 {
		return rel + " under a project root (no go.mod above the working directory or the executable)"
	}
	return strings.Join(paths, ", ")
}
