#!/usr/bin/env bash
# Real servers under vmsock-run against plain TCP loopback, in one run (issue 19; BENCHMARKS.md, "Real servers
# under vmsock-run"): redis-benchmark SET and GET requests/s from 50 clients, pipelined (-P 16) and not, and wrk
# requests/s on a 1 KiB file from nginx with 2 forked workers, from nginx as one process (master_process off) and
# through haproxy (2 threads, HTTP) in front of the first, and ab -k requests/s from the one-process nginx.
# Each server runs twice for the whole run, plainly and under vmsock-run, and its client runs the same way. This VM
# changes speed within seconds, so the two sides alternate (as tools/bench-ab.sh does) for ROUNDS rounds and the
# table gives medians and the median of the per-round ratios.
# Usage: tools/bench-servers.sh [ROUNDS]   (default 5, about 45 s a round; SECONDS_EACH=3 for wrk)
# Builds vmsock-run and its library in release first (tools/bench-servers-lib.sh: SCRATCH, BUILD=0 skips it).
set -euo pipefail
ROUNDS=${1:-5}
SECONDS_EACH=${SECONDS_EACH:-3}
NAME=bench-servers TOOLS="redis-server redis-benchmark redis-cli nginx haproxy wrk ab"
source "$(dirname "$0")/bench-servers-lib.sh"

# The servers: SIDE is plain or vmsock; the vmsock side runs under vmsock-run, its --stats lines in $WORK/SIDE.*.
head -c 1024 /dev/urandom >"$WORK/small.bin"
start_redis() {  # SIDE PREFIX
    local port; port=$(free_port)
    mkdir -p "$WORK/redis-$1"
    $2 redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
        --dir "$WORK/redis-$1" --logfile "$WORK/redis-$1/log" 2>"$WORK/$1.redis.err" &
    SERVERS+=($!)
    wait_listening "$port"
    eval "redis_$1=$port"
}
start_nginx() {  # SIDE PREFIX NAME PROCESS-LINES
    local port dir="$WORK/nginx-$1-$3"; port=$(free_port)
    mkdir -p "$dir/temp"
    interop/programs/nginx-conf.sh "$dir" "$port" "$WORK" "$4" "keepalive_requests 1000000;" >"$dir/nginx.conf"
    $2 nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" 2>"$dir/master.err" &
    SERVERS+=($!)
    wait_listening "$port"
    eval "nginx_$1_$3=$port"
}
HAPROXIES=()
start_haproxy() {  # SIDE PREFIX: in front of that side's nginx with workers, its port as nginx_SIDE_haproxy
    local port backend; port=$(free_port); backend=$(eval echo "\$nginx_$1_workers")
    printf '%s\n' "global" "    maxconn 1000" "    nbthread 2" "defaults" "    mode http" "    timeout connect 5s" \
        "    timeout client 30s" "    timeout server 30s" "frontend web" "    bind 127.0.0.1:$port" \
        "    default_backend nginx" "backend nginx" "    server s1 127.0.0.1:$backend" >"$WORK/haproxy-$1.cfg"
    $2 haproxy -db -f "$WORK/haproxy-$1.cfg" >/dev/null 2>"$WORK/$1.haproxy.err" &
    SERVERS+=($!) HAPROXIES+=($!)
    wait_listening "$port"
    eval "nginx_$1_haproxy=$port"
}
for side in plain vmsock; do
    prefix=$([ $side = vmsock ] && echo "$RUN" || true)
    start_redis $side "$prefix"
    start_nginx $side "$prefix" workers "master_process on; worker_processes 2;"
    start_nginx $side "$prefix" single "master_process off;"
    start_haproxy $side "$prefix"
done

# One measurement: prints requests/s (for redis: SET and GET as two numbers).
redis_rps() {  # SIDE PREFIX ARGS...
    local side=$1 prefix=$2 port; shift 2
    port=$(eval echo "\$redis_$side")
    $prefix redis-benchmark -p "$port" -c 50 -t set,get --csv "$@" 2>>"$WORK/$side.clients.err" \
        | python3 -c '
import csv, sys
rows = {r[0]: r[1] for r in csv.reader(sys.stdin) if r and r[0] in ("SET", "GET")}
if len(rows) != 2: sys.exit("redis-benchmark: no SET and GET results")
print(rows["SET"], rows["GET"])'
}
wrk_rps() {  # SIDE PREFIX NAME
    local port out; port=$(eval echo "\$nginx_$1_$3")
    out=$($2 wrk -t 2 -c 50 -d "${SECONDS_EACH}s" "http://127.0.0.1:$port/small.bin" 2>>"$WORK/$1.clients.err")
    # Errors do not stop the run (the rate is still wrk's), but they are counted and shown under the table.
    grep -E "Socket errors|Non-2xx" <<<"$out" | sed "s/^ */$1 nginx-$3: /" >>"$WORK/errors" || true
    sed -n 's/^Requests\/sec: *\([0-9.]*\)/\1/p' <<<"$out"
}
# ab (one thread, poll) as the second client of the single-process nginx: wrk sizes its event loop by its
# connection count and fails connections whose descriptors land above that (BENCHMARKS.md explains why that
# happens under vmsock-run), so this row keeps all 50 connections on both sides.
ab_rps() {  # SIDE PREFIX NAME
    local port out; port=$(eval echo "\$nginx_$1_$3")
    out=$($2 ab -q -k -c 50 -t "$SECONDS_EACH" -n 100000000 "http://127.0.0.1:$port/small.bin" 2>>"$WORK/$1.clients.err")
    grep -E "^(Failed requests|Non-2xx responses): *[1-9]" <<<"$out" | sed "s/^/$1 nginx-$3 (ab): /" >>"$WORK/errors" || true
    sed -n 's/^Requests per second: *\([0-9.]*\).*/\1/p' <<<"$out"
}
measure() {  # SIDE: one line "name value" per workload
    local side=$1 prefix; prefix=$([ "$1" = vmsock ] && echo "$RUN" || true)
    read -r set get < <(redis_rps $side "$prefix" -n 100000)
    echo "redis-SET $set"; echo "redis-GET $get"
    read -r set get < <(redis_rps $side "$prefix" -n 1000000 -P 16)
    echo "redis-SET-P16 $set"; echo "redis-GET-P16 $get"
    echo "nginx-2-workers $(wrk_rps $side "$prefix" workers)"
    echo "nginx-1-process $(wrk_rps $side "$prefix" single)"
    echo "haproxy-to-nginx $(wrk_rps $side "$prefix" haproxy)"
    echo "nginx-1-process-ab $(ab_rps $side "$prefix" single)"
}

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores; $ROUNDS rounds"
for round in $(seq "$ROUNDS"); do
    if [ $((round % 2)) = 1 ]; then order="plain vmsock"; else order="vmsock plain"; fi
    for side in $order; do measure $side | sed "s/^/$round $side /" >>"$WORK/results"; done
    echo "round $round: $(grep "^$round " "$WORK/results" | awk '{printf "%s %s %.0f; ", $3, $2, $4}')"
done

# Which transport each side really used, from the --stats lines its processes print at exit (nginx's workers
# into their error_log). haproxy -db ends at SIGTERM without exit's handlers (the line is printed by one): its
# soft stop, SIGUSR1, goes first.
for pid in "${HAPROXIES[@]}"; do kill -USR1 "$pid" 2>/dev/null || true; done
for _ in $(seq 50); do
    alive=""
    for i in "${!HAPROXIES[@]}"; do kill -0 "${HAPROXIES[$i]}" 2>/dev/null && alive+=" $([ "$i" = 0 ] && echo plain || echo vmsock)"; done
    [ -z "$alive" ] && break
    sleep 0.1
done
if [ -n "$alive" ]; then
    # What it waits for, kept after the run: its threads' stacks, its descriptors and its sockets.
    stuck=$(mktemp /tmp/vmsock-bench-servers-haproxy.XXXXXX)
    for pid in "${HAPROXIES[@]}"; do
        kill -0 "$pid" 2>/dev/null || continue
        { echo "== haproxy $pid"; grep -E "State|Threads" "/proc/$pid/status"; ls -l "/proc/$pid/fd"
          ss -tanpe | grep "pid=$pid," || true
          command -v gdb >/dev/null && timeout 30 gdb -batch -p "$pid" -ex "thread apply all bt" 2>&1
          command -v gdb >/dev/null && timeout 60 gdb -batch -p "$pid" -x tools/preload-state.py 2>&1; } >>"$stuck"
    done
    echo "haproxy still ran 5 s after its soft stop (side:$alive): its counts are missing below; its state: $stuck"
fi
stop_servers
echo "transport, vmsock side: redis-server accepts $(transports accepts "$WORK/vmsock.redis.err");" \
    "nginx workers accept $(transports accepts "$WORK/nginx-vmsock-workers/error.log");" \
    "nginx one process accepts $(transports accepts "$WORK/nginx-vmsock-single/error.log" "$WORK/nginx-vmsock-single/master.err");" \
    "haproxy accepts $(transports accepts "$WORK/vmsock.haproxy.err"), connects $(transports connects "$WORK/vmsock.haproxy.err");" \
    "clients connect $(transports connects "$WORK/vmsock.clients.err")"
[ -s "$WORK/errors" ] && { echo "wrk reported errors (summed over rounds):"; sort "$WORK/errors" | uniq -c; }
python3 - "$WORK/results" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    r, side, name, value = line.split()
    rows.setdefault(name, {}).setdefault(int(r), {})[side] = float(value)
print("| workload | plain TCP, req/s | vmsock-run, req/s | vmsock-run / TCP (median, quartiles) | vmsock-run faster |")
print("|---|---|---|---|---|")
for name, rounds in rows.items():
    pairs = [(v["plain"], v["vmsock"]) for v in rounds.values() if "plain" in v and "vmsock" in v]
    ratios = sorted(b / a for a, b in pairs)
    q = lambda f: ratios[min(len(ratios) - 1, int(f * len(ratios)))]
    print("| %s | %.0f | %.0f | %.2fx (%.2f-%.2f) | %d of %d rounds |" % (
        name, statistics.median(a for a, _ in pairs), statistics.median(b for _, b in pairs),
        statistics.median(ratios), q(0.25), q(0.75), sum(b > a for a, b in pairs), len(pairs)))
EOF
