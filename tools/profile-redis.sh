#!/usr/bin/env bash
# How far pipelining can take redis on this machine (issue 19; BENCHMARKS.md, "How far pipelining can go here"):
# the share of a plain redis-server's time spent in system calls under redis-benchmark -P 16 SET, from a perf
# profile. A transport can at most save that share, so 1 / (1 - share) bounds what any transport gains over TCP.
# Usage: tools/profile-redis.sh [REQUESTS]   (default 1000000; root or perf_event_paranoid <= 1 for perf)
set -euo pipefail
REQUESTS=${1:-1000000}
NAME=profile-redis TOOLS="redis-server redis-benchmark perf" BUILD=0
source "$(dirname "$0")/bench-servers-lib.sh"
port=$(free_port)
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no --dir "$WORK" \
    --logfile "$WORK/redis.log" &
SERVERS+=($!)
wait_listening "$port"
redis-benchmark -p "$port" -c 50 -n 100000 -P 16 -t set -q >/dev/null  # warm up
perf record -g -o "$WORK/perf.data" -p "${SERVERS[0]}" 2>"$WORK/perf.err" &
recorder=$!
sleep 0.5
redis-benchmark -p "$port" -c 50 -n "$REQUESTS" -P 16 -t set --csv | tail -n 1
kill -INT "$recorder"
wait "$recorder" || true
share=$(perf report -i "$WORK/perf.data" --children --sort sym 2>/dev/null \
    | awk '/\[k\] entry_SYSCALL_64_after_hwframe/ && !found { sub("%", "", $1); print $1; found = 1 }')
[ -n "$share" ] || { echo "$NAME: no system-call entry in the profile" >&2; exit 1; }
python3 -c "s = $share / 100; print('system calls: %.1f%% of redis-server samples; a transport that cost nothing would give at most %.2fx' % (s * 100, 1 / (1 - s)))"
