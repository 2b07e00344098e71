#!/bin/sh
# Shared memory through vmsock against a bare C ring, back to back, ROUNDS times per write size: is a low vmperf
# figure vmsock's, or the machine's at that moment? (This VM has minutes-long slow states; see README, Measured.)
# Usage: tools/bench-reference.sh [ROUNDS] [SIZES...]   (defaults: 5 rounds; 64 1024 65536 131072)
# Each line: size, the bare ring (CPUs 0 and 1, release stores, reader loads every line), vmperf (-A 0,1, 4 MiB
# rings, 1 s), vmperf's sleeps (sender/receiver), and the hypervisor's steal during the vmperf run.
set -eu
cd "$(dirname "$0")/.."
rounds=${1:-5}
[ $# -gt 0 ] && shift
sizes=${*:-64 1024 65536 131072}
swift build -c release --product vmperf >/dev/null
out=${TMPDIR:-/tmp}/vmsock-micro
mkdir -p "$out"
cc=$(command -v gcc || command -v cc) || { echo "tools/bench-reference.sh: no C compiler (apt-get install gcc)" >&2; exit 1; }
"$cc" -O2 -pthread -o "$out/ring64" tools/micro/ring64.c
port=$((20000 + $$ % 20000))
.build/release/vmperf -s -p "$port" -w 4M >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null' EXIT INT TERM
sleep 0.5
for round in $(seq "$rounds"); do
    for size in $sizes; do
        ring=$("$out/ring64" release "$size" | sed 's/.*: //')
        .build/release/vmperf -c 127.0.0.1 -p "$port" -A 0,1 -w 4M -l "$size" -t 1 -J | python3 -c '
import json, sys
d = json.load(sys.stdin)
if "error" in d: sys.exit("vmperf: " + d["error"])
e = d["end"]; v = e["vmsock"]; w = v.get("streams", [{}])[0]
print("%7s B  bare ring %-10s vmperf %6.2f GB/s  sleeps %s/%s  steal %.1f%%" % (sys.argv[1], sys.argv[2],
      e["sum_received"]["bits_per_second"] / 8e9, (w.get("sender_waits") or {}).get("write_sleeps"),
      (w.get("receiver_waits") or {}).get("read_sleeps"), v["steal_percent"]["host"] or 0))' "$size" "$ring"
    done
done
