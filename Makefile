# Lookalike: the README's two commands are `make demo` and `make test`.
SHELL := /bin/bash
GO ?= go
BIN := bin/lookalike

.PHONY: setup build test soak demo bench bench-quick bench-1m bench-backends bench-upkeep bench-quality proto fmt vet screenshots

setup:
	@bash scripts/setup.sh

build: setup
	$(GO) build -o $(BIN) ./cmd/lookalike

# Every test: unit, real-model, real-bbolt, real-gRPC, HTTP, headless-browser and end-to-end,
# then all of them again under the race detector (about 11 minutes on 2 cores, warm caches). The
# browser tests need Chromium, which setup installs here; without it they are skipped, except
# under CI=true, where they fail.
test:
	@LOOKALIKE_SETUP_BROWSER=1 LOOKALIKE_SETUP_WEAVIATE=1 bash scripts/setup.sh
	$(GO) vet ./...
	LOOKALIKE_WEAVIATE_REQUIRED=1 $(GO) test -count=1 -timeout 30m ./...
	LOOKALIKE_WEAVIATE_REQUIRED=1 $(GO) test -race -count=1 -timeout 30m ./...

# The crash loop at length: 100 cycles of SIGKILL and restart of a real server on one data
# directory (kills after the Nth acknowledgement, inside snapshot saves, hot backups and
# startups), every acknowledged write checked after each; ends with a summary line (cycles,
# writes checked, lost). LOOKALIKE_CRASH_CYCLES and LOOKALIKE_CRASH_SEED override; SOAK_RACE=1
# runs it under the race detector.
soak: setup
	LOOKALIKE_CRASH_CYCLES=$${LOOKALIKE_CRASH_CYCLES:-100} $(GO) test $${SOAK_RACE:+-race} -count=1 -timeout 3h -v \
	  -run '^TestCrashLoop$$' ./cmd/lookalike/

demo: build
	@bash scripts/demo.sh

bench: build
	@LOOKALIKE_SETUP_BENCH=1 bash scripts/setup.sh
	@bash benchmarks/run.sh

bench-quick: build
	@LOOKALIKE_SETUP_BENCH=1 bash scripts/setup.sh
	@QUICK=1 bash benchmarks/run.sh

# The million-vector runs, kept out of `make bench`: the ANN index (build time, memory, QPS
# and recall at 1M; about an hour on 2 cores and 16 GiB of memory at its peak) and the
# duplicate scan at 100,000 and 1,000,000 photos (results/photos-1m.md; about half an hour).
bench-1m: build
	@LOOKALIKE_SETUP_BENCH=1 bash scripts/setup.sh
	@SCALE=1m bash benchmarks/run.sh

# The backends side by side at 100,000 photos: embedded, Weaviate on one node and on three
# (about 10 minutes on 2 cores; apart from make bench, which must stay under 20 minutes).
bench-backends: build
	@LOOKALIKE_SETUP_WEAVIATE=1 bash scripts/setup.sh
	$(GO) run ./benchmarks/cmd/backendbench -photos 100000

# Retrieval quality on the shared labelled sets for each model spec (the default embedding,
# R-MAC of one view, GeM and R-MAC of four views), each beside the projection adapt learns,
# in one run (results/quality.md; about 10 minutes on 2 cores; apart from make bench).
bench-quality: build
	$(GO) run ./benchmarks/cmd/qualitybench -specs "default=,rmac=docs/specs/mobilenetv2-int8-rmac.json,gem-4views=docs/specs/mobilenetv2-int8-gem-4views.json,rmac-4views=docs/specs/mobilenetv2-int8-rmac-4views.json"

# Write latency while the graph's upkeep runs (snapshot saves, a compaction after a bulk
# replace) against none, at 100,000 photos (about 10 minutes on 2 cores; apart from make bench).
bench-upkeep: build
	@LOOKALIKE_SETUP_BENCH=1 bash scripts/setup.sh
	$(GO) run ./benchmarks/cmd/upkeepbench -photos 100000

# Regenerate proto/ with pinned generator versions (protoc from Debian's protobuf-compiler):
# messages and the gRPC service, the HTTP/JSON gateway and the OpenAPI description, both from
# the HTTP rules in lookalike_http.yaml (no googleapis annotations needed).
PROTOC_GEN_GO := google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_GRPC := google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
GRPC_GATEWAY_VERSION := v2.33.0
PROTOC_GEN_GATEWAY := github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway@$(GRPC_GATEWAY_VERSION)
PROTOC_GEN_OPENAPI := github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2@$(GRPC_GATEWAY_VERSION)
PROTO_BIN ?= $(CURDIR)/.lookalike/bin
PROTO_DIR := proto/lookalike/v1
proto: setup
	GOBIN=$(PROTO_BIN) $(GO) install $(PROTOC_GEN_GO)
	GOBIN=$(PROTO_BIN) $(GO) install $(PROTOC_GEN_GO_GRPC)
	GOBIN=$(PROTO_BIN) $(GO) install $(PROTOC_GEN_GATEWAY)
	GOBIN=$(PROTO_BIN) $(GO) install $(PROTOC_GEN_OPENAPI)
	PATH=$(PROTO_BIN):$$PATH protoc -I proto \
	  --go_out=proto --go_opt=paths=source_relative \
	  --go-grpc_out=proto --go-grpc_opt=paths=source_relative \
	  --grpc-gateway_out=proto --grpc-gateway_opt=paths=source_relative \
	  --grpc-gateway_opt=grpc_api_configuration=$(PROTO_DIR)/lookalike_http.yaml \
	  --grpc-gateway_opt=standalone=false \
	  --openapiv2_out=proto \
	  --openapiv2_opt=grpc_api_configuration=$(PROTO_DIR)/lookalike_http.yaml \
	  --openapiv2_opt=openapi_configuration=$(PROTO_DIR)/lookalike_openapi.yaml \
	  --openapiv2_opt=json_names_for_fields=false \
	  --openapiv2_opt=preserve_rpc_order=true \
	  $(PROTO_DIR)/lookalike.proto

# The README's screenshots of the pages (docs/*.png): the demo, then the browser test's
# TestScreenshots against its server before it stops.
screenshots: build
	@LOOKALIKE_SETUP_BROWSER=1 bash scripts/setup.sh
	@SCREENSHOTS=$(CURDIR)/docs bash scripts/demo.sh

fmt:
	gofmt -w $$(git ls-files '*.go')

vet:
	$(GO) vet ./...
