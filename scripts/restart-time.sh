#!/usr/bin/env bash
# Restart time after kill -9 (issue 10, item 8): how long `lookalike serve` takes from its
# start to health SERVING on a data directory of PHOTOS ready vectors (default 100,000), in
# three cases: killed before any graph snapshot was saved (the graph is rebuilt from the
# store), killed with a snapshot covering the store (loaded), and killed after 4,000 more photos (the default --snapshot-changes)
# were written since the snapshot (loaded and caught up). It runs
# BenchmarkRestartAfterKill (cmd/lookalike/restart_bench_test.go), which builds the binary
# from this tree, loads the data through UpsertStream and prints each restart's time with
# the server's own account of it.
#
#   scripts/restart-time.sh [PHOTOS]     # PER_PRODUCT=4 photos to a product, COUNT=1 restart per case
#
# Needs the shared model and about 1.5 GB of temporary disk per 100,000 photos.
set -euo pipefail
cd "$(dirname "$0")/.."
photos=${1:-${LOOKALIKE_RESTART_PHOTOS:-100000}}
if ! [[ $photos =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 [PHOTOS]" >&2
  exit 2
fi
echo "restart-time: $photos photos, ${PER_PRODUCT:-4} to a product, ${COUNT:-1} restart(s) per case"
start=$SECONDS
LOOKALIKE_RESTART_PHOTOS=$photos LOOKALIKE_RESTART_PHOTOS_PER_PRODUCT=${PER_PRODUCT:-4} \
  go test -count=1 -run '^$' -bench '^BenchmarkRestartAfterKill$' -benchtime "${COUNT:-1}x" -timeout 4h ./cmd/lookalike/
echo "restart-time: done in $((SECONDS - start))s"
