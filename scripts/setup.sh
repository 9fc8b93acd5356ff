#!/usr/bin/env bash
# setup.sh installs everything Lookalike needs on a fresh Debian machine, idempotently:
# Debian packages, Go modules, and the ONNX Runtime CPU library (from the npm package
# onnxruntime-node, which ships it). Run it as often as you like; a second run does nothing.
#
#   LOOKALIKE_ORT_LIB=/path/libonnxruntime.so.1  use your own runtime instead of downloading one
#   LOOKALIKE_SETUP_BENCH=1                      also install the benchmark peers (hnswlib's headers
#                                                for the native peer annbench compiles, g++,
#                                                Debian's Python hnswlib, faiss)
#   LOOKALIKE_SETUP_BROWSER=1                    also install Debian's chromium, for the browser
#                                                tests of the pages (make test sets it)
#   LOOKALIKE_SETUP_WEAVIATE=1                   also build the pinned weaviate-server into
#                                                .lookalike/bin, for the Weaviate backend and its
#                                                tests (make test sets it; about 5-10 minutes the
#                                                first time on 2 cores, then nothing)
set -euo pipefail
cd "$(dirname "$0")/.."

ORT_VERSION=1.24.1
ORT_DIR=.lookalike/onnxruntime
ORT_LIB="$ORT_DIR/libonnxruntime.so.1"

log() { printf 'setup: %s\n' "$*" >&2; }

# Debian packages. protobuf-compiler regenerates proto/, libjpeg62-turbo-dev lets embed decode
# large JPEGs at reduced scale, dataset-fashion-mnist feeds the index tests and benchmarks.
pkgs=(libjpeg62-turbo-dev dataset-fashion-mnist protobuf-compiler)
if [ "${LOOKALIKE_SETUP_BROWSER:-0}" = 1 ] && ! command -v chromium >/dev/null 2>&1; then
  pkgs+=(chromium fonts-dejavu-core)
fi
if [ "${LOOKALIKE_SETUP_BENCH:-0}" = 1 ]; then
  pkgs+=(libhnswlib-dev g++ python3-hnswlib python3-faiss python3-numpy)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  log "installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# ONNX Runtime: the C library inside onnxruntime-node, fetched without running its scripts.
if [ -n "${LOOKALIKE_ORT_LIB:-}" ]; then
  [ -f "$LOOKALIKE_ORT_LIB" ] || { log "LOOKALIKE_ORT_LIB=$LOOKALIKE_ORT_LIB does not exist"; exit 1; }
  log "using ONNX Runtime from LOOKALIKE_ORT_LIB=$LOOKALIKE_ORT_LIB"
elif [ ! -s "$ORT_LIB" ]; then
  log "fetching ONNX Runtime $ORT_VERSION from npm (onnxruntime-node)"
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "onnxruntime-node@$ORT_VERSION" >/dev/null)
  tar -xzf "$tmp"/onnxruntime-node-*.tgz -C "$tmp" package/bin/napi-v6/linux/x64/libonnxruntime.so.1
  mkdir -p "$ORT_DIR"
  mv "$tmp/package/bin/napi-v6/linux/x64/libonnxruntime.so.1" "$ORT_LIB.tmp"
  mv "$ORT_LIB.tmp" "$ORT_LIB"
fi

go mod download

# Weaviate, for --backend weaviate and its tests: built from the Go module proxy (outside this
# module, so go.mod is untouched) into .lookalike/bin, once per pinned version.
WEAVIATE_VERSION=v1.35.2
if [ "${LOOKALIKE_SETUP_WEAVIATE:-0}" = 1 ] && [ "$(cat .lookalike/bin/weaviate-server.version 2>/dev/null)" != "$WEAVIATE_VERSION" ]; then
  log "building weaviate-server $WEAVIATE_VERSION (minutes, once)"
  mkdir -p .lookalike/bin
  bin="$PWD/.lookalike/bin"
  wtmp=$(mktemp -d)
  (cd "$wtmp" && GOFLAGS= GOBIN="$bin" go install "github.com/weaviate/weaviate/cmd/weaviate-server@$WEAVIATE_VERSION")
  rm -rf "$wtmp"
  echo "$WEAVIATE_VERSION" > .lookalike/bin/weaviate-server.version
fi
log "ready"
