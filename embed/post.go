package embed

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"

	"lookalike/adapt"
)

// Post-processing operations a Spec may list.
const (
	// PostProject applies a projection file written by `lookalike adapt` (package adapt):
	// y = L2(P(L2(v) - mean)). Centring on a catalogue mean and PCA or supervised whitening
	// are all projections of that form, so one operation covers them.
	PostProject = "project"
)

// postStep is one loaded post-processing step.
type postStep struct {
	p *adapt.Projection
}

// loadPost reads and checks the spec's post-processing steps. Files are relative to the spec
// file's directory (dir). identity gives the model identity under a spec; a projection
// records the identity of the vectors it was fitted on, which must be the model's under the
// steps before it. It returns the steps and the dimension of the final vector.
func loadPost(s Spec, dir string, identity func(Spec) string) ([]postStep, int, error) {
	dim := s.Dim
	var steps []postStep
	for i, st := range s.Post {
		path := st.File
		if !filepath.IsAbs(path) {
			path = filepath.Join(dir, path)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, 0, fmt.Errorf("embed: post-processing step %d (%s): %w", i, st.Op, err)
		}
		sum := sha256.Sum256(b)
		if got := hex.EncodeToString(sum[:]); got != st.SHA256 {
			return nil, 0, fmt.Errorf("%w: post-processing step %d: %s has sha256 %s, the spec says %s",
				ErrSpecMismatch, i, path, got, st.SHA256)
		}
		p, err := adapt.Read(bytes.NewReader(b))
		if err != nil {
			return nil, 0, fmt.Errorf("embed: post-processing step %d: %s: %w", i, path, err)
		}
		if p.In() != dim {
			return nil, 0, fmt.Errorf("%w: post-processing step %d: %s projects %d-d vectors, but the step before gives %d",
				ErrSpecMismatch, i, path, p.In(), dim)
		}
		// A projection fitted on another model's vectors would run without complaint and
		// give meaningless neighbours; the file says which model it was fitted on.
		before := s
		before.Post = s.Post[:i]
		if m, want := p.Meta()["model"], identity(before); m != "" && m != want {
			return nil, 0, fmt.Errorf("%w: post-processing step %d: %s was fitted on vectors of %s, not of this model (%s)",
				ErrSpecMismatch, i, path, m, want)
		}
		steps = append(steps, postStep{p: p})
		dim = p.Out()
	}
	return steps, dim, nil
}

// applyPost applies the post-processing steps to a photo's normalised vector (every view
// combined): once per photo, whatever its views.
func (e *Embedder) applyPost(v []float32) ([]float32, error) { return applySteps(e.post, v) }

func applySteps(steps []postStep, v []float32) ([]float32, error) {
	var err error
	for _, st := range steps {
		if v, err = st.p.Apply(v); err != nil {
			return nil, fmt.Errorf("embed: post-processing: %w", err)
		}
	}
	return v, nil
}

// Derivation turns vectors stored under one model identity into those of a spec whose
// post-processing extends it: the steps the source did not run. It needs no runtime and no
// photo, so a catalogue of raw vectors can be projected without embedding anything again.
type Derivation struct {
	// Identity and Dim are the target spec's identity and vector length.
	Identity string
	Dim      int
	// Steps counts the post-processing steps Apply runs.
	Steps int
	post  []postStep
}

// Apply maps one source vector to the target space.
func (d Derivation) Apply(v []float32) ([]float32, error) {
	return applySteps(d.post, v)
}

// DeriveFrom returns the Derivation from vectors of identity source to those of the model at
// modelPath under the spec at specPath (resolved as Open does). source must be the identity
// of the same model and spec with some of its last post-processing steps left out; any
// other change (pooling, views, preprocessing, another model) needs the photos embedded again.
func DeriveFrom(modelPath, specPath, source string) (Derivation, error) {
	model, err := os.ReadFile(modelPath)
	if err != nil {
		return Derivation{}, fmt.Errorf("embed: read model: %w", err)
	}
	s, resolved, err := ResolveSpec(modelPath, specPath)
	if err != nil {
		return Derivation{}, err
	}
	identity := func(s Spec) string { return Identity(modelPath, model, s) }
	post, dim, err := loadPost(s, filepath.Dir(resolved), identity)
	if err != nil {
		return Derivation{}, err
	}
	for k := len(s.Post); k >= 0; k-- {
		before := s
		before.Post = s.Post[:k]
		if identity(before) == source {
			return Derivation{Identity: identity(s), Dim: dim, Steps: len(s.Post) - k, post: post[k:]}, nil
		}
	}
	return Derivation{}, fmt.Errorf("%w: vectors of %s are not this model's under this spec before some of its post-processing steps; embed the photos again",
		ErrSpecMismatch, source)
}
