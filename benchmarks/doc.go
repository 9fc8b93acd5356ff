// Package benchmarks holds Lookalike's reproducible performance measurements: the ANN index
// beside hnswlib, FAISS and coder/hnsw (cmd/annbench with peers/ann_peers.py), embedding
// throughput (cmd/embedbench) and serving latency against a real `lookalike serve`
// (cmd/servebench). run.sh drives them all for `make bench` and `make bench-quick`, and every
// run writes markdown tables and a recall-vs-QPS plot under results/ stamped with the machine,
// date and commit.
//
// This package itself only holds the CPU-profile benchmark of the index query loop
// (query_profile_test.go). benchmarks/ may import any project package; no project package may
// import benchmarks/.
package benchmarks
