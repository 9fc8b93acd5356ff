#!/usr/bin/env bash
# run.sh runs every Lookalike benchmark in one go and leaves markdown tables, a recall-vs-QPS
# plot per vector set and a CPU profile of the index query loop under benchmarks/results/.
# `make bench` calls it (under 20 minutes on 2 cores), `make bench-quick` with QUICK=1 (a few
# minutes; its results go to benchmarks/results/tmp/quick/, which git ignores, so the committed
# full results stay), `make bench-1m` with SCALE=1m (only the million-vector ANN run, about an
# hour on 2 cores).
# It expects `make build` (bin/lookalike), the peers' Debian packages and g++
# (LOOKALIKE_SETUP_BENCH=1 scripts/setup.sh), which the make targets provide. The first run
# embeds the 70,000 Fashion-MNIST images with the default model (a few minutes) and caches the
# vectors under benchmarks/results/cache/ (git-ignored), keyed by the model's identity.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=${QUICK:-0}
SCALE=${SCALE:-}
out=benchmarks/results
tmp=benchmarks/results/tmp
[ "$QUICK" = 1 ] && out=$tmp/quick
mkdir -p "$out" "$tmp/bin"
start=$SECONDS
step() { printf '\nbench: [%4ds] %s\n' "$((SECONDS - start))" "$*" >&2; }

if [ "$SCALE" = 1m ]; then
  step "building annbench"
  go build -o "$tmp/bin/annbench" ./benchmarks/cmd/annbench
  # One library at a time (-sequential): a million 1280-d float32 vectors are 5 GB, and the
  # indexes could not all be held at once. Builds are single-threaded like every other build.
  step "ANN index on 1,000,000 vectors made from the Fashion-MNIST embeddings: hnswlib, lookalike int8"
  "$tmp/bin/annbench" -set fashion-mnist-1280-1m -queries 1000 -ef 10,20,40,80,160 -min-time 1s -rounds 2 -sequential \
    -libraries hnswlib,lookalike-int8-source -out "$out" -work "$tmp/ann-fashion-mnist-1280-1m"
  rm -f "$tmp/ann-fashion-mnist-1280-1m/base.fvecs"
  step "done: results in $out/"
  exit 0
fi

step "building the benchmark programs"
for p in annbench embedbench servebench photobench; do
  go build -o "$tmp/bin/$p" "./benchmarks/cmd/$p"
done

if [ "$QUICK" = 1 ]; then
  embed_args=(-limit 60 -stage-sample 20 -raw-time 1s)
  fmnist_args=(-base 10000 -queries 300 -ef 10,20,40,120,400 -min-time 150ms -rounds 2 -exact-time 1s)
  emb_args=(-base 10000 -queries 300 -ef 10,20,40,120 -min-time 150ms -rounds 2 -exact-time 1s)
  photo_args=(-ef 10,20,40,120,400 -min-time 100ms -rounds 2 -exact-time 500ms)
  serve_args=(-items 5000 -duration 1500ms -image-duration 1500ms -recall-queries 150 -recall-ef 0)
  photo_bench_args=(-photos 5000 -queries 200 -keep-photos 120)
  profile_env=(LOOKALIKE_BENCH_BASE=10000 LOOKALIKE_BENCH_EF=20)
  benchtime=2s
else
  embed_args=()
  fmnist_args=(-queries 2000 -min-time 500ms -rounds 3 -exact-time 3s)
  emb_args=(-queries 2000 -ef 10,20,40,80,120,200,400 -min-time 500ms -rounds 3 -exact-time 3s)
  photo_args=(-min-time 300ms -rounds 3)
  serve_args=(-items 100000 -duration 5s -image-duration 5s -recall-queries 500 -recall-ef 0,40,120)
  photo_bench_args=(-photos 100000 -queries 1000)
  profile_env=(LOOKALIKE_BENCH_BASE=60000 LOOKALIKE_BENCH_EF=20)
  benchtime=5s
fi

step "embedding throughput (and the photo embeddings the other benchmarks reuse)"
"$tmp/bin/embedbench" "${embed_args[@]}" -out "$out"

step "ANN index on Fashion-MNIST: lookalike (float32, int8), exact, coder/hnsw, hnswlib (native, Python), FAISS"
"$tmp/bin/annbench" -set fashion-mnist "${fmnist_args[@]}" -out "$out" -work "$out/tmp/ann-fashion-mnist" \
  -libraries lookalike,lookalike-int8,exact,coder-hnsw,hnswlib,hnswlib-python,faiss

step "ANN index on the Fashion-MNIST embeddings (1280-d; embedded once, then cached)"
"$tmp/bin/annbench" -set fashion-mnist-1280 "${emb_args[@]}" -out "$out" -work "$out/tmp/ann-fashion-mnist-1280" \
  -libraries lookalike,lookalike-int8,lookalike-int8-source,exact,hnswlib,hnswlib-python

step "ANN index on the shared photos' embeddings"
"$tmp/bin/annbench" -set photos "${photo_args[@]}" -out "$out" -work "$out/tmp/ann-photos" \
  -photo-vectors "$out/tmp/photo-embeddings.fvecs" -libraries lookalike,lookalike-int8,exact,coder-hnsw,hnswlib,hnswlib-python,faiss

step "serving: a real lookalike serve on 127.0.0.1"
"$tmp/bin/servebench" "${serve_args[@]}" -out "$out" -work "$out/tmp/serve" \
  -photo-vectors "$out/tmp/photo-embeddings.fvecs"

step "products with several photos: product-level search latency, the cost of kept photos"
"$tmp/bin/photobench" "${photo_bench_args[@]}" -out "$out" -photo-vectors "$out/tmp/photo-embeddings.fvecs"

step "retrieval quality on the shared photos (lookalike quality)"
for q in "--dataset grocery" "--dataset grocery --products" "--dataset clothing"; do
  echo "lookalike quality $q"
  bin/lookalike quality $q
done | tee "$out/quality.txt"

step "CPU profile of the index query loop"
env "${profile_env[@]}" go test ./benchmarks -run '^$' -bench HNSWQueryFashionMNIST -benchtime "$benchtime" \
  -cpuprofile "$tmp/query-cpu.prof" -o "$tmp/benchmarks.test" | tee "$tmp/query-bench.txt"
{
  echo "## CPU profile of the index query loop"
  echo
  echo "\`${profile_env[*]} go test ./benchmarks -run '^\$' -bench HNSWQueryFashionMNIST -benchtime $benchtime -cpuprofile cpu.prof\`"
  echo
  echo '```'
  grep -E '^Benchmark' "$tmp/query-bench.txt" || true
  echo
  echo "Only samples under (*HNSW).Search*, i.e. the query loop without the build:"
  go tool pprof -top -nodecount=25 -focus='HNSW\)\.Search' "$tmp/benchmarks.test" "$tmp/query-cpu.prof" 2>/dev/null
  echo '```'
} > "$out/profile.md"

step "done: results in $out/"
ls -l "$out"
