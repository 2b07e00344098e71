#!/bin/sh
# Connection set-up of two vmperf builds against each other (`vmperf --connections N`: a new link each, a reused
# link, TCP), in alternating order. Prints each run, then per round kind the medians of both builds, and the
# median within each build's runs of TCP's time over shared memory's: the figure issue 21's goals are about (at
# least 1.0x for a new link, 3x for a reused one), and the one the machine's changes of speed move least.
# Usage: tools/bench-connections.sh OLD NEW [ROUNDS] [N]   (defaults: 10 rounds, 3,000 connections a round)
# OLD and NEW are vmperf binaries (see tools/bench-ab.sh for building one of another commit). With
# CONNECTION_ROUNDS=new,tcp (say) each run makes only those kinds (`vmperf --connection-rounds`, which both must have).
set -eu
[ $# -ge 2 ] || { sed -n '2,8s/^# \{0,1\}//p' "$0" >&2; exit 1; }
old=$1 new=$2 rounds=${3:-10} count=${4:-3000}
for binary in "$old" "$new"; do
    [ -x "$binary" ] || { echo "tools/bench-connections.sh: $binary is not an executable vmperf" >&2; exit 1; }
done
results=$(mktemp)
trap 'rm -f "$results"' EXIT INT TERM
run() {  # ROUND NAME BINARY: one line "ROUND NAME new=µs reused=µs tcp=µs"
    figures=$("$3" --connections "$count" ${CONNECTION_ROUNDS:+--connection-rounds "$CONNECTION_ROUNDS"} | sed -n \
        -e 's/.*a new link each: [0-9]* (\([0-9.]*\) µs each.*/new=\1/p' \
        -e 's/.*on reused links: [0-9]* (\([0-9.]*\) µs each.*/reused=\1/p' \
        -e 's/.*over TCP: [0-9]* (\([0-9.]*\) µs each.*/tcp=\1/p' | tr '\n' ' ')
    # One figure per round asked for, or the run failed (vmperf said why on stderr).
    wanted=$(echo "${CONNECTION_ROUNDS:-new,reused,tcp}" | tr ',' '\n' | wc -l)
    if [ "$(echo $figures | wc -w)" -ne "$wanted" ]; then
        echo "tools/bench-connections.sh: $3 gave no figure for every round asked (${CONNECTION_ROUNDS:-all three})" >&2
        exit 1
    fi
    echo "$1 $2 $figures" | tee -a "$results"
}
for round in $(seq "$rounds"); do
    if [ $((round % 2)) = 1 ]; then run "$round" old "$old"; run "$round" new "$new"
    else run "$round" new "$new"; run "$round" old "$old"; fi
done
python3 - "$results" <<'PY'
import statistics, sys
runs = {"old": [], "new": []}
for line in open(sys.argv[1]):
    fields = line.split()
    runs[fields[1]].append({k: float(v) for k, v in (f.split("=") for f in fields[2:])})
for kind, name in (("new", "a new link each"), ("reused", "a reused link")):
    if not all(kind in r and "tcp" in r for r in runs["old"] + runs["new"]):
        continue  # a kind this run did not make
    old = statistics.median(r[kind] for r in runs["old"])
    new = statistics.median(r[kind] for r in runs["new"])
    ratio = lambda side: statistics.median(r["tcp"] / r[kind] for r in runs[side])
    print("%s: old %.1f µs, new %.1f µs (medians); TCP's time over it, within each run: old %.2fx, new %.2fx"
          % (name, old, new, ratio("old"), ratio("new")))
if all("tcp" in r for r in runs["old"] + runs["new"]):
  print("TCP: old %.1f µs, new %.1f µs (medians)" % (statistics.median(r["tcp"] for r in runs["old"]),
                                                   statistics.median(r["tcp"] for r in runs["new"])))
PY
