//go:build !amd64 || purego

package index

import "unsafe"

// dot returns the inner product of a and b, which must have the same length.
func dot(a, b []float32) float32 { return dotGeneric(a, b) }

// l2sq returns the squared Euclidean distance between a and b, which must have the same length.
func l2sq(a, b []float32) float32 { return l2sqGeneric(a, b) }

// dotCodes returns sum(w[i]*c[i]) over len(w) codes.
func dotCodes(w []int16, c []byte) float32 { return dotCodesGeneric(w, c) }

// nodeWeights sets dst[i] = round(a[i] + b[i]*c[i]).
func nodeWeights(dst []int16, c []byte, a, b []float32) { nodeWeightsGeneric(dst, c, a, b) }

// prefetchLines does nothing here: Go has no portable prefetch.
func prefetchLines([]unsafe.Pointer, int) {}

// maxAbsProd returns max |x[i]*s[i]|.
func maxAbsProd(x, s []float32) float32 { return maxAbsProdGeneric(x, s) }

// queryWeights sets dst[i] = round(x[i]*s[i]*inv).
func queryWeights(dst []int16, x, s []float32, inv float32) { queryWeightsGeneric(dst, x, s, inv) }
