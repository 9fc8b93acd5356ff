// Package store is the catalogue's source of truth: one bbolt file holding every item's
// metadata and full-precision vector, a meta record, and a change log that lets a derived
// index (loaded from an older snapshot) catch up instead of rebuilding.
//
// It owns the bbolt file and is the only package that imports go.etcd.io/bbolt. It must never
// import grpc, embed or index: it knows nothing about how vectors are made or searched, only
// that they have a fixed dimension and come from one model identity.
//
// # Layout
//
// Buckets inside the file:
//
//   - meta: schema version, model identity, dimension, next key, write sequence number,
//     item count, log floor and a generation id.
//   - items: product id -> encoded item metadata (versioned binary, see encodeItem), which
//     includes the item's compact key. The vector is not in this record.
//   - vectors: key (big-endian uint32) -> vector (dim little-endian float32s).
//   - keys: key (big-endian uint32) -> product id, the reverse mapping.
//   - categories: category -> item count, maintained in the same transaction as every write,
//     so CountByCategory costs one pass over the categories, not over the items.
//   - log: sequence number (big-endian uint64) -> change (key + upsert or delete).
//
// # Keys
//
// Every new product id gets the next compact key (starting at 1) and keys are never reused,
// not even after a delete, so a change-log replay can never confuse two items. Replacing an
// existing id keeps its key and its Created time: the change log then records an upsert of the
// same key, which an index applies as a replace.
//
// # Durability
//
// Every acknowledged write has been committed with fsync before it returns (unless
// Options.NoSync, meant only for benchmarks). A write bumps the sequence number once per
// item changed and appends one log record per change, in the same transaction.
package store
