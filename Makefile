# make test: everything CI runs. make run: the quickstart.
GO      ?= go
# Peers built from Go sources (h2spec, gRPC interop) live here.
export PATH := $(CURDIR)/.tools/bin:$(PATH)
# Packages whose state is shared between goroutines: run under -race.
RACE_PKGS = ./accesslog/... ./network/... ./upstream/... ./proxy/... ./protocol/... ./stats/... ./listener/... ./filter/... ./server/... ./xds/... ./test/... ./tlsconfig/... ./transport/...

.PHONY: all build run test deps fmt vet race unit fuzz bench clean release docker-check

# The version stamped into binaries (strait --version, /server_info).
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# Where make release writes.
DIST ?= dist
# Reproducible release flags: static, no paths, no build id.
RELEASE_FLAGS = -trimpath -ldflags "-s -w -buildid= -X main.version=$(VERSION)"


all: build

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o bin/strait ./cmd/strait

# make release: static linux/amd64 and linux/arm64 binaries in dist/,
# with SHA256SUMS; the same source and Go version give the same bytes.
release:
	@mkdir -p $(DIST)
	for arch in amd64 arm64; do \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build $(RELEASE_FLAGS) -o $(DIST)/strait-$(VERSION)-linux-$$arch ./cmd/strait || exit 1; \
	done
	cd $(DIST) && sha256sum strait-$(VERSION)-linux-* > SHA256SUMS && cat SHA256SUMS

# make docker-check: build the image and check it serves (skips without
# a Docker daemon; not part of make test).
docker-check:
	./scripts/docker-check.sh $(VERSION)

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
	$(GO) test -run='^$$' -fuzz='^FuzzPathNormalization$$' -fuzztime=100000x -parallel 2 ./proxy/
	$(GO) test -run='^$$' -fuzz='^FuzzParseBootstrap$$' -fuzztime=60000x -parallel 2 ./config/
	$(GO) test -run='^$$' -fuzz='^FuzzParsePreamble$$' -fuzztime=100000x -parallel 2 ./internal/istiomd/
	$(GO) test -run='^$$' -fuzz='^FuzzParseClientHello$$' -fuzztime=30000x -parallel 2 ./transport/
	$(GO) test -run='^$$' -fuzz='^FuzzServerHandshake$$' -fuzztime=60000x -parallel 2 ./transport/tlcp/
	$(GO) test -run='^$$' -fuzz='^FuzzRecordOpen$$' -fuzztime=100000x -parallel 2 ./transport/tlcp/
	$(GO) test -run='^$$' -fuzz='^FuzzClientHandshake$$' -fuzztime=30000x -parallel 2 ./transport/tlcp/
	$(GO) test -run='^$$' -fuzz='^FuzzParseParent$$' -fuzztime=50000x -parallel 2 ./tracing/opentelemetry/
	$(GO) test -run='^$$' -fuzz='^FuzzExtract$$' -fuzztime=50000x -parallel 2 ./tracing/zipkin/

bench:
	./bench/run.sh http1

clean:
	rm -rf bin bench/out dist
