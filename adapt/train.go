package adapt

import (
	"errors"
	"fmt"
	"math"
	"strconv"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/gonum/mat"
)

// ErrData reports training data that cannot give a projection: too few groups or samples,
// vectors of different lengths, non-finite values, bad weights.
var ErrData = errors.New("adapt: unusable training data")

// Sample is one training vector.
type Sample struct {
	// Vector is an embedding; it is L2-normalised before use, so its length does not matter.
	Vector []float32
	// Group names what the vector shows (a product, a class); samples of one group are
	// what the projection pulls together.
	Group string
	// Weight scales the sample's share of every mean and covariance (a catalogue shot may
	// count for several street photos); 0 means 1.
	Weight float64
}

// Options tune Train.
type Options struct {
	// Dims is the projected dimension, 1..the input dimension, and with fewer samples than
	// dimensions at most one less than the samples (the directions they span; the others
	// carry no training variance, so weighting them would be guesswork); 0 keeps them all.
	Dims int
	// Shrink in [0, 1) blends the within-group covariance towards a multiple of the identity
	// with the same trace: (1-Shrink) Sw + Shrink (tr Sw / D) I. With fewer samples than
	// dimensions Sw is singular, and 0 fails; larger values trust the groups less, which is
	// what keeps groups never seen in training from getting worse.
	Shrink float64
	// Meta is recorded in the projection next to what Train records itself (dims, shrink,
	// samples, groups); keys Train records win.
	Meta map[string]string
}

// Scatter holds the weighted statistics of a training set, from which projections for any
// shrinkage and dimension follow without another pass over the samples.
type Scatter struct {
	dim int
	// basis, when set, is an orthonormal basis (dim x rank) of the span of the centred
	// samples, and within and total are expressed in it. With fewer samples than dimensions
	// every direction outside that span has no variance at all, within-group or total, so
	// its eigenvalue is 0 and it can never be among the directions kept: solving in the
	// span gives the same projection at a fraction of the cost.
	basis       *mat.Dense
	mean        []float64
	within      *mat.SymDense // Sw
	total       *mat.SymDense // St
	traceWithin float64
	samples     int
	groups      int
}

// Analyze computes the weighted mean, within-group covariance Sw and total covariance St of
// the L2-normalised samples. It needs at least two groups and one group of two samples.
func Analyze(samples []Sample) (*Scatter, error) { return analyze(samples, true) }

func analyze(samples []Sample, reduce bool) (*Scatter, error) {
	if len(samples) < 2 {
		return nil, fmt.Errorf("%w: %d samples, want at least 2", ErrData, len(samples))
	}
	d := len(samples[0].Vector)
	if d == 0 {
		return nil, fmt.Errorf("%w: empty vector", ErrData)
	}
	u := make([][]float64, len(samples))
	w := make([]float64, len(samples))
	groupOf := make([]int, len(samples))
	index := map[string]int{}
	var sizes []int
	for i, s := range samples {
		if len(s.Vector) != d {
			return nil, fmt.Errorf("%w: sample %d has %d dimensions, sample 0 has %d", ErrData, i, len(s.Vector), d)
		}
		v, err := unit64(s.Vector)
		if err != nil {
			return nil, fmt.Errorf("%w: sample %d: %w", ErrData, i, err)
		}
		u[i] = v
		switch {
		case s.Weight == 0:
			w[i] = 1
		case s.Weight > 0 && !math.IsInf(s.Weight, 0):
			w[i] = s.Weight
		default:
			return nil, fmt.Errorf("%w: sample %d has weight %v", ErrData, i, s.Weight)
		}
		g, ok := index[s.Group]
		if !ok {
			g = len(sizes)
			index[s.Group] = g
			sizes = append(sizes, 0)
		}
		groupOf[i] = g
		sizes[g]++
	}
	if len(sizes) < 2 {
		return nil, fmt.Errorf("%w: %d group, want at least 2", ErrData, len(sizes))
	}
	pairs := false
	for _, n := range sizes {
		pairs = pairs || n >= 2
	}
	if !pairs {
		return nil, fmt.Errorf("%w: every group has one sample, so there is no within-group variation to learn from", ErrData)
	}

	var total float64
	mean := make([]float64, d)
	gmean := make([][]float64, len(sizes))
	gweight := make([]float64, len(sizes))
	for g := range gmean {
		gmean[g] = make([]float64, d)
	}
	for i, v := range u {
		total += w[i]
		gweight[groupOf[i]] += w[i]
		for j, x := range v {
			mean[j] += w[i] * x
			gmean[groupOf[i]][j] += w[i] * x
		}
	}
	for j := range mean {
		mean[j] /= total
	}
	for g, m := range gmean {
		for j := range m {
			m[j] /= gweight[g]
		}
	}
	// Rows sqrt(w_i/W)(u_i - centre): the covariances are then X' X.
	n := len(u)
	xt := mat.NewDense(n, d, nil)
	xw := mat.NewDense(n, d, nil)
	traceWithin := 0.0
	for i, v := range u {
		f := math.Sqrt(w[i] / total)
		gm := gmean[groupOf[i]]
		for j, x := range v {
			xt.Set(i, j, f*(x-mean[j]))
			e := f * (x - gm[j])
			xw.Set(i, j, e)
			traceWithin += e * e
		}
	}
	s := &Scatter{dim: d, mean: mean, traceWithin: traceWithin, samples: n, groups: len(sizes)}
	if reduce && n <= d {
		// The span of the centred samples, from the eigenvectors of their Gram matrix.
		gram := mat.NewSymDense(n, nil)
		gram.SymOuterK(1, xt)
		var eig mat.EigenSym
		if !eig.Factorize(gram, true) {
			return nil, fmt.Errorf("adapt: eigendecomposition did not converge")
		}
		vals := eig.Values(nil)
		var vecs mat.Dense
		eig.VectorsTo(&vecs)
		big := vals[n-1]
		var keep []int
		for i := n - 1; i >= 0; i-- {
			if vals[i] > 1e-12*big {
				keep = append(keep, i)
			}
		}
		if len(keep) == 0 {
			return nil, fmt.Errorf("%w: every sample is the same vector", ErrData)
		}
		// basis = X' V diag(1/sqrt(lambda)), orthonormal.
		v := mat.NewDense(n, len(keep), nil)
		for c, i := range keep {
			f := 1 / math.Sqrt(vals[i])
			for r := range n {
				v.Set(r, c, vecs.At(r, i)*f)
			}
		}
		basis := mat.NewDense(d, len(keep), nil)
		basis.Mul(xt.T(), v)
		s.basis = basis
		var rt, rw mat.Dense
		rt.Mul(xt, basis)
		rw.Mul(xw, basis)
		xt, xw = &rt, &rw
	}
	_, r := xt.Dims()
	s.total = mat.NewSymDense(r, nil)
	s.total.SymOuterK(1, xt.T())
	s.within = mat.NewSymDense(r, nil)
	s.within.SymOuterK(1, xw.T())
	return s, nil
}

// Dim is the input dimension.
func (s *Scatter) Dim() int { return s.dim }

// Rank is how many directions a projection can keep: the input dimension, or fewer when
// there are fewer samples than dimensions (the span of the centred samples).
func (s *Scatter) Rank() int { return s.total.SymmetricDim() }

// Whitening is the solved eigenproblem for one shrinkage: every projected dimension up to
// the scatter's rank is a prefix of it.
type Whitening struct {
	scatter *Scatter
	shrink  float64
	// vectors holds the generalised eigenvectors as columns (input dimension x rank),
	// largest eigenvalue first, each scaled to unit length under the shrunk Sw.
	vectors *mat.Dense
	values  []float64
}

// Whiten solves St v = lambda Sw' v for the shrunk within-group covariance
// Sw' = (1-shrink) Sw + shrink (tr Sw / D) I. Its eigenvectors, scaled so that v' Sw' v = 1,
// are exactly the rows of P = top eigenvectors of W1 St W1 times W1 with W1 = Sw'^-1/2; a
// Cholesky factor of Sw' gets there with one eigendecomposition instead of two.
func (s *Scatter) Whiten(shrink float64) (*Whitening, error) {
	if !(shrink >= 0 && shrink < 1) {
		return nil, fmt.Errorf("adapt: shrink %v outside [0, 1)", shrink)
	}
	if !(s.traceWithin > 0) {
		return nil, fmt.Errorf("%w: the groups have no within-group variation", ErrData)
	}
	r := s.Rank()
	sw := mat.NewSymDense(r, nil)
	sw.ScaleSym(1-shrink, s.within)
	for i := range r {
		sw.SetSym(i, i, sw.At(i, i)+shrink*s.traceWithin/float64(s.dim))
	}
	var chol mat.Cholesky
	if !chol.Factorize(sw) {
		return nil, fmt.Errorf("%w: the within-group covariance is singular at shrink %v (fewer independent samples than dimensions: raise the shrink)", ErrData, shrink)
	}
	var lt mat.TriDense
	chol.LTo(&lt)
	l := lt.RawTriangular()
	// C = L^-1 St L^-T, symmetric; its eigenvectors y give v = L^-T y.
	c := mat.DenseCopyOf(s.total)
	craw := c.RawMatrix()
	blas64.Trsm(blas.Left, blas.NoTrans, 1, l, craw)
	blas64.Trsm(blas.Right, blas.Trans, 1, l, craw)
	sym := mat.NewSymDense(r, nil)
	for i := range r {
		for j := i; j < r; j++ {
			sym.SetSym(i, j, (c.At(i, j)+c.At(j, i))/2)
		}
	}
	var eig mat.EigenSym
	if !eig.Factorize(sym, true) {
		return nil, fmt.Errorf("adapt: eigendecomposition did not converge")
	}
	vals := eig.Values(nil)
	var y mat.Dense
	eig.VectorsTo(&y)
	vecs := mat.NewDense(r, r, nil)
	values := make([]float64, r)
	for k := range r {
		col := r - 1 - k // largest first
		values[k] = vals[col]
		for i := range r {
			vecs.Set(i, k, y.At(i, col))
		}
	}
	blas64.Trsm(blas.Left, blas.Trans, 1, l, vecs.RawMatrix())
	if s.basis != nil {
		var full mat.Dense
		full.Mul(s.basis, vecs)
		vecs = &full
	}
	return &Whitening{scatter: s, shrink: shrink, vectors: vecs, values: values}, nil
}

// Values returns the generalised eigenvalues, largest first: the ratio of total to
// within-group variance along each projected direction.
func (w *Whitening) Values() []float64 { return append([]float64(nil), w.values...) }

// Projection keeps the first dims directions (0: all of them, the scatter's rank) and
// records meta in it beside what it records itself.
func (w *Whitening) Projection(dims int, meta map[string]string) (*Projection, error) {
	d, r := w.scatter.dim, len(w.values)
	if dims == 0 {
		dims = r
	}
	if dims < 1 || dims > r {
		return nil, fmt.Errorf("adapt: dims %d outside 1..%d (the directions %d samples in %d dimensions span)", dims, r, w.scatter.samples, d)
	}
	m := make([]float32, dims*d)
	for k := range dims {
		row := m[k*d : (k+1)*d]
		// The sign of an eigenvector is arbitrary; fixing it (largest component positive)
		// makes the file a function of the data alone.
		big, sign := 0.0, 1.0
		for i := range d {
			if a := math.Abs(w.vectors.At(i, k)); a > big {
				big = a
				sign = math.Copysign(1, w.vectors.At(i, k))
			}
		}
		for i := range d {
			row[i] = float32(sign * w.vectors.At(i, k))
		}
	}
	mean := make([]float32, d)
	for i, x := range w.scatter.mean {
		mean[i] = float32(x)
	}
	all := map[string]string{}
	for k, v := range meta {
		all[k] = v
	}
	all["dims"] = strconv.Itoa(dims)
	all["shrink"] = strconv.FormatFloat(w.shrink, 'g', -1, 64)
	all["samples"] = strconv.Itoa(w.scatter.samples)
	all["groups"] = strconv.Itoa(w.scatter.groups)
	return newProjection(d, dims, mean, m, all)
}

// Train learns a projection: u = L2(v); weighted mean; Sw and St the weighted within-group
// and total covariances; Sw shrunk by opt.Shrink; P = the top opt.Dims eigenvectors of
// W1 St W1 times W1, W1 = Sw^-1/2. Apply then maps v to L2(P(u - mean)).
func Train(samples []Sample, opt Options) (*Projection, error) {
	s, err := Analyze(samples)
	if err != nil {
		return nil, err
	}
	w, err := s.Whiten(opt.Shrink)
	if err != nil {
		return nil, err
	}
	return w.Projection(opt.Dims, opt.Meta)
}

// unit64 returns v/|v| in float64.
func unit64(v []float32) ([]float64, error) {
	var n float64
	for _, x := range v {
		f := float64(x)
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, errors.New("non-finite component")
		}
		n += f * f
	}
	if n == 0 {
		return nil, errors.New("zero vector")
	}
	n = math.Sqrt(n)
	u := make([]float64, len(v))
	for i, x := range v {
		u[i] = float64(x) / n
	}
	return u, nil
}
