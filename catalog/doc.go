// Package catalog is the plain-Go core of Lookalike: it composes embed (photo -> vector),
// store (the durable bbolt file) and index (the derived HNSW graph) into a product catalogue
// with upsert, delete, filtered similarity search, near-duplicate detection and statistics.
//
// Products have several photos. The graph holds one vector per photo under the photo's key;
// the catalogue maps keys to products, so searches rank products by their best-matching photo
// (and search deeper when several photos of one product fill the candidate list), "more like
// this" queries with all of a product's photos, and duplicates pair products, never two
// photos of one product. The ranking options (group_by, not_like, diversity) work on the
// merged products.
//
// It owns the write order (embed, then the store with fsync, then the index, so no failure
// leaves the index ahead of the store), the per-photo "unchanged" rule (a photo whose bytes
// equal what is stored under its id is never embedded again; a metadata change runs no model
// and leaves the graph alone), the in-memory key -> product table that filters and results
// read, and the graph snapshot lifecycle: load and catch up on open, rebuild when the
// snapshot is missing, damaged or saved from another store generation (a restored store),
// save on demand, periodically and at close. It also hands out consistent store backups.
//
// It must never import grpc or bbolt: the server package adapts it to gRPC, and only store
// touches the database file. Its errors are plain sentinels (ErrInvalidArgument, ErrNotFound,
// ErrClosed) plus whatever embed returns, wrapped; the edge maps them to status codes.
package catalog
