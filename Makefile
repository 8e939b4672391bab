# make test: everything CI runs. make run: the quickstart.
GO      ?= go
FUZZTIME ?= 10s
# Packages whose state is shared between goroutines: run under -race.
RACE_PKGS = ./network/... ./upstream/... ./proxy/... ./protocol/... ./stats/... ./listener/... ./filter/... ./server/... ./test/...

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

fuzz:
	$(GO) test -run='^$$' -fuzz='^FuzzParseRequestHead$$' -fuzztime=$(FUZZTIME) -parallel 2 ./protocol/http1/
	$(GO) test -run='^$$' -fuzz='^FuzzParseResponseHead$$' -fuzztime=$(FUZZTIME) -parallel 2 ./protocol/http1/
	$(GO) test -run='^$$' -fuzz='^FuzzBodyDecoder$$' -fuzztime=$(FUZZTIME) -parallel 2 ./protocol/http1/
	$(GO) test -run='^$$' -fuzz='^FuzzChunkRoundTrip$$' -fuzztime=$(FUZZTIME) -parallel 2 ./protocol/http1/
	$(GO) test -run='^$$' -fuzz='^FuzzServerConn$$' -fuzztime=$(FUZZTIME) -parallel 2 ./protocol/http1/

bench:
	./bench/run.sh http1

clean:
	rm -rf bin bench/out
