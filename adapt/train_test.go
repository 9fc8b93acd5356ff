package adapt

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"testing"

	"gonum.org/v1/gonum/mat"
)

// world draws embeddings the way a frozen model's look when it was not trained for the
// catalogue: every vector points the same general way (a shared bias), one direction carries
// a large variation that says nothing about the product (lighting, background), and the
// products differ only along a few directions where the variation is small.
type world struct {
	dim      int
	rng      *rand.Rand
	nuisance float64
	noise    float64
}

func newWorld(seed uint64) *world {
	return &world{dim: 16, rng: rand.New(rand.NewPCG(seed, 7)), nuisance: 2, noise: 0.02}
}

// centre is a group's position: a few small offsets in dimensions 1..4.
func (w *world) centre() []float64 {
	c := make([]float64, w.dim)
	for i := 1; i <= 4; i++ {
		c[i] = 0.3 * w.rng.NormFloat64()
	}
	return c
}

func (w *world) draw(c []float64) []float32 {
	v := make([]float32, w.dim)
	a := w.nuisance * w.rng.NormFloat64()
	for i := range v {
		x := c[i] + w.noise*w.rng.NormFloat64()
		switch i {
		case 0:
			x += a
		case w.dim - 1:
			x += 3
		}
		v[i] = float32(x)
	}
	return v
}

// groupsOf draws n vectors for each centre.
func (w *world) groupsOf(prefix string, centres [][]float64, n int) []Sample {
	var out []Sample
	for g, c := range centres {
		for range n {
			out = append(out, Sample{Vector: w.draw(c), Group: fmt.Sprintf("%s%d", prefix, g)})
		}
	}
	return out
}

func (w *world) centres(n int) [][]float64 {
	out := make([][]float64, n)
	for i := range out {
		out[i] = w.centre()
	}
	return out
}

// recallAt1 is leave-one-out nearest-neighbour accuracy under cosine similarity, after f.
func recallAt1(t *testing.T, samples []Sample, f func([]float32) []float32) float64 {
	t.Helper()
	vs := make([][]float32, len(samples))
	for i, s := range samples {
		vs[i] = f(s.Vector)
	}
	right := 0
	for i := range vs {
		best, bestScore := -1, math.Inf(-1)
		for j := range vs {
			if i == j {
				continue
			}
			if s := cosine(vs[i], vs[j]); s > bestScore {
				best, bestScore = j, s
			}
		}
		if samples[best].Group == samples[i].Group {
			right++
		}
	}
	return float64(right) / float64(len(vs))
}

func cosine(a, b []float32) float64 {
	var ab, aa, bb float64
	for i := range a {
		ab += float64(a[i]) * float64(b[i])
		aa += float64(a[i]) * float64(a[i])
		bb += float64(b[i]) * float64(b[i])
	}
	return ab / math.Sqrt(aa*bb)
}

func mustApply(t *testing.T, p *Projection) func([]float32) []float32 {
	return func(v []float32) []float32 {
		y, err := p.Apply(v)
		if err != nil {
			t.Fatal(err)
		}
		return y
	}
}

func identity(v []float32) []float32 { return v }

// Whitening discounts the direction that varies within every group, so nearest neighbours
// become photos of the same group: on fresh photos of the training groups, and on groups it
// never saw, whose differences lie along the same directions.
func TestWhiteningSeparatesGroupsAlongLowVarianceDirections(t *testing.T) {
	for _, tc := range []struct {
		name         string
		dims         int
		shrink       float64
		unseenGroups bool
	}{
		{"all dims, fresh photos of the training groups", 0, 0, false},
		{"8 dims, shrunk, fresh photos of the training groups", 8, 0.1, false},
		{"8 dims, shrunk, groups never seen in training", 8, 0.1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(1)
			train := w.centres(12)
			p, err := Train(w.groupsOf("g", train, 20), Options{Dims: tc.dims, Shrink: tc.shrink})
			if err != nil {
				t.Fatal(err)
			}
			test := w.groupsOf("g", train, 5)
			if tc.unseenGroups {
				test = w.groupsOf("new", w.centres(12), 5)
			}
			raw, projected := recallAt1(t, test, identity), recallAt1(t, test, mustApply(t, p))
			t.Logf("R@1 raw %.3f, projected %.3f", raw, projected)
			if raw > 0.6 || projected < 0.85 || projected-raw < 0.3 {
				t.Errorf("R@1 raw %.3f, projected %.3f: want the raw vectors confused by the nuisance and the projected ones not", raw, projected)
			}
		})
	}
}

func TestApplyGivesDeterministicUnitVectors(t *testing.T) {
	w := newWorld(2)
	samples := w.groupsOf("g", w.centres(6), 10)
	p1, err := Train(samples, Options{Dims: 5, Shrink: 0.05})
	if err != nil {
		t.Fatal(err)
	}
	p2, err := Train(samples, Options{Dims: 5, Shrink: 0.05})
	if err != nil {
		t.Fatal(err)
	}
	b1, _ := p1.MarshalBinary()
	b2, _ := p2.MarshalBinary()
	if !bytes.Equal(b1, b2) || p1.Checksum() != p2.Checksum() {
		t.Fatal("two trainings on the same samples give different files")
	}
	var buf bytes.Buffer
	if err := p1.Write(&buf); err != nil {
		t.Fatal(err)
	}
	p3, err := Read(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if p3.Checksum() != p1.Checksum() || p3.In() != 16 || p3.Out() != 5 {
		t.Fatalf("read back %s %d -> %d, wrote %s", p3.Checksum(), p3.In(), p3.Out(), p1.Checksum())
	}
	for i, s := range samples {
		a, err := p1.Apply(s.Vector)
		if err != nil {
			t.Fatal(err)
		}
		b, err := p3.Apply(s.Vector)
		if err != nil {
			t.Fatal(err)
		}
		var n float64
		for j := range a {
			if a[j] != b[j] {
				t.Fatalf("sample %d: Apply differs after a round trip through the file at %d", i, j)
			}
			n += float64(a[j]) * float64(a[j])
		}
		if math.Abs(n-1) > 1e-5 {
			t.Fatalf("sample %d: |Apply| = %v", i, math.Sqrt(n))
		}
	}
	// The scale of the input does not matter: it is normalised first.
	v := samples[0].Vector
	scaled := make([]float32, len(v))
	for i, x := range v {
		scaled[i] = 3 * x
	}
	a, _ := p1.Apply(v)
	b, _ := p1.Apply(scaled)
	if c := cosine(a, b); c < 1-1e-6 {
		t.Errorf("Apply(3v) has cosine %v to Apply(v)", c)
	}
	meta := p1.Meta()
	if meta["dims"] != "5" || meta["shrink"] != "0.05" || meta["groups"] != "6" || meta["samples"] != "60" {
		t.Errorf("meta %v", meta)
	}
}

// A weight of 2 is the same as the sample twice: the means and covariances are weighted sums.
func TestWeightCountsAsRepeats(t *testing.T) {
	w := newWorld(3)
	samples := w.groupsOf("g", w.centres(5), 8)
	weighted := append([]Sample(nil), samples...)
	repeated := append([]Sample(nil), samples...)
	for i := 0; i < len(samples); i += 8 {
		weighted[i].Weight = 3
		repeated = append(repeated, samples[i], samples[i])
	}
	pw, err := Train(weighted, Options{Dims: 4, Shrink: 0.1})
	if err != nil {
		t.Fatal(err)
	}
	pr, err := Train(repeated, Options{Dims: 4, Shrink: 0.1})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range samples {
		a, _ := pw.Apply(s.Vector)
		b, _ := pr.Apply(s.Vector)
		for j := range a {
			if math.Abs(float64(a[j]-b[j])) > 1e-4 {
				t.Fatalf("weighted %v, repeated %v", a, b)
			}
		}
	}
}

// The Cholesky route gives the projection the two-eigendecomposition formula defines:
// P = (top eigenvectors of W1 St W1)' W1, W1 = Sw'^-1/2, row for row up to sign.
func TestProjectionIsTheWhiteningFormula(t *testing.T) {
	w := newWorld(4)
	samples := w.groupsOf("g", w.centres(7), 9)
	const shrink, dims = 0.2, 6
	s, err := Analyze(samples)
	if err != nil {
		t.Fatal(err)
	}
	wh, err := s.Whiten(shrink)
	if err != nil {
		t.Fatal(err)
	}
	p, err := wh.Projection(dims, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := s.Dim()
	trace := mat.Trace(s.within)
	sw := mat.NewSymDense(d, nil)
	sw.ScaleSym(1-shrink, s.within)
	for i := range d {
		sw.SetSym(i, i, sw.At(i, i)+shrink*trace/float64(d))
	}
	var es mat.EigenSym
	if !es.Factorize(sw, true) {
		t.Fatal("eigen")
	}
	var q mat.Dense
	es.VectorsTo(&q)
	vals := es.Values(nil)
	inv := mat.NewDiagDense(d, nil)
	for i, v := range vals {
		inv.SetDiag(i, 1/math.Sqrt(v))
	}
	var w1, tmp, m mat.Dense
	tmp.Mul(&q, inv)
	w1.Mul(&tmp, q.T())
	tmp.Mul(&w1, s.total)
	m.Mul(&tmp, &w1)
	msym := mat.NewSymDense(d, nil)
	for i := range d {
		for j := i; j < d; j++ {
			msym.SetSym(i, j, (m.At(i, j)+m.At(j, i))/2)
		}
	}
	var em mat.EigenSym
	if !em.Factorize(msym, true) {
		t.Fatal("eigen")
	}
	var z mat.Dense
	em.VectorsTo(&z)
	mv := em.Values(nil)
	order := make([]int, d)
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return mv[order[a]] > mv[order[b]] })
	for k := range dims {
		var row mat.VecDense
		row.MulVec(w1.T(), z.ColView(order[k]))
		got := p.matrix[k*d : (k+1)*d]
		sign := 1.0
		if row.AtVec(0)*float64(got[0]) < 0 {
			sign = -1
		}
		for i := range d {
			if diff := math.Abs(sign*row.AtVec(i) - float64(got[i])); diff > 1e-4*(1+math.Abs(row.AtVec(i))) {
				t.Fatalf("row %d component %d: formula %v, projection %v", k, i, row.AtVec(i), got[i])
			}
		}
		if vals := wh.Values(); math.Abs(vals[k]-mv[order[k]]) > 1e-8*(1+mv[order[k]]) {
			t.Errorf("eigenvalue %d: %v, formula %v", k, vals[k], mv[order[k]])
		}
	}
}

func TestTrainRefusesUnusableData(t *testing.T) {
	w := newWorld(5)
	good := w.groupsOf("g", w.centres(3), 4)
	few := w.groupsOf("g", w.centres(3), 2) // 6 samples in 16 dimensions: Sw is singular
	mutate := func(f func([]Sample) []Sample) []Sample {
		c := make([]Sample, len(good))
		for i, s := range good {
			c[i] = Sample{Vector: append([]float32(nil), s.Vector...), Group: s.Group, Weight: s.Weight}
		}
		return f(c)
	}
	for _, tc := range []struct {
		name    string
		samples []Sample
		opt     Options
		data    bool // want ErrData
	}{
		{"no samples", nil, Options{}, true},
		{"one group", mutate(func(s []Sample) []Sample {
			for i := range s {
				s[i].Group = "x"
			}
			return s
		}), Options{Shrink: 0.1}, true},
		{"every group a single sample", mutate(func(s []Sample) []Sample {
			for i := range s {
				s[i].Group = fmt.Sprint(i)
			}
			return s
		}), Options{Shrink: 0.1}, true},
		{"mixed dimensions", mutate(func(s []Sample) []Sample { s[3].Vector = s[3].Vector[:5]; return s }), Options{Shrink: 0.1}, true},
		{"NaN", mutate(func(s []Sample) []Sample { s[2].Vector[1] = float32(math.NaN()); return s }), Options{Shrink: 0.1}, true},
		{"zero vector", mutate(func(s []Sample) []Sample { clear(s[2].Vector); return s }), Options{Shrink: 0.1}, true},
		{"negative weight", mutate(func(s []Sample) []Sample { s[0].Weight = -1; return s }), Options{Shrink: 0.1}, true},
		{"singular Sw without shrinkage", few, Options{Shrink: 0}, true},
		{"dims above the input's", good, Options{Dims: 17, Shrink: 0.1}, false},
		{"shrink 1", good, Options{Shrink: 1}, false},
		{"negative shrink", good, Options{Shrink: -0.1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Train(tc.samples, tc.opt)
			if err == nil {
				t.Fatal("trained")
			}
			if errors.Is(err, ErrData) != tc.data {
				t.Errorf("%v: ErrData %v, want %v", err, errors.Is(err, ErrData), tc.data)
			}
		})
	}
	// Shrinkage is what makes the same few samples usable.
	if _, err := Train(few, Options{Shrink: 0.1}); err != nil {
		t.Errorf("shrink 0.1 on few samples: %v", err)
	}
}

func TestApplyRefusesBadVectors(t *testing.T) {
	w := newWorld(6)
	p, err := Train(w.groupsOf("g", w.centres(4), 6), Options{Dims: 3, Shrink: 0.1})
	if err != nil {
		t.Fatal(err)
	}
	inf := make([]float32, 16)
	inf[0] = float32(math.Inf(1))
	for _, tc := range []struct {
		name string
		v    []float32
	}{
		{"short", make([]float32, 15)},
		{"zero", make([]float32, 16)},
		{"infinite", inf},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := p.Apply(tc.v); err == nil {
				t.Error("applied")
			}
		})
	}
	if err := p.ApplyTo(make([]float32, 2), w.draw(w.centre())); err == nil {
		t.Error("ApplyTo a short destination")
	}
}

// With fewer samples than dimensions the eigenproblem is solved in the samples' span; the
// projection is the one the full space gives.
func TestSpanOfFewSamplesGivesTheFullSpaceProjection(t *testing.T) {
	w := newWorld(7)
	samples := w.groupsOf("g", w.centres(5), 2) // 10 samples in 16 dimensions
	for _, tc := range []struct {
		name   string
		shrink float64
		dims   int
	}{
		{"slightly shrunk, 3 dims", 0.05, 3},
		{"much shrunk, every spanned direction", 0.5, 9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ps [2]*Projection
			for i, reduce := range []bool{false, true} {
				s, err := analyze(samples, reduce)
				if err != nil {
					t.Fatal(err)
				}
				wh, err := s.Whiten(tc.shrink)
				if err != nil {
					t.Fatal(err)
				}
				if ps[i], err = wh.Projection(tc.dims, nil); err != nil {
					t.Fatal(err)
				}
			}
			for i, x := range ps[0].matrix {
				if y := ps[1].matrix[i]; math.Abs(float64(x-y)) > 1e-4*(1+math.Abs(float64(x))) {
					t.Fatalf("matrix[%d]: full space %v, span %v", i, x, y)
				}
			}
		})
	}
	s, err := Analyze(samples)
	if err != nil {
		t.Fatal(err)
	}
	if s.Rank() != 9 {
		t.Errorf("rank %d, want 9", s.Rank())
	}
	wh, err := s.Whiten(0.1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wh.Projection(10, nil); err == nil {
		t.Error("a direction the samples do not span was kept")
	}
}
