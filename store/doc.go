// Package store is the catalogue's source of truth: one bbolt file holding every product's
// metadata, its photos' full-precision vectors and kept copies, a meta record, and a change
// log that lets a derived index (loaded from an older snapshot) catch up instead of
// rebuilding.
//
// It owns the bbolt file and is the only package that imports go.etcd.io/bbolt. It must never
// import grpc, embed or index: it knows nothing about how vectors are made or searched, only
// that they have a fixed dimension and come from one model identity.
//
// # Data model
//
// A product (id, category, title, attributes) has 1..MaxPhotos photos. A photo has an id of
// its own inside the product, a compact key (the index's name for its vector), where it came
// from, the sha256 of its bytes, a perceptual hash, one vector (of the model the store was
// created for) and optionally a kept copy: the photo as the model sees it, small enough to
// show and to re-embed from.
//
// # Layout (schema 2)
//
// Buckets inside the file:
//
//   - meta: schema version, model identity, dimension, next key, write sequence number,
//     product and photo counts, kept-photo count and bytes, log floor and a generation id.
//   - products: product id -> encoded product (see encodeProduct): metadata and every
//     photo's metadata with its key. Vectors and kept copies are not in this record.
//   - vectors: key (big-endian uint32) -> vector (dim little-endian float32s + CRC-32C).
//   - kept: key -> kept photo (JPEG + CRC-32C).
//   - keys: key -> product id, the reverse mapping.
//   - categories: category -> product count, maintained in the same transaction as every
//     write, so CountByCategory costs one pass over the categories, not over the products.
//   - log: sequence number (big-endian uint64) -> change (key + upsert, delete or metadata).
//   - decisions: "a\x00b" (two product ids, a < b) -> a reviewer's duplicate decision.
//   - settings: name -> value, for what the catalogue keeps about itself (its duplicate
//     policy). Neither decisions nor settings touch the graph, so neither is in the log.
//
// Every record carries a CRC-32C, checked on every read, so a damaged page is reported as
// ErrCorrupt instead of being served as a changed vector. Schema 1 (the first release, one
// photo per product) is upgraded in place by Open, in one transaction (migrate.go).
//
// # Keys
//
// Every new photo gets the next compact key (starting at 1) and keys are never reused, not
// even after a delete, so a change-log replay can never confuse two photos. A photo keeps its
// key while its product keeps its photo id, even when its bytes change: the log then records
// an upsert of the same key, which an index applies as a replace. A change of metadata only
// is logged with key 0, which an index skips.
//
// # Durability
//
// Every acknowledged write has been committed with fsync before it returns (unless
// Options.NoSync, meant only for benchmarks). A write bumps the sequence number once per
// photo stored or deleted (once for a metadata-only change) and appends one log record per
// change, in the same transaction.
package store
