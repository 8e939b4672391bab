#!/usr/bin/env bash
# Called by bench/run.sh grpc WORKDIR ROUNDS SECONDS (strait already built
# there). Runs grpc-go unary calls (50 callers, one connection, 128-byte
# payloads) against grpc-go's server directly and through Strait (netpoll
# and epoll), interleaved, and prints calls/s, p50, p99, Strait's CPU per
# call and RSS, medians and ratios to the direct run.
set -euo pipefail
work=$1; rounds=$2; secs=$3
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/bench/out"; mkdir -p "$out"
go build -o "$work/grpcbench" "$root/bench/grpc"

. "$(dirname "$0")/lib.sh"

srv=$(freeport); p1=$(freeport); p2=$(freeport)
"$work/grpcbench" serve -addr 127.0.0.1:$srv & waitport $srv
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
for p in $p1 $p2; do
  cat > "$work/grpc-$p.yaml" <<YAML
static_resources:
  listeners:
  - name: bench
    address: { socket_address: { address: 127.0.0.1, port_value: $p } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          generate_request_id: false
          route_config:
            virtual_hosts: [ { name: all, domains: ["*"], routes: [ { match: { prefix: "/" }, route: { cluster: grpc, timeout: 0s } } ] } ]
          http_filters: [ { name: envoy.filters.http.router, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } } ]
  clusters:
  - name: grpc
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }
    load_assignment:
      cluster_name: grpc
      endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $srv } } } } ] } ]
YAML
done
"$work/strait" -c "$work/grpc-$p1.yaml" --log-level error & pid1=$!
"$work/strait" -c "$work/grpc-$p2.yaml" --io-model epoll --log-level error & pid2=$!
waitport $p1; waitport $p2

results="$work/grpc.tsv"; : > "$results"
for r in $(seq "$rounds"); do
  for name in direct strait strait-epoll; do
    case $name in direct) port=$srv; pid=;; strait) port=$p1; pid=$pid1;; strait-epoll) port=$p2; pid=$pid2;; esac
    c0=0; [ -n "$pid" ] && c0=$(cpu_ticks $pid)
    read -r calls rate p50 p99 errs < <("$work/grpcbench" load -addr 127.0.0.1:$port -c 50 -d ${secs}s)
    cpu=0; rss=0
    if [ -n "$pid" ]; then
      c1=$(cpu_ticks $pid)
      cpu=$(awk -v d=$((c1 - c0)) -v hz=$hz -v n=$calls 'BEGIN{printf "%.1f", d/hz*1e6/n}')
      rss=$(( $(rss_kib $pid) / 1024 ))
    fi
    printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n" "$r" "$name" "$rate" "$p50" "$p99" "$cpu" "$rss" "errors=$errs" | tee -a "$results"
  done
done
echo
echo "mode=grpc rounds=$rounds secs=$secs callers=50 date=$(date -u +%F) cpus=$(nproc) go=$(go version | awk '{print $3}')"
awk -F'\t' '
function median(arr, n,   i, j, t) { for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (arr[j] < arr[i]) { t = arr[i]; arr[i] = arr[j]; arr[j] = t }
  return (n % 2) ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2 }
{ n[$2]++; k = n[$2]; R[$2, k] = $3; P5[$2, k] = $4; P9[$2, k] = $5; C[$2, k] = $6; S[$2, k] = $7 }
END {
  printf "%-13s %10s %10s %10s %14s %8s\n", "path", "calls/s", "p50 us", "p99 us", "cpu us/call", "RSS MiB"
  split("direct strait strait-epoll", names, " ")
  for (i = 1; i <= 3; i++) { p = names[i]; m = n[p]
    for (k = 1; k <= m; k++) a[k] = R[p, k]; r[p] = median(a, m)
    for (k = 1; k <= m; k++) a[k] = P5[p, k]; q5[p] = median(a, m)
    for (k = 1; k <= m; k++) a[k] = P9[p, k]; q9[p] = median(a, m)
    for (k = 1; k <= m; k++) a[k] = C[p, k]; c[p] = median(a, m)
    for (k = 1; k <= m; k++) a[k] = S[p, k]; s[p] = median(a, m)
    printf "%-13s %10.0f %10.0f %10.0f %14.1f %8.0f\n", p, r[p], q5[p], q9[p], c[p], s[p] }
  for (i = 2; i <= 3; i++) { p = names[i]
    printf "%s/direct: calls/s %.2fx, p50 +%.0f us, p99 %.2fx\n", p, r[p] / r["direct"], q5[p] - q5["direct"], q9[p] / q9["direct"] }
}' "$results" | tee "$out/grpc-summary.txt"
