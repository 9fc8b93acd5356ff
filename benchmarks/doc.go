// Package benchmarks holds Lookalike's reproducible performance measurements: the ANN index
// beside hnswlib (native and Debian's Python build), FAISS and coder/hnsw (cmd/annbench with
// peers/), embedding throughput (cmd/embedbench), serving latency and memory of real
// `lookalike serve` processes (cmd/servebench) and products with several photos
// (cmd/photobench). run.sh drives them all for `make bench` and `make bench-quick`, and every
// run writes markdown tables and a recall-vs-QPS plot under results/ stamped with the machine,
// date and commit.
//
// This package itself only holds the benchmarks run.sh profiles: the index query loop
// (query_profile_test.go) and SearchById under concurrent load on a catalogue servebench left
// behind, with the filter and store-read costs apart (serve_profile_test.go). benchmarks/ may
// import any project package; no project package may import benchmarks/.
package benchmarks
