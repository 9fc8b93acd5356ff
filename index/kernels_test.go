package index

import (
	"math"
	"math/rand/v2"
	"testing"
	"unsafe"
)

// edgeLengths covers empty input, lengths below, at and around one SIMD register and one
// unrolled iteration, and the dimensions the benchmarks use.
var edgeLengths = []int{0, 1, 3, 4, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 784, 1280, 1283}

func closeTo(got, want, tol float64) bool {
	return math.Abs(got-want) <= tol*max(1, math.Abs(want))
}

func TestFloatKernelsMatchScalar(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range edgeLengths {
		for trial := range 5 {
			a, b := make([]float32, n), make([]float32, n)
			for i := range a {
				a[i], b[i] = float32(rng.NormFloat64()), float32(rng.NormFloat64())
				if trial == 4 {
					a[i], b[i] = a[i]*1e3, b[i]*1e3 // large magnitudes
				}
			}
			var wantDot, wantL2 float64
			for i := range a {
				wantDot += float64(a[i]) * float64(b[i])
				d := float64(a[i]) - float64(b[i])
				wantL2 += d * d
			}
			scale := 1e-5 * float64(n+1)
			if got := float64(dot(a, b)); !closeTo(got, wantDot, scale) {
				t.Errorf("n=%d: dot = %v, want %v", n, got, wantDot)
			}
			if got := float64(dotGeneric(a, b)); !closeTo(got, wantDot, scale) {
				t.Errorf("n=%d: dotGeneric = %v, want %v", n, got, wantDot)
			}
			if got := float64(l2sq(a, b)); !closeTo(got, wantL2, scale) {
				t.Errorf("n=%d: l2sq = %v, want %v", n, got, wantL2)
			}
			if got := float64(l2sqGeneric(a, b)); !closeTo(got, wantL2, scale) {
				t.Errorf("n=%d: l2sqGeneric = %v, want %v", n, got, wantL2)
			}
		}
	}
}

func TestCodeKernelsMatchScalar(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, dim := range []int{1, 63, 64, 65, 128, 784, 1280, 4096, 1 << 16} {
		n := codeLen(dim)
		lim := int(weightLimit(n))
		for trial := range 4 {
			w, c := make([]int16, n), make([]byte, n)
			for i := range dim {
				switch trial {
				case 0: // random
					w[i], c[i] = int16(rng.IntN(2*lim+1)-lim), byte(rng.IntN(256))
				case 1: // every product at the positive limit: the accumulators' worst case
					w[i], c[i] = int16(lim), 255
				case 2: // and at the negative one
					w[i], c[i] = int16(-lim), 255
				case 3: // alternating signs
					w[i], c[i] = int16(lim*(1-2*(i%2))), byte(255-i%256)
				}
			}
			var want int64
			for i := range w {
				want += int64(w[i]) * int64(c[i])
			}
			if got := float64(dotCodes(w, c)); !closeTo(got, float64(want), 1e-6) {
				t.Errorf("dim=%d trial %d: dotCodes = %v, want %v", dim, trial, got, want)
			}
			if got := float64(dotCodesGeneric(w, c)); !closeTo(got, float64(want), 1e-6) {
				t.Errorf("dim=%d trial %d: dotCodesGeneric = %v, want %v", dim, trial, got, want)
			}
		}

		a, b := make([]float32, n), make([]float32, n)
		c := make([]byte, n)
		for i := range dim {
			a[i] = float32(rng.NormFloat64() * 100)
			b[i] = float32(rng.Float64() * 50)
			c[i] = byte(rng.IntN(256))
		}
		got, want := make([]int16, n), make([]int16, n)
		nodeWeights(got, c, a, b)
		nodeWeightsGeneric(want, c, a, b)
		for i := range got {
			// The vector form multiplies and adds in float32 like the scalar one; allow one
			// unit where float32 rounding lands on the other side of a half.
			if d := int(got[i]) - int(want[i]); d < -1 || d > 1 {
				t.Fatalf("dim=%d: nodeWeights[%d] = %d, scalar %d", dim, i, got[i], want[i])
			}
		}
	}
}

func TestQueryKernelsMatchScalar(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, n := range edgeLengths {
		x, s := make([]float32, n), make([]float32, n+3)
		for i := range x {
			x[i] = float32(rng.NormFloat64())
			s[i] = float32(rng.Float64() * 0.01)
		}
		if n > 5 {
			x[n/2] = -40 // the largest product, negative
		}
		if got, want := maxAbsProd(x, s), maxAbsProdGeneric(x, s); got != want {
			t.Errorf("n=%d: maxAbsProd = %v, scalar %v", n, got, want)
		}
		most := maxAbsProdGeneric(x, s)
		inv := float32(1)
		if most > 0 {
			inv = 32767 / most
		}
		got, want := make([]int16, n), make([]int16, n)
		queryWeights(got, x, s, inv)
		queryWeightsGeneric(want, x, s, inv)
		for i := range got {
			if d := int(got[i]) - int(want[i]); d < -1 || d > 1 {
				t.Fatalf("n=%d: queryWeights[%d] = %d, scalar %d", n, i, got[i], want[i])
			}
		}
		if n > 5 && got[n/2] != -32767 {
			t.Fatalf("n=%d: the largest weight is %d, want -32767", n, got[n/2])
		}
	}
}

func TestPrefetchLinesIsHarmless(t *testing.T) {
	buf := make([]byte, 64*100)
	ptrs := []unsafe.Pointer{unsafe.Pointer(&buf[0]), unsafe.Pointer(&buf[64*50])}
	for _, lines := range []int{0, 1, 7, 50} {
		prefetchLines(ptrs, lines)
		prefetchLines(ptrs[:0], lines)
	}
}

func TestQuantizerEncodeDecode(t *testing.T) {
	base, _ := clustered(9, 3000, 0, 96, 30, true)
	q := trainQuantizer(base[:quantTrainSize], 96, quantMargin)
	codes := make([]byte, codeLen(96))
	back := make([]float32, 96)
	for _, v := range base {
		nn, xo := q.encode(v, codes)
		q.decode(back, codes)
		var wantNN, wantXO float64
		for d := range v {
			x := float64(back[d])
			wantNN += x * x
			wantXO += x * float64(q.offset[d])
			lo, hi := q.offset[d], q.offset[d]+255*q.scale[d]
			if v[d] >= lo && v[d] <= hi && math.Abs(float64(v[d]-back[d])) > 0.5001*float64(q.scale[d]) {
				t.Fatalf("dimension %d: %v decoded as %v, scale %v", d, v[d], back[d], q.scale[d])
			}
		}
		if !closeTo(float64(nn), wantNN, 1e-5) || !closeTo(float64(xo), wantXO, 1e-5) {
			t.Fatalf("terms %v, %v; want %v, %v", nn, xo, wantNN, wantXO)
		}
		for _, pad := range codes[96:] {
			if pad != 0 {
				t.Fatal("padding codes are not zero")
			}
		}
	}
}

// TestCodeDistances checks both code distances, query to node and node to node, against the
// float distance to the dequantised vectors.
func TestCodeDistances(t *testing.T) {
	for _, metric := range []Metric{InnerProduct, L2} {
		t.Run(metric.String(), func(t *testing.T) {
			dim := 200
			base, queries := clustered(13, quantTrainSize+100, 50, dim, 20, metric == InnerProduct)
			if metric == L2 {
				for _, v := range append(base, queries...) {
					for d := range v {
						v[d] = 40 + 30*v[d] // off-centre values, as raw pixels are
					}
				}
			}
			h := NewHNSW(dim, Config{Metric: metric, Quantize: QuantizeInt8, EFConstruction: 20})
			for i, v := range base {
				if err := h.Add(Key(i), v); err != nil {
					t.Fatal(err)
				}
			}
			g := h.g
			if g.quant == nil {
				t.Fatal("the quantiser was not trained")
			}
			deq := func(node uint32) []float32 {
				v := make([]float32, dim)
				g.quant.decode(v, g.codesOf(node))
				return v
			}
			var p, pn prepared
			var worst float64
			for qi, q := range queries {
				g.prepare(&p, q)
				g.prepareNode(&pn, uint32(qi))
				a := deq(uint32(qi))
				for node := uint32(0); node < 200; node++ {
					x := deq(node)
					want := float64(distance(metric == L2, q, x))
					got := float64(g.pdist(&p, node))
					wantN := float64(distance(metric == L2, a, x))
					gotN := float64(g.pdist(&pn, node))
					scale := math.Sqrt(float64(dot(q, q)) * float64(dot(x, x)))
					worst = max(worst, math.Abs(got-want)/scale, math.Abs(gotN-wantN)/scale)
				}
			}
			t.Logf("worst error relative to |q||x|: %.2e", worst)
			if worst > 1e-3 {
				t.Fatalf("code distances off by %.2e of |q||x|", worst)
			}
		})
	}
}
