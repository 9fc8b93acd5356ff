//go:build amd64 && !purego

package index

import "golang.org/x/sys/cpu"

// hasAVX2FMA is a read-only fact about the CPU, fixed at start-up.
var hasAVX2FMA = cpu.X86.HasAVX2 && cpu.X86.HasFMA

//go:noescape
func dotAVX2(a, b *float32, n int) float32

//go:noescape
func l2sqAVX2(a, b *float32, n int) float32

// dot returns the inner product of a and b, which must have the same length.
func dot(a, b []float32) float32 {
	if hasAVX2FMA && len(a) > 0 {
		_ = b[len(a)-1]
		return dotAVX2(&a[0], &b[0], len(a))
	}
	return dotGeneric(a, b)
}

// l2sq returns the squared Euclidean distance between a and b, which must have the same length.
func l2sq(a, b []float32) float32 {
	if hasAVX2FMA && len(a) > 0 {
		_ = b[len(a)-1]
		return l2sqAVX2(&a[0], &b[0], len(a))
	}
	return l2sqGeneric(a, b)
}
