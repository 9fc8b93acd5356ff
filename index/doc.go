// Package index holds the in-memory nearest-neighbour indexes of the catalogue: an HNSW graph
// (built here rather than wrapped, because github.com/coder/hnsw does not reach the recall the
// project needs), an exact brute-force index with the same interface for ground truth and
// small catalogues, filtered search, and the versioned, checksummed graph snapshot format.
//
// The index is a derived view of the store: it knows only uint32 keys and float32 vectors and
// can always be rebuilt from them. It must never import images, grpc, bbolt, embed or store.
package index
