#!/bin/sh
# Two vmperf builds against each other, over shared memory, in alternating order: is a change faster, or was the
# machine? This VM changes speed within seconds (see README, Measured), so single runs of each prove nothing; the
# median of the per-round ratios of many short back-to-back runs does.
# Usage: tools/bench-ab.sh OLD NEW [ROUNDS] [SIZE] [BYTES]   (defaults: 30 rounds, 64-byte writes, 400M a run)
# SIZE rtt compares 64-byte round trips instead (--latency, 2 s a run; mean in µs, so lower is better).
# OLD and NEW are vmperf binaries, e.g. a build of the main branch in a worktree:
#   git worktree add /tmp/old main && (cd /tmp/old && swift build -c release --product vmperf)
#   tools/bench-ab.sh /tmp/old/.build/release/vmperf .build/release/vmperf
# Each build talks to its own server (both ends are that build). Prints one line per round and a summary.
set -eu
[ $# -ge 2 ] || { sed -n '2,9s/^# \{0,1\}//p' "$0" >&2; exit 1; }
old=$1 new=$2 rounds=${3:-30} size=${4:-64} bytes=${5:-400M}
for binary in "$old" "$new"; do
    [ -x "$binary" ] || { echo "tools/bench-ab.sh: $binary is not an executable vmperf" >&2; exit 1; }
done
port=$((20000 + $$ % 20000))
"$old" -s -p "$port" -w 4M >/dev/null 2>&1 &
old_server=$!
"$new" -s -p $((port + 1)) -w 4M >/dev/null 2>&1 &
new_server=$!
trap 'kill $old_server $new_server 2>/dev/null' EXIT INT TERM
sleep 0.5
run() {  # binary port: GB/s received, or the mean round trip in µs
    if [ "$size" = rtt ]; then
        "$1" -c 127.0.0.1 -p "$2" -A 0,1 --latency -l 64 -t 2 -J | python3 -c '
import json, sys
d = json.load(sys.stdin)
if "error" in d: sys.exit("vmperf: " + d["error"])
print("%.3f" % d["end"]["latency"]["mean"])'
        return
    fi
    "$1" -c 127.0.0.1 -p "$2" -A 0,1 -w 4M -l "$size" -n "$bytes" -J | python3 -c '
import json, sys
d = json.load(sys.stdin)
if "error" in d: sys.exit("vmperf: " + d["error"])
print("%.3f" % (d["end"]["sum_received"]["bits_per_second"] / 8e9))'
}
results=$(mktemp)
trap 'kill $old_server $new_server 2>/dev/null; rm -f "$results"' EXIT INT TERM
for round in $(seq "$rounds"); do
    if [ $((round % 2)) = 0 ]; then
        a=$(run "$old" "$port"); b=$(run "$new" $((port + 1)))
    else
        b=$(run "$new" $((port + 1))); a=$(run "$old" "$port")
    fi
    echo "$a $b" >>"$results"
    echo "round $round: old $a, new $b $([ "$size" = rtt ] && echo µs || echo GB/s)"
done
python3 - "$results" "$size" <<'EOF'
import statistics, sys
rows = [tuple(map(float, line.split())) for line in open(sys.argv[1])]
faster = (lambda a, b: b < a) if sys.argv[2] == "rtt" else (lambda a, b: b > a)  # a round trip is better lower
ratios = sorted(b / a for a, b in rows)
q = lambda f: ratios[min(len(ratios) - 1, int(f * len(ratios)))]
print("old median %.3f, new median %.3f; new/old per round: median %.2f, quartiles %.2f-%.2f; "
      "new faster in %d of %d rounds" % (statistics.median(a for a, _ in rows), statistics.median(b for _, b in rows),
      statistics.median(ratios), q(0.25), q(0.75), sum(faster(a, b) for a, b in rows), len(rows)))
EOF
