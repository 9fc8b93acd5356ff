// Package catalog is the plain-Go core of Lookalike: it composes embed (photo -> vector),
// store (the durable bbolt file) and index (the derived HNSW graph) into a product catalogue
// with upsert, delete, filtered similarity search, near-duplicate detection and statistics.
//
// It owns the write order (embed, then the store with fsync, then the index, so no failure
// leaves the index ahead of the store), the in-memory key -> product table that filters and
// results read, and the graph snapshot lifecycle: load and catch up on open, rebuild when the
// snapshot is missing, damaged or saved from another store generation (a restored store),
// save on demand, periodically and at close. It also hands out consistent store backups.
//
// It must never import grpc or bbolt: the server package adapts it to gRPC, and only store
// touches the database file. Its errors are plain sentinels (ErrInvalidArgument, ErrNotFound,
// ErrClosed) plus whatever embed returns, wrapped; the edge maps them to status codes.
package catalog
