#!/bin/sh
# vmperf's default run (no -A: the scheduler places the pump threads) against the pinned one (-A 0,1), in
# alternating order, at 1 KiB and 128 KiB writes over shared memory: how much does a user who does not pin lose?
# Issue 21 asks the default to stay within 0.8x of the pinned run. Prints one line per run and, per size, the
# median of the per-round ratios (default / pinned).
# Usage: tools/bench-pinning.sh [ROUNDS] [SECONDS]   (defaults: 5 rounds of 2 s runs; release build)
set -eu
cd "$(dirname "$0")/.."
rounds=${1:-5} seconds=${2:-2}
vmperf=.build/release/vmperf
[ -x "$vmperf" ] || swift build -c release --product vmperf >/dev/null
port=$((20000 + $$ % 20000))
"$vmperf" -s -p "$port" >/dev/null 2>&1 &
server=$!
results=$(mktemp)
trap 'kill $server 2>/dev/null; rm -f "$results"' EXIT INT TERM
for _ in $(seq 50); do ss -ltn | grep -q ":$port " && break; sleep 0.1; done
run() {  # size, then -A 0,1 or nothing: GB/s received
    size=$1
    shift
    "$vmperf" -c 127.0.0.1 -p "$port" "$@" -l "$size" -t "$seconds" -J | python3 -c '
import json, sys
d = json.load(sys.stdin)
if "error" in d: sys.exit("vmperf: " + d["error"])
print("%.2f" % (d["end"]["sum_received"]["bits_per_second"] / 8e9))'
}
for round in $(seq "$rounds"); do
    for size in 1K 128K; do
        if [ $((round % 2)) = 1 ]; then  # which goes first alternates too
            pinned=$(run "$size" -A 0,1)
            free=$(run "$size")
        else
            free=$(run "$size")
            pinned=$(run "$size" -A 0,1)
        fi
        echo "round $round, $size writes: pinned $pinned GB/s, default $free GB/s"
        echo "$size $pinned $free" >>"$results"
    done
done
python3 - "$results" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
for size in ("1K", "128K"):
    ratios = sorted(float(f) / float(p) for s, p, f in rows if s == size and float(p) > 0)
    print("%s writes: default / pinned, median %.2fx (from %.2fx to %.2fx over %d rounds)"
          % (size, statistics.median(ratios), ratios[0], ratios[-1], len(ratios)))
PY
