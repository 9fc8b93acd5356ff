//go:build amd64 && !purego

package index

import (
	"unsafe"

	"golang.org/x/sys/cpu"
)

// hasAVX2FMA is a read-only fact about the CPU, fixed at start-up. There is no AVX-512
// kernel: none could be tested on the machines this was written on (AMD EPYC, AVX2 only), so
// AVX-512 CPUs run the AVX2 kernels.
var hasAVX2FMA = cpu.X86.HasAVX2 && cpu.X86.HasFMA

//go:noescape
func dotAVX2(a, b *float32, n int) float32

//go:noescape
func l2sqAVX2(a, b *float32, n int) float32

//go:noescape
func dotCodesAVX2(w *int16, c *byte, n int) float32

//go:noescape
func nodeWeightsAVX2(dst *int16, c *byte, a, b *float32, n int)

//go:noescape
func prefetchBatch(ptrs *unsafe.Pointer, n, lines int)

//go:noescape
func maxAbsProdAVX2(x, s *float32, n int) float32

//go:noescape
func queryWeightsAVX2(dst *int16, x, s *float32, inv float32, n int)

// dot returns the inner product of a and b, which must have the same length.
func dot(a, b []float32) float32 {
	// Kept small enough to inline into the search loop.
	if hasAVX2FMA && len(a) > 0 && len(b) >= len(a) {
		return dotAVX2(unsafe.SliceData(a), unsafe.SliceData(b), len(a))
	}
	return dotGeneric(a, b)
}

// l2sq returns the squared Euclidean distance between a and b, which must have the same length.
func l2sq(a, b []float32) float32 {
	// Kept small enough to inline into the search loop.
	if hasAVX2FMA && len(a) > 0 && len(b) >= len(a) {
		return l2sqAVX2(unsafe.SliceData(a), unsafe.SliceData(b), len(a))
	}
	return l2sqGeneric(a, b)
}

// dotCodes returns sum(w[i]*c[i]); len(w) is a multiple of 64 and len(c) >= len(w).
func dotCodes(w []int16, c []byte) float32 {
	if hasAVX2FMA && len(w)%64 == 0 && len(c) >= len(w) {
		return dotCodesAVX2(unsafe.SliceData(w), unsafe.SliceData(c), len(w))
	}
	return dotCodesGeneric(w, c)
}

// nodeWeights sets dst[i] = round(a[i] + b[i]*c[i]); len(dst) is a multiple of 16 and the
// other slices are at least as long.
func nodeWeights(dst []int16, c []byte, a, b []float32) {
	n := len(dst)
	if hasAVX2FMA && n%16 == 0 && n > 0 && len(c) >= n && len(a) >= n && len(b) >= n {
		nodeWeightsAVX2(unsafe.SliceData(dst), unsafe.SliceData(c), unsafe.SliceData(a), unsafe.SliceData(b), n)
		return
	}
	nodeWeightsGeneric(dst, c, a, b)
}

// prefetchLines asks for the first lines cache lines at each address in ptrs.
func prefetchLines(ptrs []unsafe.Pointer, lines int) {
	prefetchBatch(unsafe.SliceData(ptrs), len(ptrs), lines)
}

// maxAbsProd returns max |x[i]*s[i]|; len(s) >= len(x).
func maxAbsProd(x, s []float32) float32 {
	n := len(x) &^ 7
	var most float32
	if hasAVX2FMA && n > 0 && len(s) >= len(x) {
		most = maxAbsProdAVX2(unsafe.SliceData(x), unsafe.SliceData(s), n)
	} else {
		n = 0
	}
	return max(most, maxAbsProdGeneric(x[n:], s[n:]))
}

// queryWeights sets dst[i] = round(x[i]*s[i]*inv); len(dst) == len(x) <= len(s).
func queryWeights(dst []int16, x, s []float32, inv float32) {
	n := len(x) &^ 15
	if hasAVX2FMA && n > 0 && len(dst) >= len(x) && len(s) >= len(x) {
		queryWeightsAVX2(unsafe.SliceData(dst), unsafe.SliceData(x), unsafe.SliceData(s), inv, n)
	} else {
		n = 0
	}
	queryWeightsGeneric(dst[n:], x[n:], s[n:], inv)
}
