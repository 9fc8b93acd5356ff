// Package index holds the in-memory nearest-neighbour indexes of the catalogue: an HNSW graph
// (built here rather than wrapped, because github.com/coder/hnsw does not reach the recall the
// project needs), an exact brute-force index with the same interface for ground truth and
// small catalogues, filtered search, and the versioned, checksummed graph snapshot format.
//
// The graph keeps each node's layer-0 links beside its vector in one cache-line aligned
// element, as hnswlib's level-0 block does, and a search prefetches the elements of a node's
// unvisited neighbours together before scoring them. By default the vectors are float32. With
// Config.Quantize = QuantizeInt8 the graph holds one byte per dimension instead
// (per-dimension scalar quantisation fitted to the first vectors added), searches score
// candidates on those codes with an integer kernel and re-score the best on the full float32
// vectors, so results and scores stay exact; the full vectors live outside the graph's hot
// memory, or with Config.Vectors in the caller's own storage. Distance kernels use AVX2 and
// FMA where golang.org/x/sys/cpu reports them, portable Go elsewhere.
//
// Upkeep runs beside the writes: a compaction (compact.go) rebuilds the graph without its
// tombstones from a list of its live nodes, catches up from a log of the writes made
// meanwhile and swaps the new graph in; a snapshot save (snapshot.go) copies the deleted
// flags, streams the rest from the live graph, and writers keep for it the old links of any
// frozen node they change.
//
// The index is a derived view of the store: it knows only uint32 keys and float32 vectors and
// can always be rebuilt from them. It must never import images, grpc, bbolt, embed or store.
package index
