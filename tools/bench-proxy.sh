#!/usr/bin/env bash
# nginx as a reverse proxy, and short-lived connections, under vmsock-run against plain TCP (issue 19; BENCHMARKS.md,
# "nginx as a reverse proxy"). Each nginx has a front port that proxies to a back port of its own, which serves a
# 1 KiB file. wrk (2 threads, 50 keep-alive connections) asks the front, and ab (no keep-alive: a new connection
# per request, one at a time) asks the back directly. Workloads:
#   proxy-new: nginx's default proxying, a new upstream connection per request (HTTP/1.0)
#   proxy-keepalive: an upstream block with `keepalive 32` and HTTP/1.1, upstream connections reused
#   new-connections: ab without -k against the back port (connect, one request, close)
#   plain-client-new-connections: the same from an ab that is not under vmsock-run, against the 2-worker nginx
# each with nginx as one process and with a master and 2 forked workers. Every nginx runs twice for the whole run,
# plainly and under vmsock-run, and its client runs the same way; the sides alternate for ROUNDS rounds.
# Usage: tools/bench-proxy.sh [ROUNDS]   (default 3; SECONDS_EACH=3 for wrk)
# Builds vmsock-run and its library in release first (tools/bench-servers-lib.sh: SCRATCH, BUILD=0 skips it).
set -euo pipefail
ROUNDS=${1:-3}
SECONDS_EACH=${SECONDS_EACH:-3}
NAME=bench-proxy TOOLS="nginx wrk ab"
source "$(dirname "$0")/bench-servers-lib.sh"

head -c 1024 /dev/urandom >"$WORK/small.bin"
start_nginx() {  # SIDE PREFIX NAME PROCESS-LINES KEEPALIVE(0|1)
    local back front proxy dir="$WORK/nginx-$1-$3"; back=$(free_port); front=$(free_port)
    if [ "$5" = 1 ]; then
        proxy="upstream back { server 127.0.0.1:$back; keepalive 32; }
               server { listen 127.0.0.1:$front; location / { proxy_pass http://back; proxy_http_version 1.1;
                        proxy_set_header Connection \"\"; } }"
    else
        proxy="server { listen 127.0.0.1:$front; location / { proxy_pass http://127.0.0.1:$back; } }"
    fi
    mkdir -p "$dir/temp"
    interop/programs/nginx-conf.sh "$dir" "$back" "$WORK" "$4" "keepalive_requests 1000000; $proxy" >"$dir/nginx.conf"
    $2 nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" 2>"$dir/master.err" &
    SERVERS+=($!)
    wait_listening "$back"
    wait_listening "$front"
    eval "front_$1_$3=$front back_$1_$3=$back"
}
for side in plain vmsock; do
    prefix=$([ $side = vmsock ] && echo "$RUN" || true)
    start_nginx $side "$prefix" new1 "master_process off;" 0
    start_nginx $side "$prefix" new2 "master_process on; worker_processes 2;" 0
    start_nginx $side "$prefix" keepalive1 "master_process off;" 1
    start_nginx $side "$prefix" keepalive2 "master_process on; worker_processes 2;" 1
done

wrk_rps() {  # SIDE PREFIX NAME
    local port out; port=$(eval echo "\$front_$1_$3")
    out=$($2 wrk -t 2 -c 50 -d "${SECONDS_EACH}s" "http://127.0.0.1:$port/small.bin" 2>>"$WORK/$1.clients.err")
    grep -E "Socket errors|Non-2xx" <<<"$out" | sed "s/^ */$1 $3: /" >>"$WORK/errors" || true
    sed -n 's/^Requests\/sec: *\([0-9.]*\)/\1/p' <<<"$out"
}
ab_rps() {  # SIDE PREFIX NAME: a new connection per request
    local port out; port=$(eval echo "\$back_$1_$3")
    out=$($2 ab -q -c 1 -t "$SECONDS_EACH" -n 100000000 "http://127.0.0.1:$port/small.bin" 2>>"$WORK/$1.clients.err")
    grep -E "^(Failed requests|Non-2xx responses): *[1-9]" <<<"$out" | sed "s/^/$1 $3 (ab): /" >>"$WORK/errors" || true
    sed -n 's/^Requests per second: *\([0-9.]*\).*/\1/p' <<<"$out"
}
measure() {  # SIDE: one line "name value" per workload
    local side=$1 prefix; prefix=$([ "$1" = vmsock ] && echo "$RUN" || true)
    echo "proxy-new-1-process $(wrk_rps $side "$prefix" new1)"
    echo "proxy-new-2-workers $(wrk_rps $side "$prefix" new2)"
    echo "proxy-keepalive-1-process $(wrk_rps $side "$prefix" keepalive1)"
    echo "proxy-keepalive-2-workers $(wrk_rps $side "$prefix" keepalive2)"
    echo "new-connections-1-process $(ab_rps $side "$prefix" new1)"
    # A client that is not under vmsock-run, on both sides: what a plain TCP client of a preloaded server pays.
    echo "plain-client-new-connections-2-workers $(ab_rps $side "" new2)"
}

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores; $ROUNDS rounds"
for round in $(seq "$ROUNDS"); do
    if [ $((round % 2)) = 1 ]; then order="plain vmsock"; else order="vmsock plain"; fi
    for side in $order; do measure $side | sed "s/^/$round $side /" >>"$WORK/results"; done
    echo "round $round: $(grep "^$round " "$WORK/results" | awk '{printf "%s %s %.0f; ", $3, $2, $4}')"
done

# Which transport each hop used, from the --stats lines the vmsock side's processes print at exit (nginx's
# workers into their error_log). An nginx here connects only to its upstream.
stop_servers
for name in new1 new2 keepalive1 keepalive2; do
    dir="$WORK/nginx-vmsock-$name"
    echo "transport, vmsock side, nginx $name: upstream connects $(transports connects "$dir/error.log" "$dir/master.err")," \
        "accepts $(transports accepts "$dir/error.log" "$dir/master.err")"
done
echo "transport, vmsock side, clients: connects $(transports connects "$WORK/vmsock.clients.err")"
[ -s "$WORK/errors" ] && { echo "errors:"; cat "$WORK/errors"; }
python3 - "$WORK/results" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    round_, side, name, value = line.split()
    rows.setdefault(name, {}).setdefault(side, {})[round_] = float(value or 0)
print("| workload | plain TCP, requests/s | under vmsock-run | vmsock/plain, median of rounds |")
print("|---|---|---|---|")
for name, sides in rows.items():
    plain, vmsock = sides["plain"], sides["vmsock"]
    ratios = [vmsock[r] / plain[r] for r in plain if plain[r] > 0 and r in vmsock]
    print("| %s | %.0f | %.0f | %.2fx |" % (name, statistics.median(plain.values()), statistics.median(vmsock.values()),
                                          statistics.median(ratios)))
EOF
