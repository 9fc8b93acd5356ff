#!/usr/bin/python3
"""Lookalike's ANN peers: hnswlib and FAISS IndexHNSWFlat on the vectors annbench wrote.

annbench (Go) writes base.fvecs and queries.fvecs, runs this script, and scores what it returns
with the same recall function as its own index, so every library is judged alike. Both peers
are built and queried on one thread, and queried with one batched call per pass over the
queries, so Python's per-call overhead is not in their numbers. A pass is repeated until it has
run for at least --min-seconds, and QPS is queries answered / time spent.

Output: --out JSON, a list of {library, ef, qps, build_s, bytes_per_vector, ids}, where ids is
the file (ivecs) holding the first pass's top-k ids per query.

Debian packages: python3-hnswlib python3-faiss python3-numpy (scripts/setup.sh installs them
when LOOKALIKE_SETUP_BENCH=1).
"""
import argparse
import json
import os
import sys
import time

import numpy as np


def read_fvecs(path):
    raw = np.fromfile(path, dtype=np.int32)
    if raw.size == 0:
        sys.exit(f"ann_peers: {path} is empty")
    dim = int(raw[0])
    rows = raw.reshape(-1, dim + 1)
    if not (rows[:, 0] == dim).all():
        sys.exit(f"ann_peers: {path}: rows of different dimension")
    return np.ascontiguousarray(rows[:, 1:].view(np.float32))


def write_ivecs(path, ids):
    ids = np.asarray(ids, dtype=np.int32)
    out = np.empty((ids.shape[0], ids.shape[1] + 1), dtype=np.int32)
    out[:, 0] = ids.shape[1]
    out[:, 1:] = ids
    out.tofile(path)


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def timed_passes(search, n_queries, min_seconds):
    """Run search() until min_seconds have passed; return (first result, queries per second)."""
    first = None
    passes = 0
    start = time.perf_counter()
    while True:
        res = search()
        if first is None:
            first = res
        passes += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return first, passes * n_queries / elapsed


def run_hnswlib(args, base, queries, results):
    import hnswlib

    before = rss_bytes()
    t0 = time.perf_counter()
    index = hnswlib.Index(space="l2" if args.metric == "l2" else "ip", dim=base.shape[1])
    index.init_index(max_elements=base.shape[0], M=args.M, ef_construction=args.ef_construction,
                     random_seed=args.seed)
    index.set_num_threads(1)
    index.add_items(base, np.arange(base.shape[0]), num_threads=1)
    build_s = time.perf_counter() - t0
    per_vector = (rss_bytes() - before) / base.shape[0]
    for ef in args.ef:
        index.set_ef(max(ef, args.k))
        labels, qps = timed_passes(lambda: index.knn_query(queries, k=args.k, num_threads=1)[0],
                                   len(queries), args.min_seconds)
        path = os.path.join(args.workdir, f"hnswlib-ef{ef}.ivecs")
        write_ivecs(path, labels)
        results.append(dict(library="hnswlib", ef=ef, qps=qps, build_s=build_s,
                            bytes_per_vector=per_vector, ids=path))
        print(f"ann_peers: hnswlib ef={ef} qps={qps:.0f}", file=sys.stderr)


def run_faiss(args, base, queries, results):
    import faiss

    faiss.omp_set_num_threads(1)
    before = rss_bytes()
    t0 = time.perf_counter()
    metric = faiss.METRIC_L2 if args.metric == "l2" else faiss.METRIC_INNER_PRODUCT
    index = faiss.IndexHNSWFlat(base.shape[1], args.M, metric)
    index.hnsw.efConstruction = args.ef_construction
    index.add(base)
    build_s = time.perf_counter() - t0
    per_vector = (rss_bytes() - before) / base.shape[0]
    for ef in args.ef:
        index.hnsw.efSearch = max(ef, args.k)
        labels, qps = timed_passes(lambda: index.search(queries, args.k)[1], len(queries),
                                   args.min_seconds)
        path = os.path.join(args.workdir, f"faiss-ef{ef}.ivecs")
        write_ivecs(path, labels)
        results.append(dict(library="faiss-hnswflat", ef=ef, qps=qps, build_s=build_s,
                            bytes_per_vector=per_vector, ids=path))
        print(f"ann_peers: faiss ef={ef} qps={qps:.0f}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True, help="holds base.fvecs, queries.fvecs; ids go here")
    ap.add_argument("--metric", choices=["l2", "ip"], required=True)
    ap.add_argument("--M", type=int, required=True)
    ap.add_argument("--ef-construction", type=int, required=True)
    ap.add_argument("--ef", type=lambda s: [int(x) for x in s.split(",")], required=True)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--min-seconds", type=float, default=1.0)
    ap.add_argument("--libraries", default="hnswlib,faiss")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    base = read_fvecs(os.path.join(args.workdir, "base.fvecs"))
    queries = read_fvecs(os.path.join(args.workdir, "queries.fvecs"))
    results = []
    for lib in args.libraries.split(","):
        {"hnswlib": run_hnswlib, "faiss": run_faiss}[lib](args, base, queries, results)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
