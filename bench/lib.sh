# Shell helpers the bench scripts share (sourced, not run).

# freeport prints a loopback port that was free a moment ago.
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# waitport waits up to 10 s for 127.0.0.1:PORT to accept a connection.
waitport() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }
# cpu_ticks prints the user+system clock ticks of the PIDs' threads.
cpu_ticks() { local t=0; for p in "$@"; do for f in /proc/$p/task/*/stat; do set -- $(sed 's/^.*) //' "$f"); t=$((t + ${12} + ${13})); done; done; echo $t; }
# rss_kib prints the PIDs' resident memory in KiB, summed.
rss_kib() { local t=0; for p in "$@"; do t=$((t + $(awk '/VmRSS/{print $2}' /proc/$p/status))); done; echo $t; }
hz=$(getconf CLK_TCK)
