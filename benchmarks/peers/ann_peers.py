#!/usr/bin/python3
"""Lookalike's ANN peers: hnswlib and FAISS IndexHNSWFlat on the vectors annbench wrote.

annbench (Go) writes base.fvecs and queries.fvecs and starts this script, which builds every
peer index (one thread each) and reports each build as a JSON line on stdout. It then answers
commands on stdin, one a line, "<library> <ef> <k> <min_seconds> <ids path or ->": time batched
searches (one knn call per pass over all queries, one thread, so Python's per-call overhead is
not in the figures), repeating passes for at least min_seconds, write the first pass's top-k ids
as .ivecs when a path is given, and reply {"event": "measured", "qps": ...}. annbench drives the
peers and its own indexes in interleaved rounds so that load from other processes on the
machine hits every library alike, and scores the ids with the same recall code for all.

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


def build_hnswlib(args, base):
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

    def search(queries, ef, k):
        index.set_ef(max(ef, k))
        return lambda: index.knn_query(queries, k=k, num_threads=1)[0]

    return search, build_s, per_vector


def build_faiss(args, base):
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

    def search(queries, ef, k):
        index.hnsw.efSearch = max(ef, k)
        return lambda: index.search(queries, k)[1]

    return search, build_s, per_vector


BUILDERS = {"hnswlib": build_hnswlib, "faiss": build_faiss}


def reply(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True, help="holds base.fvecs and queries.fvecs")
    ap.add_argument("--metric", choices=["l2", "ip"], required=True)
    ap.add_argument("--M", type=int, required=True)
    ap.add_argument("--ef-construction", type=int, required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--libraries", default="hnswlib,faiss")
    args = ap.parse_args()

    base = read_fvecs(os.path.join(args.workdir, "base.fvecs"))
    queries = read_fvecs(os.path.join(args.workdir, "queries.fvecs"))
    searchers = {}
    for lib in args.libraries.split(","):
        search, build_s, per_vector = BUILDERS[lib](args, base)
        searchers[lib] = search
        reply(dict(event="built", library=lib, build_s=build_s, bytes_per_vector=per_vector))
    reply(dict(event="ready"))
    # Commands, one a line: "<library> <ef> <k> <min_seconds> <ids path or ->".
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        lib, ef, k, min_seconds, ids_path = parts[0], int(parts[1]), int(parts[2]), float(parts[3]), parts[4]
        labels, qps = timed_passes(searchers[lib](queries, ef, k), len(queries), min_seconds)
        if ids_path != "-":
            write_ivecs(ids_path, labels)
        reply(dict(event="measured", library=lib, ef=ef, qps=qps))


if __name__ == "__main__":
    main()
