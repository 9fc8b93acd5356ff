#!/usr/bin/env bash
# demo.sh: start a Lookalike server on a temporary data directory, ingest the shared grocery
# catalogue, run a few example queries and print them, then say how to query the server
# yourself. `make demo` runs it after `make build`.
#
#   KEEP=1 bash scripts/demo.sh   leave the server running afterwards (it says how to stop it)
#   SCREENSHOTS=DIR               take the pages' screenshots into DIR before the end (make screenshots)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
BIN="$root/bin/lookalike"
[ -x "$BIN" ] || { echo "demo: $BIN is missing: run 'make build' (or 'make demo')" >&2; exit 1; }
photos="$(cd "$root/.." && pwd)/shared/datasets/grocery/images"
[ -d "$photos" ] || { echo "demo: the shared grocery photos are not at $photos" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/lookalike-demo.XXXXXX")
server_pid=""
cleanup() {
  status=$?
  if [ "${KEEP:-0}" = 1 ] && [ $status = 0 ]; then
    return
  fi
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  if [ $status != 0 ] && [ -f "$work/serve.log" ]; then
    echo "demo: failed; last server log lines:" >&2
    tail -n 20 "$work/serve.log" >&2
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold="" plain=""; fi
step() { printf '\n%s== %s%s\n$ %s\n' "$bold" "$1" "$plain" "$2"; }
show() { local title=$1; shift; step "$title" "lookalike $*"; "$BIN" "$@"; }

# 1. A server on free loopback ports (gRPC, the HTTP API and pages, metrics); --addr-file and
#    --http-addr-file tell us which ones it got.
step "Start the server" "lookalike serve --data $work/data --listen 127.0.0.1:0 --http 127.0.0.1:0 --metrics 127.0.0.1:0"
"$BIN" serve --data "$work/data" --listen 127.0.0.1:0 --addr-file "$work/addr" \
  --http 127.0.0.1:0 --http-addr-file "$work/http" --metrics 127.0.0.1:0 >"$work/serve.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 600); do
  [ -s "$work/addr" ] && [ -s "$work/http" ] && break
  kill -0 "$server_pid" 2>/dev/null || { echo "demo: the server exited" >&2; exit 1; }
  sleep 0.1
done
[ -s "$work/addr" ] && [ -s "$work/http" ] || { echo "demo: the server did not start listening" >&2; exit 1; }
LOOKALIKE_SERVER=$(cat "$work/addr")
export LOOKALIKE_SERVER
web="http://$(cat "$work/http")"
"$BIN" health --wait 120s >/dev/null
echo "serving gRPC on $LOOKALIKE_SERVER and HTTP on $web (pid $server_pid, data in $work/data)"

# 2. The catalogue: the 31 grocery products, each with its catalogue ("iconic") photo and its
#    in-store training photos, category = coarse kind (Milk, Juice...), title = the product.
show "Write a manifest for the grocery catalogue (one product, several photos)" manifest --dataset grocery --products --split iconic,train "$work/grocery.csv"
head -n 3 "$work/grocery.csv"
show "Ingest it (the photos are embedded on the server)" ingest --failures "$work/failures.csv" "$work/grocery.csv"
show "Ingest again: nothing is re-embedded" ingest --quiet --failures "$work/failures.csv" "$work/grocery.csv"
show "What the server holds" stats

# 3. Queries.
street="$photos/val__Alpro-Blueberry-Soyghurt_004.jpg"
show "A customer's street photo of Alpro Blueberry Soyghurt -> the matching products" search --k 5 "$street"
show "Only the same kind of product (filter by category)" search --k 3 --category Juice "$street"
show "More like this: all of a product's photos search, never itself" similar --k 5 Oatly-Oat-Milk
show "The same, with variety among the results" similar --k 5 --diversity 0.5 Oatly-Oat-Milk
show "A product and its photos (kept copies included)" get Oatly-Oat-Milk
step "A kept photo, as the model saw it" "lookalike photo --out oatly.jpg Oatly-Oat-Milk iconic__Oatly-Oat-Milk_Iconic"
"$BIN" photo --out "$work/oatly.jpg" Oatly-Oat-Milk iconic__Oatly-Oat-Milk_Iconic && ls -l "$work/oatly.jpg" | awk '{print $5 " bytes"}'

step "A seller re-uploads a catalogue photo, re-compressed" "lookalike recompress --quality 85 iconic__Arla-Sour-Milk_Iconic.jpg reupload.jpg"
"$BIN" recompress --quality 85 "$photos/iconic__Arla-Sour-Milk_Iconic.jpg" "$work/reupload.jpg"
show "Duplicate check: is it already in the catalogue, and in which tier?" check "$work/reupload.jpg"
show "Duplicate check of the street photo (a new photo: at most a look-alike)" check "$street"
show "Near-duplicate clusters with their tiers, and an HTML page to review them" dedup --limit 3 --html "$work/duplicates.html"
show "A reviewer says two look-alike cartons are different products" dedup resolve --different --by demo Arla-Medium-Fat-Milk Arla-Lactose-Medium-Fat-Milk
show "Measure the duplicate thresholds on this catalogue" calibrate --sample 40

# 4. The same service over HTTP/JSON (the pages use it too).
step "Search by photo over HTTP: the photo as a multipart upload" "curl -F image=@val__Alpro-Blueberry-Soyghurt_004.jpg -F k=3 $web/v1/search/image"
curl -sS -F "image=@$street" -F k=3 "$web/v1/search/image" >"$work/search.json"
if command -v python3 >/dev/null; then
  python3 -c 'import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    print("%.3f  %s  (photo %s)" % (r["score"], r["product"]["id"], r["photo_id"]))' "$work/search.json"
else
  head -c 400 "$work/search.json"; echo " ..."
fi
step "A kept photo over HTTP, with its ETag" "curl -I $web/v1/products/Oatly-Oat-Milk/photos/iconic__Oatly-Oat-Milk_Iconic"
curl -sS -o /dev/null -D - "$web/v1/products/Oatly-Oat-Milk/photos/iconic__Oatly-Oat-Milk_Iconic" | grep -iE '^(HTTP|content-type|etag|cache-control)'

# 5. How to go on from here.
cat <<MSG

== The pages (served by the server itself)
  storefront        $web/
  duplicate review  $web/duplicates
  status            $web/status
  OpenAPI           $web/v1/openapi.json

With curl (the HTTP/JSON API, one route per RPC):
  curl -F image=@$street -F k=5 -F filter.categories=Soyghurt $web/v1/search/image
  curl '$web/v1/products/Oatly-Oat-Milk/similar?k=5&diversity=0.3'
  curl '$web/v1/products?page_size=5'
  curl $web/v1/duplicates
  curl -X POST -H 'Content-Type: application/json' -d '{"ids": ["Arla-Medium-Fat-Milk", "Arla-Lactose-Medium-Fat-Milk"], "verdict": "different", "by": "me"}' $web/v1/decisions

== Query the server yourself
With the lookalike command (it reads LOOKALIKE_SERVER, or pass --server):
  export LOOKALIKE_SERVER=$LOOKALIKE_SERVER
  $BIN search --k 10 $street
  $BIN similar --json Arla-Standard-Milk
  $BIN get Arla-Standard-Milk
  $BIN dedup --threshold 0.95 --html duplicates.html
  $BIN --help

With grpcurl (the server has gRPC reflection on):
  grpcurl -plaintext $LOOKALIKE_SERVER list lookalike.v1.Lookalike
  grpcurl -plaintext $LOOKALIKE_SERVER lookalike.v1.Lookalike/Stats
  grpcurl -plaintext -d '{"id": "Arla-Standard-Milk", "k": 5}' $LOOKALIKE_SERVER lookalike.v1.Lookalike/SearchById
  grpcurl -plaintext -d "{\"image\": \"\$(base64 -w0 $street)\", \"k\": 5}" $LOOKALIKE_SERVER lookalike.v1.Lookalike/SearchByImage
  grpcurl -plaintext -d '{"service": "lookalike.v1.Lookalike"}' $LOOKALIKE_SERVER grpc.health.v1.Health/Check
MSG

if [ -n "${SCREENSHOTS:-}" ]; then
  step "Screenshots of the pages" "go test -run TestScreenshots ./web"
  LOOKALIKE_SCREENSHOTS_URL="$web/" LOOKALIKE_SCREENSHOTS="$SCREENSHOTS" go test -count=1 -run 'TestScreenshots$' ./web
  ls -l "$SCREENSHOTS"/*.png
fi

if [ "${KEEP:-0}" = 1 ]; then
  cat <<MSG

The server is still running (KEEP=1): pid $server_pid, data in $work/data, log $work/serve.log,
static review page $work/duplicates.html.
Stop it and clean up with:
  kill $server_pid && rm -rf $work

Storefront: $web/
MSG
else
  echo
  echo "Stopping the server and removing $work (run with KEEP=1 to keep it running)."
fi
