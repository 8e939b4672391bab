#!/usr/bin/env bash
# Called by bench/run.sh idle WORKDIR N WAKE (binaries already built there).
set -euo pipefail
work=$1; n=$2; wake=$3
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/bench/out"; mkdir -p "$out"
ulimit -n "$(ulimit -Hn)"
go build -o "$work/idleclient" "$root/bench/idleclient"

freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
waitport() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }
rss_kib() { awk '/VmRSS/{print $2}' /proc/$1/status; }
goroutines() { curl -s "http://127.0.0.1:$1/debug/pprof/goroutine?debug=1" | awk 'NR==1{print $4}'; }
# waitline FILE PATTERN SECONDS: wait until FILE has a line matching PATTERN.
waitline() { for _ in $(seq $(($3 * 20))); do grep -q "$2" "$1" 2>/dev/null && { grep "$2" "$1" | tail -1; return 0; }; sleep 0.05; done; echo "timed out waiting for $2" >&2; return 1; }

up=$(freeport)
"$work/upstream" -addr 127.0.0.1:$up -size 128 & up_pid=$!
waitport $up
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

summary="$out/idle-summary.txt"
: > "$summary"
printf "%-8s %12s %14s %12s %12s %10s %s\n" model connected "RSS delta KiB" "KiB/conn" goroutines "base gr" "wake" | tee -a "$summary"
for model in netpoll epoll; do
  p=$(freeport); a=$(freeport)
  cat > "$work/idle-$model.yaml" <<YAML
admin: { address: { socket_address: { address: 127.0.0.1, port_value: $a } } }
static_resources:
  listeners:
  - name: idle
    address: { socket_address: { address: 127.0.0.1, port_value: $p } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: idle
          route_config:
            virtual_hosts: [ { name: all, domains: ["*"], routes: [ { match: { prefix: "/" }, route: { cluster: origin } } ] } ]
          http_filters: [ { name: envoy.filters.http.router, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } } ]
  clusters:
  - name: origin
    connect_timeout: 1s
    load_assignment:
      cluster_name: origin
      endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $up } } } } ] } ]
YAML
  "$work/strait" -c "$work/idle-$model.yaml" --io-model $model --log-level error & spid=$!
  waitport $p; waitport $a
  sleep 0.5
  rss0=$(rss_kib $spid); g0=$(goroutines $a)
  rm -f "$work/in-$model" "$work/out-$model"; mkfifo "$work/in-$model"
  "$work/idleclient" -addr 127.0.0.1:$p -n "$n" -wake "$wake" < "$work/in-$model" > "$work/out-$model" & cpid=$!
  exec 7> "$work/in-$model"
  conn_line=$(waitline "$work/out-$model" '^connected=' 120)
  sleep 2 # let the proxy settle: readers park, timers are set
  rss1=$(rss_kib $spid); g1=$(goroutines $a)
  echo wake >&7
  wake_line=$(waitline "$work/out-$model" '^woke=' 60)
  echo quit >&7; exec 7>&-
  wait $cpid || true
  kill $spid; wait $spid 2>/dev/null || true
  connected=$(echo "$conn_line" | sed 's/connected=\([0-9]*\).*/\1/')
  delta=$((rss1 - rss0))
  per=$(awk -v d=$delta -v c=$connected 'BEGIN{ if (c > 0) printf "%.2f", d / c; else print "nan" }')
  printf "%-8s %12s %14s %12s %12s %10s %s (%s)\n" $model "$connected" "$delta" "$per" "$g1" "$g0" "$wake_line" "$conn_line" | tee -a "$summary"
done
echo "date=$(date -u +%F) cpus=$(nproc) go=$(go version | awk '{print $3}') n=$n wake=$wake" | tee -a "$summary"
