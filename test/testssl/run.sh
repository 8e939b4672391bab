#!/usr/bin/env bash
# test/testssl/run.sh: testssl.sh (Debian's package) against a Strait TLS
# listener with default TLS settings (only certificates and ALPN given),
# as issue 12 asks. It takes a few minutes, so it runs outside make test;
# its last output is test/testssl/last-run.txt. Exit status 1 when
# testssl reports a "NOT ok" finding, or SSLv2/SSLv3/TLS 1.0/TLS 1.1 is
# offered.
#
# The certificate is ECDSA P-256 from a throwaway CA that testssl is told
# to trust (--add-ca); it names OCSP and CRL URIs (never fetched: testssl
# does not phone out) because testssl flags a certificate without either.
# Everything listens on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=test/testssl/last-run.txt

if ! command -v testssl >/dev/null; then
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq testssl.sh >/dev/null
fi

dir=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
go build -o "$dir/strait" ./cmd/strait

openssl ecparam -name prime256v1 -genkey -noout -out "$dir/ca.key"
openssl req -x509 -new -key "$dir/ca.key" -subj "/CN=strait testssl CA" -days 30 -out "$dir/ca.pem" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl ecparam -name prime256v1 -genkey -noout -out "$dir/server.key"
openssl req -new -key "$dir/server.key" -subj "/CN=localhost" -out "$dir/server.csr" 2>/dev/null
cat > "$dir/ext.cnf" <<EXT
subjectAltName=DNS:localhost,IP:127.0.0.1
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
authorityInfoAccess=OCSP;URI:http://127.0.0.1:9/ocsp
crlDistributionPoints=URI:http://127.0.0.1:9/ca.crl
EXT
openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial -days 30 \
  -extfile "$dir/ext.cnf" -out "$dir/server.pem" 2>/dev/null
cat "$dir/server.pem" "$dir/ca.pem" > "$dir/chain.pem"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$dir/strait.yaml" <<YAML
static_resources:
  listeners:
  - name: tls
    address: { socket_address: { address: 127.0.0.1, port_value: $port } }
    metadata: { filter_metadata: { strait: { io_model: netpoll } } }
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: [h2, http/1.1]
            tls_certificates: [ { certificate_chain: { filename: $dir/chain.pem }, private_key: { filename: $dir/server.key } } ]
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: tls
          route_config: { virtual_hosts: [ { name: all, domains: ["*"], routes: [ { match: { prefix: "/" }, direct_response: { status: 200, body: { inline_string: ok } } } ] } ] }
          http_filters: [ { name: envoy.filters.http.router, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } } ]
YAML
"$dir/strait" -c "$dir/strait.yaml" -l warning &
pid=$!
for _ in $(seq 50); do
  (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break
  sleep 0.1
done

{
  echo "# testssl.sh $(dpkg-query -W -f='${Version}' testssl.sh 2>/dev/null || echo '?') against Strait $(git rev-parse --short HEAD), $(date -u +%Y-%m-%d)"
  timeout 900 testssl --quiet --color 0 --warnings batch --add-ca "$dir/ca.pem" --ip 127.0.0.1 "https://localhost:$port" || true
} > "$out" 2>&1

status=0
if grep -n "NOT ok" "$out"; then status=1; fi
for p in "SSLv2 " "SSLv3 " "TLS 1 " "TLS 1.1 "; do
  if grep -E "^ *$p" "$out" | grep -vq "not offered"; then
    echo "$p offered"; status=1
  fi
done
echo "testssl output: $out (status $status)"
exit $status
