#!/usr/bin/env bash
# bench/run.sh http1|h2|tcp|grpc|dubbo|tls|accesslog [rounds] [seconds]
# bench/run.sh idle [connections] [wake] [tls]
# bench/run.sh xds [updates] [endpoints]
# bench/run.sh hotrestart [upgrades]
#
# http1, tcp: runs Strait (netpoll and epoll I/O models), nginx (1 worker)
# and HAProxy (1 thread) in front of the same loopback origin, interleaved
# (A B C D, A B C D, ...), with wrk at 50 connections, and prints per run
# and as medians: req/s, p50/p99 latency, proxy CPU time per request
# (user+system from /proc, the fair figure on a shared machine) and proxy
# RSS; then Strait's ratio to each peer.
#
# h2: the same four proxies take HTTP/2 without TLS (Strait's AUTO
# listener, nginx "listen ... http2", HAProxy "bind ... proto h2") and
# speak HTTP/1.1 to the origin; h2load drives 10 connections x 10
# streams. h2load reports mean and max latency, not percentiles, so those
# two columns are mean and max in this mode.
#
# accesslog: http1 through Strait with an access log in Envoy's default
# format to a file ("strait") against the same binary and config without
# it ("strait-base"), interleaved: the log's cost per request.
#
# grpc: unary gRPC calls through Strait against the same calls made
# directly (bench/grpc.sh).
#
# dubbo: Dubbo two-way calls through dubbo_proxy against the same calls
# made directly, our own load client and provider on dubbo-go-hessian2
# (bench/dubbo.sh).
#
# tls: Strait (both I/O models) and nginx terminating TLS with equivalent
# settings: kept-alive HTTP/1.1 and h2, full and resumed handshakes, 1 MiB
# bulk (bench/tls.sh).
#
# xds: an in-process go-control-plane drives the Strait binary: time from
# a snapshot set to the first request on the new route (p50/p99 of 100
# route flips), and an EDS update of 10,000 endpoints applied under
# requests; state of the world, then delta (bench/xds). Then churn: wrk
# (50 keep-alive connections, 8 s) through each I/O model while 20
# updates each add a cluster and move the route to it, 5 of them also
# replacing the listener on the same address; wrk's request, non-2xx and
# socket error counts are the figures (zero failures is the goal).
#
# idle: for each I/O model, opens N (default 10,000) keep-alive connections
# through Strait with one request each, leaves them idle, and prints the
# proxy's RSS growth per connection and its goroutine count; then wakes W
# (default 1,000) of them for one more request each and checks every
# answer. With tls the connections are TLS, and nginx terminating the
# same TLS is measured beside (its RSS; it has no goroutines).
#
# hotrestart: for each I/O model, Strait is hot-restarted N times (default
# 5) under 200 req/s from 20 keep-alive clients and 20 TCP sessions
# through tcp_proxy echoing a line every 100 ms (bench/hotrestart): the
# longest latency in each upgrade's window against the two seconds
# before it (the stall), failed requests and broken sessions.
#
# Everything listens on 127.0.0.1; every run is bounded in time.
set -euo pipefail
mode=${1:-http1}
access_log=
if [ "$mode" = accesslog ]; then
  mode=http1 access_log=1
  PROXIES=${PROXIES:-strait strait-base}
fi
rounds=${2:-5}
secs=${3:-5}
conns=50
cd "$(dirname "$0")/.."
root=$(pwd)
out="$root/bench/out"
mkdir -p "$out"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

need=()
command -v wrk >/dev/null || need+=(wrk)
[ "$mode" = h2 ] && ! command -v h2load >/dev/null && need+=(nghttp2-client)
command -v nginx >/dev/null || need+=(nginx)
command -v haproxy >/dev/null || need+=(haproxy)
[ "$mode" = tcp ] && [ ! -e /usr/lib/nginx/modules/ngx_stream_module.so ] && need+=(libnginx-mod-stream)
if [ "$mode" = dubbo ] || [ "$mode" = hotrestart ]; then need=(); fi # Go clients and servers only
if [ "$mode" = xds ]; then # go-control-plane runs in process; wrk loads the churn runs
  need=(); command -v wrk >/dev/null || need+=(wrk)
fi
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

. "$root/bench/lib.sh"

go build -o "$work/strait" ./cmd/strait
go build -o "$work/upstream" ./bench/upstream
if [ -n "$access_log" ]; then BASE_BIN=${BASE_BIN:-$work/strait}; fi

if [ "$mode" = idle ]; then
  exec "$root/bench/idle.sh" "$work" "${2:-10000}" "${3:-1000}" "${4:-}"
fi
if [ "$mode" = hotrestart ]; then
  go build -o "$work/hrbench" ./bench/hotrestart
  for model in netpoll epoll; do
    timeout 600 "$work/hrbench" -strait "$work/strait" -upgrades "${2:-5}" -model $model
  done
  exit 0
fi
if [ "$mode" = xds ]; then
  go build -o "$work/xdsbench" ./bench/xds
  for flag in "" -delta; do
    timeout 300 "$work/xdsbench" -strait "$work/strait" -updates "${2:-100}" -endpoints "${3:-10000}" $flag
  done
  for model in netpoll epoll; do
    for flag in "" -delta; do
      timeout 120 "$work/xdsbench" -strait "$work/strait" -churn $model $flag
    done
  done
  exit 0
fi
if [ "$mode" = grpc ]; then
  exec "$root/bench/grpc.sh" "$work" "$rounds" "$secs"
fi
if [ "$mode" = dubbo ]; then
  exec "$root/bench/dubbo.sh" "$work" "$rounds" "$secs"
fi
if [ "$mode" = tls ]; then
  exec "$root/bench/tls.sh" "$work" "$rounds" "$secs"
fi

up=$(freeport); p_strait=$(freeport); p_epoll=$(freeport); p_nginx=$(freeport); p_haproxy=$(freeport)
"$work/upstream" -addr 127.0.0.1:$up -size 128 & waitport $up

# --- Strait
if [ "$mode" = http1 ] || [ "$mode" = h2 ]; then
  filter='- name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          generate_request_id: false
          route_config:
            virtual_hosts: [ { name: all, domains: ["*"], routes: [ { match: { prefix: "/" }, route: { cluster: origin } } ] } ]
          http_filters: [ { name: envoy.filters.http.router, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } } ]'
else
  filter='- name: envoy.filters.network.tcp_proxy
        typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: bench, cluster: origin }'
fi
cat > "$work/strait.yaml" <<YAML
static_resources:
  listeners:
  - name: bench
    address: { socket_address: { address: 127.0.0.1, port_value: $p_strait } }
    filter_chains:
    - filters:
      $filter
  clusters:
  - name: origin
    connect_timeout: 1s
    circuit_breakers: { thresholds: [ { max_connections: 10000, max_pending_requests: 10000, max_requests: 10000 } ] }
    load_assignment:
      cluster_name: origin
      endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $up } } } } ] } ]
YAML
# FILTERS: HTTP filters (a YAML flow list's items, before the router)
# for strait and strait-epoll; strait-base (BASE_BIN, which may be the
# same binary) keeps the bare chain, so one run measures a chain's cost.
cp "$work/strait.yaml" "$work/strait-bare.yaml"
if [ -n "$access_log" ]; then
  sed -i "s|          generate_request_id: false|&\n          access_log: [ { name: envoy.access_loggers.file, typed_config: { \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: $work/access.log } } ]|" "$work/strait.yaml"
fi
if [ -n "${FILTERS:-}" ]; then
  sed -i "s|http_filters: \[ { name: envoy.filters.http.router|http_filters: [ $FILTERS, { name: envoy.filters.http.router|" "$work/strait.yaml"
fi
"$work/strait" -c "$work/strait.yaml" --log-level error & pid_strait=$!
sed "s/port_value: $p_strait /port_value: $p_epoll /" "$work/strait.yaml" > "$work/strait-epoll.yaml"
"$work/strait" -c "$work/strait-epoll.yaml" --io-model epoll --log-level error & pid_epoll=$!
# BASE_BIN: another build of Strait (an earlier commit's), run as
# "strait-base" (netpoll) in the same rotation, to measure a change.
if [ -n "${BASE_BIN:-}" ]; then
  p_base=$(freeport)
  sed "s/port_value: $p_strait /port_value: $p_base /" "$work/strait-bare.yaml" > "$work/strait-base.yaml"
  "$BASE_BIN" -c "$work/strait-base.yaml" --log-level error & pid_base=$!
  waitport $p_base
fi

# --- nginx, one worker
mkdir -p "$work/nginx"
if [ "$mode" = http1 ] || [ "$mode" = h2 ]; then
h2=$([ "$mode" = h2 ] && echo " http2" || true)
cat > "$work/nginx/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $work/nginx/pid; error_log $work/nginx/error.log error;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx; proxy_temp_path $work/nginx; fastcgi_temp_path $work/nginx; uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
  upstream origin { server 127.0.0.1:$up; keepalive 64; }
  keepalive_requests 100000000; keepalive_timeout 300s;
  server { listen 127.0.0.1:$p_nginx$h2;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; } }
}
CONF
else
cat > "$work/nginx/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1; daemon off; pid $work/nginx/pid; error_log $work/nginx/error.log error;
events { worker_connections 4096; }
stream { server { listen 127.0.0.1:$p_nginx; proxy_pass 127.0.0.1:$up; } }
CONF
fi
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" & pid_nginx=$!

# --- HAProxy, one thread
hmode=$([ "$mode" = tcp ] && echo tcp || echo http)
hproto=$([ "$mode" = h2 ] && echo " proto h2" || true)
cat > "$work/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 4096
defaults
  mode $hmode
  timeout connect 5s
  timeout client 30s
  timeout server 30s
$([ "$mode" != tcp ] && echo "  http-reuse always")
frontend fe
  bind 127.0.0.1:$p_haproxy$hproto
  default_backend be
backend be
  server origin 127.0.0.1:$up
CONF
haproxy -f "$work/haproxy.cfg" -db & pid_haproxy=$!

waitport $p_strait; waitport $p_epoll; waitport $p_nginx; waitport $p_haproxy

# cpu_ticks PID...: user+system clock ticks of the processes and their children threads.
pids_of() {
  case $1 in
    strait) echo $pid_strait ;;
    strait-epoll) echo $pid_epoll ;;
    strait-base) echo $pid_base ;;
    nginx) echo $pid_nginx $(pgrep -P $pid_nginx) ;;
    haproxy) echo $pid_haproxy ;;
  esac
}
port_of() { case $1 in strait) echo $p_strait;; strait-epoll) echo $p_epoll;; strait-base) echo $p_base;; nginx) echo $p_nginx;; haproxy) echo $p_haproxy;; esac; }

# Warm up each proxy (connections to the origin, page cache).
# PROXIES limits the rotation, e.g. PROXIES="strait strait-epoll".
proxies=${PROXIES:-strait strait-epoll nginx haproxy${BASE_BIN:+ strait-base}}
load() { # load NAME SECONDS: one load run, printed as wrk prints it or as h2load does
  if [ "$mode" = h2 ]; then h2load -t1 -c10 -m10 -D "$2" http://127.0.0.1:$(port_of $1)/
  else wrk -t1 -c$conns -d${2}s --latency http://127.0.0.1:$(port_of $1)/; fi
}
for name in $proxies; do load $name 1 >/dev/null; done

results="$work/results.tsv"
: > "$results"
to_us() { awk -v v="$1" 'BEGIN{ if (v ~ /us$/) {sub(/us$/,"",v); print v} else if (v ~ /ms$/) {sub(/ms$/,"",v); print v*1000} else if (v ~ /s$/) {sub(/s$/,"",v); print v*1000000} else print v }'; }
for r in $(seq "$rounds"); do
  for name in $proxies; do
    pids=$(pids_of $name)
    c0=$(cpu_ticks $pids)
    o=$(load $name $secs)
    c1=$(cpu_ticks $pids)
    if [ "$mode" = h2 ]; then
      reqs=$(echo "$o" | awk '/^requests:/{print $8}')
      rps=$(echo "$o" | awk '/^finished in/{print $4}')
      p50=$(to_us "$(echo "$o" | awk '/^time for request:/{print $6}')")
      p99=$(to_us "$(echo "$o" | awk '/^time for request:/{print $5}')")
      errs=$(echo "$o" | awk '/^requests:/ && ($10 != 0 || $12 != 0){print "failed " $10 " errored " $12}')
    else
      reqs=$(echo "$o" | awk '/requests in/{print $1}')
      rps=$(echo "$o" | awk '/Requests\/sec/{print $2}')
      p50=$(to_us "$(echo "$o" | awk '$1=="50%"{print $2}')")
      p99=$(to_us "$(echo "$o" | awk '$1=="99%"{print $2}')")
      errs=$(echo "$o" | awk '/Non-2xx|Socket errors/{print}' | tr '\n' ' ')
    fi
    cpu_us=$(awk -v d=$((c1 - c0)) -v hz=$hz -v n=$reqs 'BEGIN{printf "%.1f", d/hz*1e6/n}')
    rss=$(rss_kib $pids)
    printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n" "$r" "$name" "$rps" "$p50" "$p99" "$cpu_us" "$((rss/1024))" "$errs" | tee -a "$results"
  done
done

echo
echo "mode=$mode rounds=$rounds secs=$secs conns=$conns date=$(date -u +%F) cpus=$(nproc) go=$(go version | awk '{print $3}') nginx=$(nginx -v 2>&1 | sed 's/.*\///') haproxy=$(haproxy -v | awk 'NR==1{print $3}')"
lat=$([ "$mode" = h2 ] && echo "mean max" || echo "p50 p99")
awk -F'\t' -v lat="$lat" '
function median(arr, n,   i, j, t) { for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (arr[j] < arr[i]) { t = arr[i]; arr[i] = arr[j]; arr[j] = t }
  return (n % 2) ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2 }
{ n[$2]++; k = n[$2]; rps[$2, k] = $3; p50[$2, k] = $4; p99[$2, k] = $5; cpu[$2, k] = $6; rss[$2, k] = $7 }
END {
  split(lat, L, " ")
  printf "%-13s %10s %10s %10s %14s %8s\n", "proxy", "req/s", L[1] " us", L[2] " us", "cpu us/req", "RSS MiB"
  split("strait strait-epoll nginx haproxy strait-base", names, " ")
  for (i = 1; i <= 5; i++) { p = names[i]; m = n[p]; if (m == 0) continue
    for (k = 1; k <= m; k++) { a[k] = rps[p, k] }; R[p] = median(a, m)
    for (k = 1; k <= m; k++) { a[k] = p50[p, k] }; P5[p] = median(a, m)
    for (k = 1; k <= m; k++) { a[k] = p99[p, k] }; P9[p] = median(a, m)
    for (k = 1; k <= m; k++) { a[k] = cpu[p, k] }; C[p] = median(a, m)
    for (k = 1; k <= m; k++) { a[k] = rss[p, k] }; S[p] = median(a, m)
    printf "%-13s %10.0f %10.0f %10.0f %14.1f %8.0f\n", p, R[p], P5[p], P9[p], C[p], S[p] }
  for (i = 3; i <= 4; i++) { p = names[i]; if (n[p] == 0) continue
    printf "strait/%s: req/s %.2fx, %s %.2fx, cpu per request %.2fx\n", p, R["strait"] / R[p], L[2], P9["strait"] / P9[p], C["strait"] / C[p] }
  if (n["strait-base"] > 0) printf "strait/strait-base (BASE_BIN): req/s %.2fx, %s %.2fx, cpu per request %.2fx\n", R["strait"] / R["strait-base"], L[2], P9["strait"] / P9["strait-base"], C["strait"] / C["strait-base"]
  if (n["strait-epoll"] > 0) printf "strait-epoll/strait (netpoll): req/s %.2fx, %s %.2fx, cpu per request %.2fx\n", R["strait-epoll"] / R["strait"], L[2], P9["strait-epoll"] / P9["strait"], C["strait-epoll"] / C["strait"]
}' "$results" | tee "$out/$mode-summary.txt"
