#!/usr/bin/env bash
# Called by bench/run.sh tls WORKDIR ROUNDS SECONDS (strait and the origin
# built there). Strait (netpoll and epoll) and nginx (1 worker, OpenSSL)
# terminate TLS with the same ECDSA P-256 certificate and equivalent
# settings (TLS 1.2, ECDHE-ECDSA-AES128-GCM-SHA256, tickets on) in front
# of the same loopback origins, interleaved round by round:
#   ka     HTTP/1.1 over kept-alive TLS, wrk -c50, 128-byte answers
#   h2     h2 over TLS (ALPN), h2load -c10 -m10, 128-byte answers
#   full   full handshakes: bench/tlsload -c8 (a new connection, one
#          request, close)
#   resume resumed handshakes (session tickets), bench/tlsload -c8 -resume
#   bulk   1 MiB answers, wrk -c4 (throughput in MiB/s)
#   full-rsa, resume-rsa  full and resumed handshakes as above with an
#          RSA-2048 certificate (ECDHE-RSA-AES128-GCM-SHA256)
# and, with bench/tlsload as the client for TLS and TLCP alike (nginx
# speaks no TLCP; Strait's AES-128-GCM is the peer of its SM4 rows):
#   bulk-aes     1 MiB answers over TLS 1.2 AES-128-GCM, -c4
#   bulk-sm4gcm  1 MiB answers over TLCP ECC_SM4_GCM_SM3, -c4
#   bulk-sm4cbc  1 MiB answers over TLCP ECC_SM4_CBC_SM3, -c4
#   tlcp-full    full TLCP handshakes (ECC_SM4_GCM_SM3), -c8
#   tlcp-resume  resumed TLCP handshakes (session IDs), -c8
# For each: the rate, and the proxy's CPU (user+system from /proc) per
# request, handshake or MiB; medians per proxy, then Strait's ratios to
# nginx. nginx buffers answers in memory (16 x 64 KiB: a 1 MiB answer fits).
# Everything listens on 127.0.0.1; every run is bounded in time.
set -euo pipefail
work=$1; rounds=$2; secs=$3
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/bench/out"; mkdir -p "$out"
go build -o "$work/tlsload" "$root/bench/tlsload"

. "$(dirname "$0")/lib.sh"
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

openssl ecparam -name prime256v1 -genkey -noout -out "$work/key.pem"
openssl req -x509 -new -key "$work/key.pem" -subj "/CN=localhost" -days 2 -out "$work/cert.pem" -addext "subjectAltName=DNS:localhost" 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/rsa-key.pem" -subj "/CN=localhost" -days 2 -out "$work/rsa.pem" -addext "subjectAltName=DNS:localhost" 2>/dev/null
"$work/tlsload" -gen-tlcp "$work"

small=$(freeport); big=$(freeport)
"$work/upstream" -addr 127.0.0.1:$small -size 128 & waitport $small
"$work/upstream" -addr 127.0.0.1:$big -size 1048576 & waitport $big

p_strait=$(freeport); p_epoll=$(freeport); p_nginx=$(freeport)
g_strait=$(freeport); g_epoll=$(freeport); b_strait=$(freeport); b_epoll=$(freeport)
r_strait=$(freeport); r_epoll=$(freeport); r_nginx=$(freeport)
# tlcp_listener NAME PORT SUITE: a TLCP listener in front of the same
# routes as the TLS listener (hcm).
tlcp_listener() { cat <<YAML
  - name: $1
    address: { socket_address: { address: 127.0.0.1, port_value: $2 } }
    filter_chains:
    - transport_socket:
        name: strait.transport_sockets.tlcp
        typed_config:
          "@type": type.googleapis.com/xds.type.v3.TypedStruct
          type_url: type.googleapis.com/strait.extensions.transport_sockets.tlcp.v1.Tlcp
          value:
            sign_certificate: { certificate_chain: { filename: $work/sign.pem }, private_key: { filename: $work/sign-key.pem } }
            encryption_certificate: { certificate_chain: { filename: $work/enc.pem }, private_key: { filename: $work/enc-key.pem } }
            cipher_suites: [$3]
YAML
hcm; }
hcm() { cat <<YAML
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          generate_request_id: false
          route_config:
            virtual_hosts: [ { name: all, domains: ["*"], routes: [ { match: { prefix: "/big" }, route: { cluster: big } }, { match: { prefix: "/" }, route: { cluster: small } } ] } ]
          http_filters: [ { name: envoy.filters.http.router, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } } ]
YAML
}
cat > "$work/strait-tls.yaml" <<YAML
static_resources:
  listeners:
$(tlcp_listener tlcp-gcm TLCP_GCM_PORT ECC_SM4_GCM_SM3)
$(tlcp_listener tlcp-cbc TLCP_CBC_PORT ECC_SM4_CBC_SM3)
  - name: tls-rsa
    address: { socket_address: { address: 127.0.0.1, port_value: TLS_RSA_PORT } }
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: [h2, http/1.1]
            tls_params: { tls_maximum_protocol_version: TLSv1_2, cipher_suites: [ECDHE-RSA-AES128-GCM-SHA256] }
            tls_certificates: [ { certificate_chain: { filename: $work/rsa.pem }, private_key: { filename: $work/rsa-key.pem } } ]
$(hcm)
  - name: tls
    address: { socket_address: { address: 127.0.0.1, port_value: $p_strait } }
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: [h2, http/1.1]
            tls_params: { tls_maximum_protocol_version: TLSv1_2, cipher_suites: [ECDHE-ECDSA-AES128-GCM-SHA256] }
            tls_certificates: [ { certificate_chain: { filename: $work/cert.pem }, private_key: { filename: $work/key.pem } } ]
$(hcm)
  clusters:
  - name: small
    connect_timeout: 1s
    circuit_breakers: { thresholds: [ { max_connections: 10000, max_pending_requests: 10000, max_requests: 10000 } ] }
    load_assignment: { cluster_name: small, endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $small } } } } ] } ] }
  - name: big
    connect_timeout: 1s
    circuit_breakers: { thresholds: [ { max_connections: 10000, max_pending_requests: 10000, max_requests: 10000 } ] }
    load_assignment: { cluster_name: big, endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $big } } } } ] } ] }
YAML
sed "s/TLCP_GCM_PORT/$g_epoll/; s/TLCP_CBC_PORT/$b_epoll/; s/TLS_RSA_PORT/$r_epoll/; s/port_value: $p_strait }/port_value: $p_epoll }/" "$work/strait-tls.yaml" > "$work/strait-tls-epoll.yaml"
sed -i "s/TLCP_GCM_PORT/$g_strait/; s/TLCP_CBC_PORT/$b_strait/; s/TLS_RSA_PORT/$r_strait/" "$work/strait-tls.yaml"
"$work/strait" -c "$work/strait-tls.yaml" --log-level error & pid_strait=$!
"$work/strait" -c "$work/strait-tls-epoll.yaml" --io-model epoll --log-level error & pid_epoll=$!

mkdir -p "$work/nginx-tls"
cat > "$work/nginx-tls/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $work/nginx-tls/pid; error_log $work/nginx-tls/error.log error;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx-tls; proxy_temp_path $work/nginx-tls; fastcgi_temp_path $work/nginx-tls; uwsgi_temp_path $work/nginx-tls; scgi_temp_path $work/nginx-tls;
  upstream small { server 127.0.0.1:$small; keepalive 64; }
  upstream big { server 127.0.0.1:$big; keepalive 64; }
  keepalive_requests 100000000; keepalive_timeout 300s;
  proxy_buffers 16 64k; proxy_buffer_size 64k; proxy_max_temp_file_size 0;
  server { listen 127.0.0.1:$p_nginx ssl http2;
    ssl_certificate $work/cert.pem; ssl_certificate_key $work/key.pem;
    ssl_protocols TLSv1.2; ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256; ssl_session_tickets on; ssl_session_cache off;
    location /big { proxy_pass http://big; proxy_http_version 1.1; proxy_set_header Connection ""; }
    location / { proxy_pass http://small; proxy_http_version 1.1; proxy_set_header Connection ""; } }
  server { listen 127.0.0.1:$r_nginx ssl;
    ssl_certificate $work/rsa.pem; ssl_certificate_key $work/rsa-key.pem;
    ssl_protocols TLSv1.2; ssl_ciphers ECDHE-RSA-AES128-GCM-SHA256; ssl_session_tickets on; ssl_session_cache off;
    location / { proxy_pass http://small; proxy_http_version 1.1; proxy_set_header Connection ""; } }
}
CONF
nginx -c "$work/nginx-tls/nginx.conf" -p "$work/nginx-tls" & pid_nginx=$!
waitport $p_strait; waitport $p_epoll; waitport $p_nginx
waitport $g_strait; waitport $g_epoll; waitport $b_strait; waitport $b_epoll
waitport $r_strait; waitport $r_epoll; waitport $r_nginx

pids_of() { case $1 in strait) echo $pid_strait;; strait-epoll) echo $pid_epoll;; nginx) echo $pid_nginx $(pgrep -P $pid_nginx);; esac; }
port_of() { case $1 in strait) echo $p_strait;; strait-epoll) echo $p_epoll;; nginx) echo $p_nginx;; esac; }
rsa_port() { case $1 in strait) echo $r_strait;; strait-epoll) echo $r_epoll;; nginx) echo $r_nginx;; esac; }
# tlcp_port NAME gcm|cbc
tlcp_port() { case $1-$2 in strait-gcm) echo $g_strait;; strait-cbc) echo $b_strait;; strait-epoll-gcm) echo $g_epoll;; strait-epoll-cbc) echo $b_epoll;; esac; }

# run CASE NAME: prints "rate units" (units: what the CPU is divided by).
run() {
  local port; port=$(port_of $2)
  case $1 in
    ka) o=$(wrk -t1 -c50 -d${secs}s https://127.0.0.1:$port/)
        echo "$(echo "$o" | awk '/Requests\/sec/{print $2}') $(echo "$o" | awk '/requests in/{print $1}')"
        echo "$o" | grep -E "Non-2xx|Socket errors" >&2 || true ;;
    h2) o=$(h2load -t1 -c10 -m10 -D $secs https://127.0.0.1:$port/ 2>&1)
        echo "$(echo "$o" | awk '/^finished in/{print $4}') $(echo "$o" | awk '/^requests:/{print $8}')" ;;
    full|resume|full-rsa|resume-rsa) flag=$(case $1 in resume*) echo -resume;; esac)
        case $1 in *-rsa) port=$(rsa_port $2);; esac
        o=$("$work/tlsload" -addr 127.0.0.1:$port -c 8 -d ${secs}s -tls12 $flag)
        echo "$(echo "$o" | awk '{print $4}') $(echo "$o" | awk '{print $2}')" ;;
    bulk) o=$(wrk -t1 -c4 -d${secs}s https://127.0.0.1:$port/big)
        mib=$(echo "$o" | awk '/requests in/{print $1}')
        echo "$(awk -v n=$mib -v s=$secs 'BEGIN{printf "%.0f", n/s}') $mib" ;;
    bulk-aes|bulk-sm4gcm|bulk-sm4cbc)
        case $1 in
          bulk-aes) o=$("$work/tlsload" -addr 127.0.0.1:$port -c 4 -d ${secs}s -tls12 -bulk /big) ;;
          bulk-sm4gcm) o=$("$work/tlsload" -addr 127.0.0.1:$(tlcp_port $2 gcm) -c 4 -d ${secs}s -tlcp -suite ECC_SM4_GCM_SM3 -bulk /big) ;;
          bulk-sm4cbc) o=$("$work/tlsload" -addr 127.0.0.1:$(tlcp_port $2 cbc) -c 4 -d ${secs}s -tlcp -suite ECC_SM4_CBC_SM3 -bulk /big) ;;
        esac
        echo "$(echo "$o" | awk '{print $4}') $(echo "$o" | awk '{print $6}')" ;;
    tlcp-full|tlcp-resume) flag=$([ $1 = tlcp-resume ] && echo -resume || true)
        o=$("$work/tlsload" -addr 127.0.0.1:$(tlcp_port $2 gcm) -c 8 -d ${secs}s -tlcp -suite ECC_SM4_GCM_SM3 $flag)
        echo "$(echo "$o" | awk '{print $4}') $(echo "$o" | awk '{print $2}')" ;;
  esac
}

proxies="strait strait-epoll nginx"
cases=${TLS_CASES:-ka h2 full resume full-rsa resume-rsa bulk bulk-aes bulk-sm4gcm bulk-sm4cbc tlcp-full tlcp-resume}
for name in $proxies; do for c in ka bulk; do secs_save=$secs; secs=1; run $c $name >/dev/null; secs=$secs_save; done; done
results="$work/tls.tsv"; : > "$results"
for r in $(seq "$rounds"); do
  for c in $cases; do
    for name in $proxies; do
      case $c in bulk-sm4*|tlcp-*) [ $name = nginx ] && continue ;; esac
      pids=$(pids_of $name)
      c0=$(cpu_ticks $pids); set -- $(run $c $name); c1=$(cpu_ticks $pids)
      cpu=$(awk -v d=$((c1 - c0)) -v hz=$hz -v n=$2 'BEGIN{printf "%.1f", d/hz*1e6/n}')
      printf "%s\t%s\t%s\t%s\t%s\n" "$r" "$c" "$name" "$1" "$cpu" | tee -a "$results"
    done
  done
done

echo
echo "mode=tls rounds=$rounds secs=$secs date=$(date -u +%F) cpus=$(nproc) go=$(go version | awk '{print $3}') nginx=$(nginx -v 2>&1 | sed 's/.*\///') openssl=$(openssl version | awk '{print $2}')"
awk -F'\t' '
function median(arr, n,   i, j, t) { for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (arr[j] < arr[i]) { t = arr[i]; arr[i] = arr[j]; arr[j] = t }
  return (n % 2) ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2 }
{ k = ++n[$2, $3]; rate[$2, $3, k] = $4; cpu[$2, $3, k] = $5; seen[$2] = 1 }
END {
  nc = split("ka h2 full resume full-rsa resume-rsa bulk bulk-aes bulk-sm4gcm bulk-sm4cbc tlcp-full tlcp-resume", cs, " "); split("strait strait-epoll nginx", ps, " ")
  unit["ka"] = "req"; unit["h2"] = "req"; unit["full"] = "handshake"; unit["resume"] = "handshake"; unit["bulk"] = "MiB"
  unit["full-rsa"] = "handshake"; unit["resume-rsa"] = "handshake"
  unit["bulk-aes"] = "MiB"; unit["bulk-sm4gcm"] = "MiB"; unit["bulk-sm4cbc"] = "MiB"; unit["tlcp-full"] = "handshake"; unit["tlcp-resume"] = "handshake"
  printf "%-12s %-13s %12s %16s\n", "case", "proxy", "rate/s", "cpu us/unit"
  for (i = 1; i <= nc; i++) { c = cs[i]; if (!seen[c]) continue
    for (j = 1; j <= 3; j++) { p = ps[j]; m = n[c, p]; if (!m) continue
      for (k = 1; k <= m; k++) a[k] = rate[c, p, k]; R[c, p] = median(a, m)
      for (k = 1; k <= m; k++) a[k] = cpu[c, p, k]; C[c, p] = median(a, m)
      printf "%-12s %-13s %12.0f %12.1f/%s\n", c, p, R[c, p], C[c, p], unit[c] }
    for (j = 1; j <= 2; j++) { p = ps[j]
      if (n[c, "nginx"] && n[c, p]) printf "  %s/nginx: rate %.2fx, cpu per %s %.2fx\n", p, R[c, p] / R[c, "nginx"], unit[c], C[c, p] / C[c, "nginx"]
      if (c ~ /^bulk-sm4/ && n["bulk-aes", p] && n[c, p]) printf "  %s %s/AES-128-GCM: rate %.2fx, cpu per MiB %.2fx\n", p, c, R[c, p] / R["bulk-aes", p], C[c, p] / C["bulk-aes", p] } }
}' "$results" | tee "$out/tls-summary.txt"
