# make test: everything CI runs. make run: the quickstart.
GO      ?= go
# Peers built from Go sources (h2spec, gRPC interop) live here.
export PATH := $(CURDIR)/.tools/bin:$(PATH)
# Packages whose state is shared between goroutines: run under -race.
RACE_PKGS = ./accesslog/... ./network/... ./upstream/... ./proxy/... ./protocol/... ./stats/... ./listener/... ./filter/... ./server/... ./xds/... ./test/... ./tlsconfig/... ./transport/...

.PHONY: all build run test deps fmt vet race unit fuzz bench clean

all: build

build:
	$(GO) build -o bin/strait ./cmd/strait

run:
	$(GO) run ./cmd/strait -c examples/quickstart.yaml

test: deps fmt vet unit race fuzz
	@echo "make test: all green"

deps:
	./scripts/install-test-deps.sh

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

# The end-to-end suite runs once per I/O model.
unit:
	$(GO) test -count=1 ./...
	STRAIT_IO_MODEL=epoll $(GO) test -count=1 ./test/...

# -short skips the 2 GiB streaming test, which has no shared state of its
# own and is slow under the race detector.
race:
	$(GO) test -count=1 -race -short $(RACE_PKGS)
	STRAIT_IO_MODEL=epoll $(GO) test -count=1 -race -short ./test/...

# Fuzz budgets are execution counts, not durations: with -fuzztime=10s,
# Go 1.26's coordinator can report "context deadline exceeded" at the
# deadline with no failing input (golang/go#75804, fixed in Go 1.27). Each
# count is about 10 s of fuzzing on this machine.
fuzz:
	$(GO) test -run='^$$' -fuzz='^FuzzParseRequestHead$$' -fuzztime=200000x -parallel 2 ./protocol/http1/
	$(GO) test -run='^$$' -fuzz='^FuzzParseResponseHead$$' -fuzztime=200000x -parallel 2 ./protocol/http1/
	$(GO) test -run='^$$' -fuzz='^FuzzBodyDecoder$$' -fuzztime=150000x -parallel 2 ./protocol/http1/
	$(GO) test -run='^$$' -fuzz='^FuzzChunkRoundTrip$$' -fuzztime=100000x -parallel 2 ./protocol/http1/
	$(GO) test -run='^$$' -fuzz='^FuzzServerConn$$' -fuzztime=80000x -parallel 2 ./protocol/http1/
	$(GO) test -run='^$$' -fuzz='^FuzzServerConn$$' -fuzztime=150000x -parallel 2 ./protocol/http2/
	$(GO) test -run='^$$' -fuzz='^FuzzH2ToH1$$' -fuzztime=100000x -parallel 2 ./protocol/http2/
	$(GO) test -run='^$$' -fuzz='^FuzzClientConn$$' -fuzztime=60000x -parallel 2 ./protocol/http2/
	$(GO) test -run='^$$' -fuzz='^FuzzRequest$$' -fuzztime=100000x -parallel 2 ./protocol/dubbo/
	$(GO) test -run='^$$' -fuzz='^FuzzCompileAndMatch$$' -fuzztime=60000x -parallel 2 ./router/
	$(GO) test -run='^$$' -fuzz='^FuzzParseBootstrap$$' -fuzztime=60000x -parallel 2 ./config/
	$(GO) test -run='^$$' -fuzz='^FuzzParseClientHello$$' -fuzztime=30000x -parallel 2 ./transport/
	$(GO) test -run='^$$' -fuzz='^FuzzServerHandshake$$' -fuzztime=60000x -parallel 2 ./transport/tlcp/
	$(GO) test -run='^$$' -fuzz='^FuzzRecordOpen$$' -fuzztime=100000x -parallel 2 ./transport/tlcp/
	$(GO) test -run='^$$' -fuzz='^FuzzClientHandshake$$' -fuzztime=30000x -parallel 2 ./transport/tlcp/

bench:
	./bench/run.sh http1

clean:
	rm -rf bin bench/out
