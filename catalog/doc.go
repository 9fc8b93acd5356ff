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
// store), save on demand, periodically, after --snapshot-changes writes and at close, beside
// the writes and without the live vectors the store already holds; and consistent store
// backups.
//
// Catching up and rebuilding share one mechanism (catchup.go): the net state of every photo
// the graph does not reflect (the store's vector, or deleted), applied by one worker per core.
// Up to 256 such photos are applied before OpenEmbedded returns. Past that (a crash left many
// changes behind the snapshot, or there is no usable snapshot) OpenEmbedded returns once the
// snapshot is loaded, or at once with an empty graph, and the graph catches up in the
// background while everything is served correctly: writes record their graph changes in the
// catch-up, searches take the graph's answer for the photos it holds in their latest state and
// score the other photos exactly, so a search costs a scan of the photos not in the graph yet
// (all of them at the start of a rebuild). No snapshot is saved until the graph holds
// everything; a close meanwhile saves nothing, since the old snapshot and the store's change
// log, which only a save truncates, still describe everything. When the catch-up is over the
// graph must hold as many photos as the store; if not, it is reconciled with the store (in the
// background too) and an error is logged if that fails.
//
// It must never import grpc, bbolt or a remote backend (weaviate imports catalog, not the
// other way): the server package adapts it to gRPC, and only store touches the database
// file. Its errors are plain sentinels (ErrInvalidArgument, ErrNotFound, ErrClosed,
// ErrUnsupported) plus whatever embed and the backend return, wrapped; the edge maps them to
// status codes.
package catalog
