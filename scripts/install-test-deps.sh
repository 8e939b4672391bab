#!/usr/bin/env bash
# Installs what the tests need on a fresh machine: Go modules, and the
# external peers the end-to-end tests drive (curl, ab, wrk, h2load, h2spec,
# chromium for the admin page).
# Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

go mod download

need=()
command -v curl >/dev/null || need+=(curl)
command -v ab   >/dev/null || need+=(apache2-utils)
command -v wrk  >/dev/null || need+=(wrk)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v chromium >/dev/null || need+=(chromium) # the admin page's browser test
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
  echo "installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# Go-built peers, pinned, into .tools/bin (the Makefile puts it on PATH).
mkdir -p .tools/bin
export GOBIN="$PWD/.tools/bin"
[ -x .tools/bin/h2spec ] || go install github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible
if [ ! -x .tools/bin/grpc-interop-client ] || [ ! -x .tools/bin/grpc-interop-server ]; then
  tmp=$(mktemp -d)
  GOBIN="$tmp" go install google.golang.org/grpc/interop/client@v1.85.0 google.golang.org/grpc/interop/server@v1.85.0
  mv "$tmp/client" .tools/bin/grpc-interop-client
  mv "$tmp/server" .tools/bin/grpc-interop-server
  rm -rf "$tmp"
fi
# The TLCP interop peer (tjfoc/gmsm's gmtls), from its own module so that
# tjfoc never enters Strait's; rebuilt when its source changes.
if [ ! -x .tools/bin/tlcp-peer ] || [ test/tlcpinterop/main.go -nt .tools/bin/tlcp-peer ] || [ test/tlcpinterop/go.mod -nt .tools/bin/tlcp-peer ]; then
  (cd test/tlcpinterop && go build -o ../../.tools/bin/tlcp-peer .)
fi
# The Dubbo peer: a provider and consumer on dubbo-go v3.3.2 (a few hundred
# modules, kept in their own module); rebuilt when its source changes.
if [ ! -x .tools/bin/dubbo-peer ] || [ -n "$(find test/peers/dubbo -newer .tools/bin/dubbo-peer -type f)" ]; then
  (cd test/peers/dubbo && go build -o ../../../.tools/bin/dubbo-peer .)
fi
# Istio's pilot, in-process with fake Kubernetes clients (istio.io/istio at
# the one commit served here, in its own module: about 8 minutes to build
# on 2 cores the first time); rebuilt when its source changes.
if [ ! -x .tools/bin/istio-pilot-peer ] || [ -n "$(find test/peers/istio -newer .tools/bin/istio-pilot-peer -type f)" ]; then
  (cd test/peers/istio && go build -o ../../../.tools/bin/istio-pilot-peer .)
fi
