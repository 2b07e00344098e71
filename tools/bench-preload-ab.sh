#!/usr/bin/env bash
# Two builds of vmsock-run's library against each other and plain TCP, in one run (BENCHMARKS.md, "nginx as a
# reverse proxy"): nginx as one process proxying to a back port of its own with a new upstream connection per
# request, asked by wrk (2 threads, 50 keep-alive connections), and ab without keep-alive (a new connection per
# request, one at a time) asking the back port. Each side has its own nginx for the whole run; its client runs the
# same way (plain, or under vmsock-run with VMSOCK_PRELOAD_LIBRARY set to OLD or NEW); the three sides alternate for
# ROUNDS rounds. Prints each side's median requests/s, and nginx's CPU per request (utime + stime) for the proxy.
# Usage: tools/bench-preload-ab.sh OLD-LIBRARY NEW-LIBRARY [ROUNDS]   (libvmsock-preload.so files; default 6 rounds)
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: tools/bench-preload-ab.sh OLD-LIBRARY NEW-LIBRARY [ROUNDS]" >&2; exit 2; }
for library in "$1" "$2"; do
    [ -r "$library" ] || { echo "tools/bench-preload-ab.sh: $library is not a readable library" >&2; exit 1; }
done
OLD=$(realpath "$1") NEW=$(realpath "$2") ROUNDS=${3:-6} SECONDS_EACH=${SECONDS_EACH:-3}
NAME=bench-preload-ab TOOLS="nginx wrk ab"
source "$(dirname "$0")/bench-servers-lib.sh"
RUN=${RUN% --stats}  # counts are not asked for here

head -c 1024 /dev/urandom >"$WORK/small.bin"
prefix() {  # SIDE
    case $1 in plain) ;; old) echo "env VMSOCK_PRELOAD_LIBRARY=$OLD $RUN" ;; new) echo "env VMSOCK_PRELOAD_LIBRARY=$NEW $RUN" ;; esac
}
for side in plain old new; do
    dir="$WORK/nginx-$side" back=$(free_port) front=$(free_port)
    mkdir -p "$dir/temp"
    interop/programs/nginx-conf.sh "$dir" "$back" "$WORK" "master_process off;" "keepalive_requests 1000000;
        server { listen 127.0.0.1:$front; location / { proxy_pass http://127.0.0.1:$back; } }" >"$dir/nginx.conf"
    $(prefix $side) nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" 2>"$dir/master.err" &
    SERVERS+=($!)
    eval "pid_$side=$! front_$side=$front back_$side=$back"
    wait_listening "$back"
    wait_listening "$front"
done

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
for round in $(seq "$ROUNDS"); do
    for side in plain old new; do
        pid=$(eval echo "\$pid_$side") front=$(eval echo "\$front_$side") back=$(eval echo "\$back_$side")
        before=$(ticks "$pid")
        out=$($(prefix $side) wrk -t 2 -c 50 -d "${SECONDS_EACH}s" "http://127.0.0.1:$front/small.bin" 2>/dev/null)
        after=$(ticks "$pid")
        requests=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' <<<"$out")
        ab=$($(prefix $side) ab -q -c 1 -t "$SECONDS_EACH" -n 100000000 "http://127.0.0.1:$back/small.bin" 2>/dev/null |
            sed -n 's/^Requests per second: *\([0-9.]*\).*/\1/p')
        echo "$side $((requests / SECONDS_EACH)) $(( (after - before) * 1000000000 / $(getconf CLK_TCK) / requests )) $ab" >>"$WORK/results"
    done
    echo "round $round done"
done
python3 - "$WORK/results" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    side, proxy, cpu, ab = line.split()
    rows.setdefault(side, []).append((float(proxy), float(cpu) / 1000, float(ab)))
print("| side | proxy, new upstream connection per request, requests/s | nginx CPU per request, µs | ab without keep-alive, requests/s |")
print("|---|---|---|---|")
for side in ("plain", "old", "new"):
    r = rows[side]
    print("| %s | %.0f | %.1f | %.0f |" % (side, statistics.median(x[0] for x in r), statistics.median(x[1] for x in r),
                                         statistics.median(x[2] for x in r)))
PY
