package embed

import (
	"fmt"
	"path/filepath"
	"sync"

	ort "github.com/yalue/onnxruntime_go"
)

// ortEnv reference-counts the ONNX Runtime environment. onnxruntime_go keeps the library
// handle and the OrtEnv in package globals, initialised once per process, so every Embedder
// in a process (several in one test binary, say) must share them: the first Open loads the
// library, the last Close unloads it. This is the package's one piece of mutable global
// state, and it exists only because the runtime's is global too.
var ortEnv struct {
	mu   sync.Mutex
	refs int
	path string
}

// acquireRuntime initialises the environment with the library at path, or takes another
// reference to the one already loaded (which must be the same library).
func acquireRuntime(path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("embed: runtime path %q: %w", path, err)
	}
	if resolved, err := filepath.EvalSymlinks(abs); err == nil {
		abs = resolved
	}
	ortEnv.mu.Lock()
	defer ortEnv.mu.Unlock()
	if ortEnv.refs > 0 {
		if abs != ortEnv.path {
			return fmt.Errorf("embed: ONNX Runtime already loaded from %s in this process; cannot also load %s", ortEnv.path, abs)
		}
		ortEnv.refs++
		return nil
	}
	if ort.IsInitialized() {
		return fmt.Errorf("embed: ONNX Runtime was initialised outside this package; cannot share it")
	}
	ort.SetSharedLibraryPath(abs)
	if err := ort.InitializeEnvironment(ort.WithLogLevelError()); err != nil {
		return fmt.Errorf("embed: load ONNX Runtime from %s (run `make setup` or set %s): %w", abs, EnvRuntime, err)
	}
	ortEnv.refs, ortEnv.path = 1, abs
	return nil
}

// releaseRuntime drops one reference and destroys the environment with the last one.
func releaseRuntime() error {
	ortEnv.mu.Lock()
	defer ortEnv.mu.Unlock()
	if ortEnv.refs == 0 {
		return nil
	}
	ortEnv.refs--
	if ortEnv.refs > 0 {
		return nil
	}
	ortEnv.path = ""
	if err := ort.DestroyEnvironment(); err != nil {
		return fmt.Errorf("embed: destroy ONNX Runtime environment: %w", err)
	}
	return nil
}
