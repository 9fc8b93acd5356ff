package index

import (
	"fmt"
	"math"
	"slices"
)

// Quantization selects how the graph stores the vectors its searches walk over.
type Quantization int

const (
	// QuantizeNone keeps float32 vectors in the graph (the default).
	QuantizeNone Quantization = iota
	// QuantizeInt8 keeps one byte per dimension in the graph: per-dimension scalar
	// quantisation, the range of each dimension fitted to the first vectors added. The walk
	// scores candidates on the codes, and the best candidates are then re-scored on the
	// float32 vectors (Config.Rerank), so returned scores stay exact. Full vectors stay in
	// the index, outside the search's hot memory, unless Config.Vectors supplies them.
	QuantizeInt8
)

// String names the quantisation for logs and flags.
func (q Quantization) String() string {
	switch q {
	case QuantizeNone:
		return "none"
	case QuantizeInt8:
		return "int8"
	default:
		return fmt.Sprintf("quantization(%d)", int(q))
	}
}

// ParseQuantization reads a name String gives ("none" or "int8"; "" is "none").
func ParseQuantization(name string) (Quantization, error) {
	switch name {
	case "", "none":
		return QuantizeNone, nil
	case "int8":
		return QuantizeInt8, nil
	}
	return QuantizeNone, fmt.Errorf("index: unknown quantisation %q (want none or int8)", name)
}

func (q Quantization) valid() bool { return q == QuantizeNone || q == QuantizeInt8 }

// quantTrainSize is how many vectors the quantiser is fitted to. Until the graph holds this
// many it scores on full vectors; once it does, it fits the quantiser to all of them and
// encodes them. A few thousand vectors pin each dimension's range down well enough: later
// vectors fall outside it rarely and by little, and the margin below absorbs most of that.
const quantTrainSize = 2048

// quantMargin widens each fitted range by this fraction of it on both sides, so that later
// vectors slightly outside the sample's range are not clipped. Chosen by measurement
// (BenchmarkQuantizers): with full re-ranking recall did not move between 0 and 0.1, and a
// narrow margin keeps the codes' resolution.
const quantMargin = 0.02

// codeLen is the byte length of a code vector: the dimension padded to whole cache lines,
// so that the kernels need no tail loop (the padding codes and weights are zero).
func codeLen(dim int) int { return roundUp(dim, cacheLine) }

// quantizer maps a float32 vector x to codes c (one byte per dimension) and back to its
// dequantised vector x^ = offset + scale*c.
//
// A search scores codes against a float query q through the inner product, which is linear
// in the codes: q.x^ = q.offset + sum(q*scale*c). The products q*scale are rounded to int16
// weights w with a per-query factor alpha, so sum(w*c) is an integer dot product of int16
// weights and byte codes (two multiply-adds per instruction lane), and
// q.x^ ~ qo + alpha*sum(w*c) with qo = q.offset. The squared L2 distance follows as
// ||q||^2 + ||x^||^2 - 2 q.x^, with ||x^||^2 stored beside each code vector. A stored node
// acts as a query (neighbour selection) the same way with q = x^: its weights are
// (offset*scale + scale^2*c)/alpha for one alpha that bounds every possible node, computed
// straight from its codes.
type quantizer struct {
	dim, n        int       // n = codeLen(dim)
	offset, scale []float32 // per dimension
	invScale      []float32
	lim           float32   // largest weight magnitude the int32 accumulators allow
	nodeA, nodeB  []float32 // node weights are round(nodeA + nodeB*c); length n, zero-padded
	nodeAlpha     float32
}

// weightLimit is the largest |w| for which a kernel over n codes cannot overflow its int32
// lanes: each of the 8 lanes of the summed accumulators adds n/8 products of |w| <= lim and
// c <= 255.
func weightLimit(n int) float32 {
	return float32(min(32767, (math.MaxInt32-1)/(255*max(1, n/8))))
}

// trainQuantizer fits one range per dimension to sample (widened by margin of itself on both
// sides).
func trainQuantizer(sample [][]float32, dim int, margin float64) *quantizer {
	lo := make([]float64, dim)
	hi := make([]float64, dim)
	for d := range dim {
		lo[d], hi[d] = math.Inf(1), math.Inf(-1)
	}
	for _, v := range sample {
		for d, x := range v[:dim] {
			lo[d] = min(lo[d], float64(x))
			hi[d] = max(hi[d], float64(x))
		}
	}
	return newQuantizer(lo, hi, margin)
}

// trainGlobalQuantizer fits one range shared by every dimension: the alternative per-dimension
// ranges were measured against.
func trainGlobalQuantizer(sample [][]float32, dim int, margin float64) *quantizer {
	l, h := math.Inf(1), math.Inf(-1)
	for _, v := range sample {
		for _, x := range v[:dim] {
			l, h = min(l, float64(x)), max(h, float64(x))
		}
	}
	lo, hi := make([]float64, dim), make([]float64, dim)
	for d := range dim {
		lo[d], hi[d] = l, h
	}
	return newQuantizer(lo, hi, margin)
}

// newQuantizer builds the quantiser for the ranges [lo, hi] of each dimension.
func newQuantizer(lo, hi []float64, margin float64) *quantizer {
	dim := len(lo)
	q := &quantizer{
		dim: dim, n: codeLen(dim),
		offset: make([]float32, dim), scale: make([]float32, dim),
	}
	// A dimension the sample never varied in still gets a small range, so later vectors
	// that do vary there are coded, if coarsely.
	widest := 0.0
	for d := range dim {
		if !math.IsInf(lo[d], 0) && !math.IsInf(hi[d], 0) {
			widest = max(widest, hi[d]-lo[d])
		}
	}
	floor := max(widest*1e-3, 1e-12)
	for d := range dim {
		l, h := lo[d], hi[d]
		if math.IsInf(l, 0) || math.IsInf(h, 0) {
			l, h = 0, 0
		}
		span := h - l
		l -= margin * span
		h += margin * span
		if h-l < floor {
			mid := (h + l) / 2
			l, h = mid-floor/2, mid+floor/2
		}
		q.offset[d] = float32(l)
		q.scale[d] = float32((h - l) / 255)
	}
	q.finish()
	return q
}

// quantizerFrom rebuilds a quantiser from its offsets and scales (a snapshot's).
func quantizerFrom(offset, scale []float32) *quantizer {
	dim := len(offset)
	q := &quantizer{dim: dim, n: codeLen(dim), offset: offset, scale: scale}
	q.finish()
	return q
}

// finish derives everything else from offset and scale: the reciprocal scales, the weight
// limit, and nodeA, nodeB and nodeAlpha.
func (q *quantizer) finish() {
	q.lim = weightLimit(q.n)
	q.invScale = make([]float32, q.dim)
	for d, s := range q.scale {
		q.invScale[d] = 1 / s
	}
	q.nodeA = make([]float32, q.n)
	q.nodeB = make([]float32, q.n)
	var most float64
	for d := range q.dim {
		o, s := float64(q.offset[d]), float64(q.scale[d])
		most = max(most, math.Abs(o*s)+255*s*s)
	}
	alpha := most / float64(q.lim)
	if alpha == 0 || math.IsInf(alpha, 0) || math.IsNaN(alpha) {
		alpha = 1
	}
	q.nodeAlpha = float32(alpha)
	for d := range q.dim {
		o, s := float64(q.offset[d]), float64(q.scale[d])
		q.nodeA[d] = float32(o * s / alpha)
		q.nodeB[d] = float32(s * s / alpha)
	}
}

// encode writes x's codes into c (q.n bytes; the padding stays zero) and returns ||x^||^2 and
// x^.offset of the dequantised vector.
func (q *quantizer) encode(x []float32, c []byte) (nn, xo float32) {
	c = c[:q.n]
	var sumNN, sumXO float64
	for d := range q.dim {
		o := q.offset[d]
		t := (x[d] - o) * q.invScale[d]
		var code byte
		switch {
		case !(t > 0): // also NaN, which checkVector keeps out
			code = 0
		case t >= 255:
			code = 255
		default:
			code = byte(t + 0.5)
		}
		c[d] = code
		xh := float64(o) + float64(q.scale[d])*float64(code)
		sumNN += xh * xh
		sumXO += xh * float64(o)
	}
	clear(c[q.dim:])
	return float32(sumNN), float32(sumXO)
}

// decode writes the dequantised vector of c into dst (tests and fallbacks).
func (q *quantizer) decode(dst []float32, c []byte) {
	for d := range q.dim {
		dst[d] = q.offset[d] + q.scale[d]*float32(c[d])
	}
}

func (p *prepared) weights(n int) []int16 {
	if cap(p.w) < n {
		p.w = make([]int16, n)
	}
	p.w = p.w[:n]
	return p.w
}

// prepareQuery rounds x*scale to int16 weights with the largest that fits the accumulators.
func (q *quantizer) prepareQuery(p *prepared, x []float32) {
	w := p.weights(q.n)
	scale := q.scale[:len(x)]
	alpha := maxAbsProd(x, scale) / q.lim
	if !(alpha > 0) || math.IsInf(float64(alpha), 0) {
		alpha = 1
	}
	queryWeights(w[:len(x)], x, scale, 1/alpha)
	clear(w[len(x):])
	p.alpha = alpha
	p.qo = dot(x, q.offset)
	p.qq = dot(x, x)
}

// prepareNode makes weights from a stored node's codes; scal holds its ||x^||^2 and x^.offset.
func (q *quantizer) prepareNode(p *prepared, c []byte, scal *[2]float32) {
	nodeWeights(p.weights(q.n), c, q.nodeA, q.nodeB)
	p.alpha = q.nodeAlpha
	p.qq, p.qo = scal[0], scal[1]
}

func abs32(x float32) float32 { return math.Float32frombits(math.Float32bits(x) &^ (1 << 31)) }

// maxAbsProdGeneric is the portable form of maxAbsProd.
func maxAbsProdGeneric(x, s []float32) float32 {
	s = s[:len(x)]
	var most float32
	for i, v := range x {
		most = max(most, abs32(v*s[i]))
	}
	return most
}

// queryWeightsGeneric is the portable form of queryWeights, rounding half to even as the
// vector instruction does.
func queryWeightsGeneric(dst []int16, x, s []float32, inv float32) {
	x, s = x[:len(dst)], s[:len(dst)]
	for i := range dst {
		dst[i] = int16(math.RoundToEven(float64(x[i] * s[i] * inv)))
	}
}

// dotCodesGeneric is the portable kernel: sum(w*c) over len(w) codes.
func dotCodesGeneric(w []int16, c []byte) float32 {
	c = c[:len(w)]
	var s0, s1, s2, s3 int64
	i := 0
	for ; i+4 <= len(w); i += 4 {
		s0 += int64(w[i]) * int64(c[i])
		s1 += int64(w[i+1]) * int64(c[i+1])
		s2 += int64(w[i+2]) * int64(c[i+2])
		s3 += int64(w[i+3]) * int64(c[i+3])
	}
	for ; i < len(w); i++ {
		s0 += int64(w[i]) * int64(c[i])
	}
	return float32(s0 + s1 + s2 + s3)
}

// nodeWeightsGeneric is the portable form of nodeWeights: dst = round(a + b*c), rounding
// half to even as the vector instruction does.
func nodeWeightsGeneric(dst []int16, c []byte, a, b []float32) {
	c, a, b = c[:len(dst)], a[:len(dst)], b[:len(dst)]
	for i := range dst {
		x := a[i] + b[i]*float32(c[i])
		dst[i] = int16(math.RoundToEven(float64(x)))
	}
}

// trainClippedQuantizer fits each dimension's range to minimise the squared coding error over
// the sample: the upper and lower ends are chosen among the sample's extreme quantiles, so a
// dimension whose few large values would stretch the range for everyone is clipped there.
func trainClippedQuantizer(sample [][]float32, dim int) *quantizer {
	lo, hi := make([]float64, dim), make([]float64, dim)
	vals := make([]float64, len(sample))
	fracs := []float64{0, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02}
	for d := range dim {
		for i, v := range sample {
			vals[i] = float64(v[d])
		}
		slices.Sort(vals)
		at := func(f float64) float64 { return vals[min(len(vals)-1, int(f*float64(len(vals))))] }
		best := math.Inf(1)
		for _, fl := range fracs {
			for _, fh := range fracs {
				l, h := at(fl), vals[len(vals)-1-min(len(vals)-1, int(fh*float64(len(vals))))]
				if h <= l {
					continue
				}
				step := (h - l) / 255
				var mse float64
				for _, x := range vals {
					c := math.Round((min(max(x, l), h) - l) / step)
					e := x - (l + c*step)
					mse += e * e
				}
				if mse < best {
					best, lo[d], hi[d] = mse, l, h
				}
			}
		}
		if math.IsInf(best, 1) {
			lo[d], hi[d] = vals[0], vals[len(vals)-1]
		}
	}
	return newQuantizer(lo, hi, 0)
}
