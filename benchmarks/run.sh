#!/usr/bin/env bash
# run.sh runs every Lookalike benchmark in one go and leaves markdown tables, a recall-vs-QPS
# plot per vector set and a CPU profile of the index query loop under benchmarks/results/.
# `make bench` calls it (under 15 minutes on 2 cores), `make bench-quick` with QUICK=1 (under
# 2 minutes; its results go to benchmarks/results/tmp/quick/, which git ignores, so the committed
# full results stay).
# It expects `make build` (bin/lookalike) and the peers' Debian packages
# (LOOKALIKE_SETUP_BENCH=1 scripts/setup.sh), which both make targets provide.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=${QUICK:-0}
out=benchmarks/results
tmp=benchmarks/results/tmp
[ "$QUICK" = 1 ] && out=$tmp/quick
mkdir -p "$out" "$tmp/bin"
start=$SECONDS
step() { printf '\nbench: [%4ds] %s\n' "$((SECONDS - start))" "$*" >&2; }

step "building the benchmark programs"
for p in annbench embedbench servebench; do
  go build -o "$tmp/bin/$p" "./benchmarks/cmd/$p"
done

if [ "$QUICK" = 1 ]; then
  embed_args=(-limit 60 -stage-sample 20 -raw-time 1s)
  fmnist_args=(-base 10000 -queries 300 -ef 10,20,40,120,400 -min-time 150ms -rounds 2 -exact-time 1s)
  photo_args=(-ef 10,20,40,120,400 -min-time 100ms -rounds 2 -exact-time 500ms)
  serve_args=(-items 5000 -duration 1500ms -image-duration 1500ms -recall-queries 150 -recall-ef 0)
  profile_env=(LOOKALIKE_BENCH_BASE=10000 LOOKALIKE_BENCH_EF=20)
  benchtime=2s
else
  embed_args=()
  fmnist_args=(-queries 2000 -min-time 500ms -rounds 3 -exact-time 3s)
  photo_args=(-min-time 300ms -rounds 3)
  serve_args=(-items 100000 -duration 5s -image-duration 5s -recall-queries 500 -recall-ef 0,40,120)
  profile_env=(LOOKALIKE_BENCH_BASE=60000 LOOKALIKE_BENCH_EF=20)
  benchtime=5s
fi

step "embedding throughput (and the photo embeddings the other benchmarks reuse)"
"$tmp/bin/embedbench" "${embed_args[@]}" -out "$out"

step "ANN index on Fashion-MNIST: lookalike, exact, coder/hnsw, hnswlib, FAISS"
"$tmp/bin/annbench" -set fashion-mnist "${fmnist_args[@]}" -out "$out" -work "$out/tmp/ann-fashion-mnist"

step "ANN index on the shared photos' embeddings"
"$tmp/bin/annbench" -set photos "${photo_args[@]}" -out "$out" -work "$out/tmp/ann-photos" \
  -photo-vectors "$out/tmp/photo-embeddings.fvecs"

step "serving: a real lookalike serve on 127.0.0.1"
"$tmp/bin/servebench" "${serve_args[@]}" -out "$out" -work "$out/tmp/serve" \
  -photo-vectors "$out/tmp/photo-embeddings.fvecs"

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
