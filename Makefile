# Lookalike: the README's two commands are `make demo` and `make test`.
SHELL := /bin/bash
GO ?= go
BIN := bin/lookalike

.PHONY: setup build test soak demo bench bench-quick bench-1m proto fmt vet

setup:
	@bash scripts/setup.sh

build: setup
	$(GO) build -o $(BIN) ./cmd/lookalike

# Every test: unit, real-model, real-bbolt, real-gRPC and end-to-end, then all of them again
# under the race detector (about 2.5 minutes in all on 2 cores).
test: setup
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 30m ./...
	$(GO) test -race -count=1 -timeout 30m ./...

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

# The million-vector ANN run (build time, memory, QPS and recall at 1M), about an hour on 2
# cores and 16 GiB of memory at its peak; kept out of `make bench`.
bench-1m: build
	@LOOKALIKE_SETUP_BENCH=1 bash scripts/setup.sh
	@SCALE=1m bash benchmarks/run.sh

# Regenerate proto/ with pinned generator versions (protoc from Debian's protobuf-compiler).
PROTOC_GEN_GO := google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_GRPC := google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
proto: setup
	GOBIN=$(CURDIR)/.lookalike/bin $(GO) install $(PROTOC_GEN_GO)
	GOBIN=$(CURDIR)/.lookalike/bin $(GO) install $(PROTOC_GEN_GO_GRPC)
	PATH=$(CURDIR)/.lookalike/bin:$$PATH protoc -I proto \
	  --go_out=proto --go_opt=paths=source_relative \
	  --go-grpc_out=proto --go-grpc_opt=paths=source_relative \
	  proto/lookalike/v1/lookalike.proto

fmt:
	gofmt -w $$(git ls-files '*.go')

vet:
	$(GO) vet ./...
