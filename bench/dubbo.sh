#!/usr/bin/env bash
# Called by bench/run.sh dubbo WORKDIR ROUNDS SECONDS (strait already built
# there). Runs Dubbo two-way calls (50 callers over 10 connections,
# 128-byte hessian2 payloads; bench/dubbo is our load client and provider
# on dubbo-go-hessian2) against the provider directly and through Strait's
# dubbo_proxy (netpoll and epoll), interleaved, under two loads (closed
# loop, and a fixed rate: DUBBO_RATE, default 20000 calls/s), and prints calls/s, p50,
# p99, Strait's CPU per call, its heap allocations per call (the whole
# process's runtime Mallocs over the run, from the admin port's pprof) and
# RSS, medians and ratios to the direct run.
set -euo pipefail
work=$1; rounds=$2; secs=$3
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/bench/out"; mkdir -p "$out"
go build -o "$work/dubbobench" "$root/bench/dubbo"

. "$(dirname "$0")/lib.sh"
mallocs() { curl -s "http://127.0.0.1:$1/debug/pprof/allocs?debug=1" | awk '/^# Mallocs/{print $4}'; }

srv=$(freeport); p1=$(freeport); p2=$(freeport); a1=$(freeport); a2=$(freeport)
"$work/dubbobench" serve -addr 127.0.0.1:$srv & waitport $srv
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
for pa in $p1:$a1 $p2:$a2; do
  p=${pa%:*}; a=${pa#*:}
  cat > "$work/dubbo-$p.yaml" <<YAML
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: $a } }
static_resources:
  listeners:
  - name: bench
    address: { socket_address: { address: 127.0.0.1, port_value: $p } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.dubbo_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.dubbo_proxy.v3.DubboProxy
          stat_prefix: bench
          route_config:
          - interface: "*"
            routes: [ { match: { method: { name: { safe_regex: { regex: ".*" } } } }, route: { cluster: dubbo } } ]
  clusters:
  - name: dubbo
    connect_timeout: 1s
    load_assignment:
      cluster_name: dubbo
      endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $srv } } } } ] } ]
YAML
done
"$work/strait" -c "$work/dubbo-$p1.yaml" --log-level error & pid1=$!
"$work/strait" -c "$work/dubbo-$p2.yaml" --io-model epoll --log-level error & pid2=$!
waitport $p1; waitport $p2

# Two loads: closed (every caller calls again as soon as answered: the
# p50 is mostly queueing, so it tracks throughput) and fixed (DUBBO_RATE
# calls/s in all on a schedule, well below what either path can carry:
# the p50 is the time a call takes, latency counted from when the
# schedule said to send).
rate=${DUBBO_RATE:-20000}
results="$work/dubbo.tsv"; : > "$results"
for r in $(seq "$rounds"); do
 for load in closed fixed; do
  extra=""; [ "$load" = fixed ] && extra="-rate $rate"
  for name in direct strait strait-epoll; do
    case $name in direct) port=$srv; pid=; adm=;; strait) port=$p1; pid=$pid1; adm=$a1;; strait-epoll) port=$p2; pid=$pid2; adm=$a2;; esac
    c0=0; m0=0; [ -n "$pid" ] && c0=$(cpu_ticks $pid) && m0=$(mallocs $adm)
    read -r calls cps p50 p99 errs < <("$work/dubbobench" load -addr 127.0.0.1:$port -c 50 -conns 10 -d ${secs}s $extra)
    cpu=0; rss=0; allocs=0
    if [ -n "$pid" ]; then
      c1=$(cpu_ticks $pid)
      allocs=$(awk -v d=$(( $(mallocs $adm) - m0 )) -v n=$calls 'BEGIN{printf "%.3f", d/n}')
      cpu=$(awk -v d=$((c1 - c0)) -v hz=$hz -v n=$calls 'BEGIN{printf "%.1f", d/hz*1e6/n}')
      rss=$(( $(rss_kib $pid) / 1024 ))
    fi
    printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n" "$r" "$load/$name" "$cps" "$p50" "$p99" "$cpu" "$rss" "$allocs" "errors=$errs" | tee -a "$results"
  done
 done
done
echo
echo "mode=dubbo rounds=$rounds secs=$secs callers=50 conns=10 fixed-rate=$rate date=$(date -u +%F) cpus=$(nproc) go=$(go version | awk '{print $3}')"
awk -F'\t' '
function median(arr, n,   i, j, t) { for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (arr[j] < arr[i]) { t = arr[i]; arr[i] = arr[j]; arr[j] = t }
  return (n % 2) ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2 }
{ n[$2]++; k = n[$2]; R[$2, k] = $3; P5[$2, k] = $4; P9[$2, k] = $5; C[$2, k] = $6; S[$2, k] = $7; A[$2, k] = $8 }
END {
  printf "%-20s %10s %10s %10s %14s %12s %8s\n", "path", "calls/s", "p50 us", "p99 us", "cpu us/call", "allocs/call", "RSS MiB"
  split("closed/direct closed/strait closed/strait-epoll fixed/direct fixed/strait fixed/strait-epoll", names, " ")
  for (i = 1; i <= 6; i++) { p = names[i]; m = n[p]
    for (k = 1; k <= m; k++) a[k] = R[p, k]; r[p] = median(a, m)
    for (k = 1; k <= m; k++) a[k] = P5[p, k]; q5[p] = median(a, m)
    for (k = 1; k <= m; k++) a[k] = P9[p, k]; q9[p] = median(a, m)
    for (k = 1; k <= m; k++) a[k] = C[p, k]; c[p] = median(a, m)
    for (k = 1; k <= m; k++) a[k] = S[p, k]; s[p] = median(a, m)
    for (k = 1; k <= m; k++) a[k] = A[p, k]; al[p] = median(a, m)
    printf "%-20s %10.0f %10.0f %10.0f %14.1f %12.3f %8.0f\n", p, r[p], q5[p], q9[p], c[p], al[p], s[p] }
  for (i = 1; i <= 6; i++) { p = names[i]; if (p ~ /direct/) { d = p; continue }
    printf "%s / %s: calls/s %.2fx, p50 %.2fx (+%.0f us), p99 %.2fx\n", p, d, r[p] / r[d], q5[p] / q5[d], q5[p] - q5[d], q9[p] / q9[d] }
}' "$results" | tee "$out/dubbo-summary.txt"
