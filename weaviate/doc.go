// Package weaviate is a catalog.Backend over a Weaviate cluster, for catalogues that outgrow
// one machine: Weaviate shards and replicates the photo vectors, filters on their properties
// inside its HNSW search, and any node answers for the cluster.
//
// It owns the mapping of the catalogue onto Weaviate collections (one object per photo with
// its vector and its product's properties; kept photos, settings, duplicate decisions, the
// model identity and the photo key counter in collections of their own, so every node and
// every process pointed at the cluster reads the same ones), the translation of catalogue
// filters into where filters, and the consistency levels of its reads and writes. It speaks
// Weaviate's REST and GraphQL API with net/http, failing over between the nodes it is given.
//
// It must never import bbolt, grpc or the server: the catalogue sits above it, and only
// store's plain types (Product, Photo, Decision) and validation cross the seam.
package weaviate
