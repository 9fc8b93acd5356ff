//go:build amd64 && !purego

package index

import (
	"unsafe"

	"golang.org/x/sys/cpu"
)

// hasAVX2FMA is a read-only fact about the CPU, fixed at start-up.
var hasAVX2FMA = cpu.X86.HasAVX2 && cpu.X86.HasFMA

//go:noescape
func dotAVX2(a, b *float32, n int) float32

//go:noescape
func l2sqAVX2(a, b *float32, n int) float32

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
