#!/usr/bin/env bash
# Called by bench/run.sh idle WORKDIR N WAKE [tls] (binaries already built
# there). With tls, the connections are TLS (ECDSA P-256, TLS 1.3) and
# nginx (1 worker, OpenSSL) terminating the same TLS in front of the same
# origin is measured after Strait's two models.
set -euo pipefail
work=$1; n=$2; wake=$3; tlsmode=${4:-}
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/bench/out"; mkdir -p "$out"
ulimit -n "$(ulimit -Hn)"
go build -o "$work/idleclient" "$root/bench/idleclient"

. "$(dirname "$0")/lib.sh"
goroutines() { curl -s "http://127.0.0.1:$1/debug/pprof/goroutine?debug=1" | awk 'NR==1{print $4}'; }
# waitline FILE PATTERN SECONDS: wait until FILE has a line matching PATTERN.
waitline() { for _ in $(seq $(($3 * 20))); do grep -q "$2" "$1" 2>/dev/null && { grep "$2" "$1" | tail -1; return 0; }; sleep 0.05; done; echo "timed out waiting for $2" >&2; return 1; }

up=$(freeport)
"$work/upstream" -addr 127.0.0.1:$up -size 128 & up_pid=$!
waitport $up
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

# measure NAME PIDS PORT ADMIN: RSS (and goroutines, given an admin port)
# before and after the client connects, then a wake; prints the row and
# stops the server (the first of PIDS).
measure() {
  local model=$1 pids=$2 p=$3 a=$4 rss0 rss1 g0=- g1=- cpid conn_line wake_line connected delta per
  rss0=$(for q in $pids; do rss_kib $q; done | awk '{t+=$1} END{print t}')
  [ -n "$a" ] && g0=$(goroutines $a)
  rm -f "$work/in-$model" "$work/out-$model"; mkfifo "$work/in-$model"
  "$work/idleclient" $cflag -addr 127.0.0.1:$p -n "$n" -wake "$wake" < "$work/in-$model" > "$work/out-$model" & cpid=$!
  exec 7> "$work/in-$model"
  conn_line=$(waitline "$work/out-$model" '^connected=' 120)
  sleep 2 # let the proxy settle: readers park, timers are set
  rss1=$(for q in $pids; do rss_kib $q; done | awk '{t+=$1} END{print t}')
  [ -n "$a" ] && g1=$(goroutines $a)
  echo wake >&7
  wake_line=$(waitline "$work/out-$model" '^woke=' 60)
  echo quit >&7; exec 7>&-
  wait $cpid || true
  set -- $pids
  kill $1; wait $1 2>/dev/null || true
  connected=$(echo "$conn_line" | sed 's/connected=\([0-9]*\).*/\1/')
  delta=$((rss1 - rss0))
  per=$(awk -v d=$delta -v c=$connected 'BEGIN{ if (c > 0) printf "%.2f", d / c; else print "nan" }')
  printf "%-8s %12s %14s %12s %12s %10s %s (%s)\n" $model "$connected" "$delta" "$per" "$g1" "$g0" "$wake_line" "$conn_line" | tee -a "$summary"
}

summary="$out/idle${tlsmode:+-tls}-summary.txt"
: > "$summary"
ts=""; cflag=""; targets="netpoll epoll"
if [ "$tlsmode" = tls ]; then
  openssl ecparam -name prime256v1 -genkey -noout -out "$work/idle-key.pem"
  openssl req -x509 -new -key "$work/idle-key.pem" -subj "/CN=localhost" -days 2 -out "$work/idle-cert.pem" -addext "subjectAltName=DNS:localhost" 2>/dev/null
  ts='    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificates: [ { certificate_chain: { filename: '"$work"'/idle-cert.pem }, private_key: { filename: '"$work"'/idle-key.pem } } ]
      filters:'
  cflag=-tls; targets="netpoll epoll nginx"
fi
printf "%-8s %12s %14s %12s %12s %10s %s\n" model connected "RSS delta KiB" "KiB/conn" goroutines "base gr" "wake" | tee -a "$summary"
for model in $targets; do
  p=$(freeport); a=$(freeport)
  if [ "$model" = nginx ]; then
    mkdir -p "$work/nginx-idle"
    cat > "$work/nginx-idle/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $work/nginx-idle/pid; error_log $work/nginx-idle/error.log error;
worker_rlimit_nofile 65536;
events { worker_connections $((n + 1000)); }
http {
  access_log off;
  client_body_temp_path $work/nginx-idle; proxy_temp_path $work/nginx-idle; fastcgi_temp_path $work/nginx-idle; uwsgi_temp_path $work/nginx-idle; scgi_temp_path $work/nginx-idle;
  upstream origin { server 127.0.0.1:$up; keepalive 64; }
  keepalive_requests 100000000; keepalive_timeout 300s;
  server { listen 127.0.0.1:$p ssl;
    ssl_certificate $work/idle-cert.pem; ssl_certificate_key $work/idle-key.pem;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; } }
}
CONF
    nginx -c "$work/nginx-idle/nginx.conf" -p "$work/nginx-idle" & spid=$!
    waitport $p
    sleep 0.5
    measure $model "$spid $(pgrep -P $spid)" $p ""
    continue
  fi
  cat > "$work/idle-$model.yaml" <<YAML
admin: { address: { socket_address: { address: 127.0.0.1, port_value: $a } } }
static_resources:
  listeners:
  - name: idle
    address: { socket_address: { address: 127.0.0.1, port_value: $p } }
    filter_chains:
${ts:-    - filters:}
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
  measure $model $spid $p $a
done
echo "date=$(date -u +%F) cpus=$(nproc) go=$(go version | awk '{print $3}') n=$n wake=$wake ${tlsmode:+tls nginx=$(nginx -v 2>&1 | sed 's/.*\///')}" | tee -a "$summary"
