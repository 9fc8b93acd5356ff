#!/usr/bin/env bash
# Runs `make test` N times (default 10) with busy loops (`yes > /dev/null`, LOAD of them,
# default 2) running beside it, and prints how many runs passed. No test may depend on timing
# or scheduling, so a machine with every core taken must pass them all.
#
#   scripts/test-under-load.sh [N]        # LOAD=2, logs in a new temporary directory
#   LOAD=4 LOGDIR=/tmp/load scripts/test-under-load.sh 3
#
# The busy loops are started here and killed on any exit (trap). Exit status 0 only when
# every run passed.
set -u -o pipefail

runs=${1:-10}
load=${LOAD:-2}
if ! [[ $runs =~ ^[1-9][0-9]*$ && $load =~ ^[0-9]+$ ]]; then
  echo "usage: $0 [RUNS]   (RUNS >= 1; LOAD = number of busy loops, default 2)" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
logdir=${LOGDIR:-$(mktemp -d -t lookalike-load-XXXXXX)}
mkdir -p "$logdir"

busy=()
stop_busy() {
  local pid
  for pid in "${busy[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${busy[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  busy=()
}
trap stop_busy EXIT
trap 'exit 130' INT TERM

for ((i = 0; i < load; i++)); do
  yes >/dev/null &
  busy+=("$!")
done
echo "test-under-load: $runs runs of make test beside $load busy loops (pids ${busy[*]:-none}); logs in $logdir"

passed=0
total_start=$SECONDS
for ((i = 1; i <= runs; i++)); do
  start=$SECONDS
  log="$logdir/run-$i.log"
  if make test >"$log" 2>&1; then
    passed=$((passed + 1))
    echo "run $i/$runs: PASS in $((SECONDS - start))s"
  else
    echo "run $i/$runs: FAIL in $((SECONDS - start))s (log $log):"
    grep -E '^ *(--- FAIL|FAIL|panic:)' "$log" | head -20 | sed 's/^/  /' || true
  fi
done
echo "test-under-load: $passed of $runs passed under load ($load busy loops) in $((SECONDS - total_start))s"
[[ $passed -eq $runs ]]
