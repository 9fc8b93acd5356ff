// Package quality measures how well a catalogue answers labelled queries: recall@k, mAP@10,
// precision@10 and how often a query's catalogue shot comes back, the figures a storefront's
// "similar products" depend on. `lookalike quality` and the benchmarks report them.
//
// It owns only the metrics and the query loop over a catalogue's search. It must never import
// grpc or bbolt, and it does not build catalogues: callers hand it an open one.
package quality
