//go:build !amd64 || purego

package index

// dot returns the inner product of a and b, which must have the same length.
func dot(a, b []float32) float32 { return dotGeneric(a, b) }

// l2sq returns the squared Euclidean distance between a and b, which must have the same length.
func l2sq(a, b []float32) float32 { return l2sqGeneric(a, b) }
