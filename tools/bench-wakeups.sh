#!/bin/sh
# Doorbell rings, sleeps and throughput of two vmperf builds, in alternating order (as tools/bench-ab.sh): what
# ringing once per announcement saves. Each run is 1 s of 1 KiB writes over shared memory, with --spin-us 0
# (every wait sleeps) and at the default spin.
# Usage: tools/bench-wakeups.sh OLD NEW [ROUNDS]   (default 10 rounds; OLD and NEW are vmperf binaries)
# Prints one line per run and, per build and spin, the medians: rings a second (data and space, both sides),
# sleeps a second (both sides), GB/s received.
set -eu
[ $# -ge 2 ] || { sed -n '2,7s/^# \{0,1\}//p' "$0" >&2; exit 1; }
old=$1 new=$2 rounds=${3:-10}
for binary in "$old" "$new"; do
    [ -x "$binary" ] || { echo "tools/bench-wakeups.sh: $binary is not an executable vmperf" >&2; exit 1; }
done
port=$((20000 + $$ % 20000))
"$old" -s -p "$port" >/dev/null 2>&1 &
old_server=$!
"$new" -s -p $((port + 1)) >/dev/null 2>&1 &
new_server=$!
results=$(mktemp)
trap 'kill $old_server $new_server 2>/dev/null; rm -f "$results"' EXIT INT TERM
sleep 0.5
run() {  # label binary port spin: one line "label spin rings sleeps GB/s"
    spin_flag=""
    [ "$4" = default ] || spin_flag="--spin-us $4"
    # shellcheck disable=SC2086
    "$2" -c 127.0.0.1 -p "$3" -l 1K -t 1 $spin_flag -J | python3 -c '
import json, sys
d = json.load(sys.stdin)
if "error" in d: sys.exit("vmperf: " + d["error"])
rings = sleeps = 0
for s in d["end"]["vmsock"]["streams"]:
    for side in ("sender_waits", "receiver_waits"):
        w = s[side]
        rings += w["data_rings"] + w["space_rings"]
        sleeps += w["read_sleeps"] + w["write_sleeps"]
seconds = d["end"]["sum_received"]["seconds"]
print("%s %s %d %d %.3f" % (sys.argv[1], sys.argv[2], rings / seconds, sleeps / seconds,
                            d["end"]["sum_received"]["bits_per_second"] / 8e9))' "$1" "$4"
}
for round in $(seq "$rounds"); do
    for spin in 0 default; do
        if [ $((round % 2)) = 0 ]; then
            run old "$old" "$port" $spin; run new "$new" $((port + 1)) $spin
        else
            run new "$new" $((port + 1)) $spin; run old "$old" "$port" $spin
        fi
    done
done | tee "$results"
python3 - "$results" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
for spin in ("0", "default"):
    for build in ("old", "new"):
        mine = [r for r in rows if r[0] == build and r[1] == spin]
        med = lambda i: statistics.median(float(r[i]) for r in mine)
        print("spin %-7s %s: rings/s %9.0f  sleeps/s %7.0f  GB/s %.3f  (median of %d)"
              % (spin, build, med(2), med(3), med(4), len(mine)))
PY
