// Package catalog is the plain-Go core of Lookalike: over a Backend that keeps products and
// searches their photos' vectors, it makes a product catalogue with upsert, delete, filtered
// similarity search, near-duplicate detection and statistics. The embedded backend
// (OpenEmbedded, the default) composes store (the durable bbolt file) and index (the derived
// HNSW graph); package weaviate is another; both pass the suite in catalog/backendtest.
//
// Products have several photos. The graph holds one vector per photo under the photo's key;
// the catalogue maps keys to products, so searches rank products by their best-matching photo
// (and search deeper when several photos of one product fill the candidate list), "more like
// this" queries with all of a product's photos, and duplicates pair products, never two
// photos of one product. The ranking options (group_by, not_like, diversity) work on the
// merged products.
//
// It owns the write order (embed, then the backend, durably, then the product table; in the
// embedded backend the store with fsync, then the graph, so no failure leaves the graph
// ahead of the store), the per-photo "unchanged" rule (a photo whose bytes equal what is
// stored under its id is never embedded again; a metadata change runs no model and leaves
// the graph alone) and the in-memory key -> product table that filters and results read.
// The embedded backend owns the graph snapshot lifecycle: load and catch up on open, rebuild
// when the snapshot is missing, damaged or saved from another store generation (a restored
// store), both from every core (graphload.go), save on demand, periodically, after
// --snapshot-changes writes and at close, beside the writes and without the live vectors the
// store already holds; and consistent store backups.
//
// It must never import grpc, bbolt or a remote backend (weaviate imports catalog, not the
// other way): the server package adapts it to gRPC, and only store touches the database
// file. Its errors are plain sentinels (ErrInvalidArgument, ErrNotFound, ErrClosed,
// ErrUnsupported) plus whatever embed and the backend return, wrapped; the edge maps them to
// status codes.
package catalog
