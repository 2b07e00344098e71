#!/usr/bin/env bash
# The figures in README.md (Measured). Release build of vmperf; each configuration runs RUNS times (default 5) and
# the median, min and max are printed, because this VM's figures move from run to run by a factor of two or more.
# Streaming and round trips go through a vmperf server (shared memory, 256 KiB rings, the library's default; the
# reader counts the bytes where they lie, as vmperf always does), client streams on CPU 0 and server streams on
# CPU 1 as in vmperf --compare (unpinned, the scheduler now and then puts both spinning threads on one core: the
# round trip measured 6 µs instead of 0.2); set-up is vmperf --connections.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
tools/setup.sh
swift build -c release --product vmperf >/dev/null
vmperf=.build/release/vmperf
runs=${RUNS:-5}
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$vmperf" -s -p "$port" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT INT TERM
sleep 0.5

# Prints "median min max" of the numbers on stdin.
summary() { sort -g | awk '{ v[NR] = $1 } END { printf "%8.2f %8.2f %8.2f\n", v[int((NR + 1) / 2)], v[1], v[NR] }'; }
# Reads vmperf's -J document on stdin and prints the figure the Python expression picks from it (d: the document).
pick() { python3 -c '
import json, sys
d = json.load(sys.stdin)
if "error" in d: sys.exit("vmperf: " + d["error"])
print(eval(sys.argv[1]))' "$1"; }
pin=()
[ "$(nproc)" -ge 2 ] && pin=(-A 0,1)
client() { "$vmperf" -c 127.0.0.1 -p "$port" --transport shm -w 256K -i 0 "${pin[@]}" -J "$@"; }

echo "machine: $(nproc) cores, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "runs per row: $runs"
echo
printf "%-56s %8s %8s %8s\n" "streaming, 1 s each (GB/s)" median min max
for size in 64 1024 65536 131072; do
    for _ in $(seq "$runs"); do
        client -l "$size" -t 1 | pick 'd["end"]["sum_received"]["bits_per_second"] / 8e9'
    done | summary | xargs printf "%-56s %8s %8s %8s\n" "$size-byte writes, 256 KiB ring"
done
echo
printf "%-56s %8s %8s %8s\n" "64-byte round trip, 1 s each (µs)" median min max
for spin in 50 0; do
    label="spin ${spin} µs"
    if [ "$spin" = 0 ]; then label="$label: every wait sleeps on its doorbell"; fi
    for _ in $(seq "$runs"); do
        client --latency -l 64 -t 1 --spin-us "$spin" | pick 'd["end"]["latency"]["mean"]'
    done | summary | xargs printf "%-56s %8s %8s %8s\n" "$label"
done
echo
printf "%-56s %8s %8s %8s\n" "connections per second (connect, 1 B each way, close)" median min max
labels=("shared memory, a new link each" "shared memory, reopening the link" "TCP")
for round in 0 1 2; do
    for _ in $(seq "$runs"); do
        "$vmperf" --connections 2000 -J | pick "d['connections']['rounds'][$round]['connections_per_second']"
    done | summary | xargs printf "%-56s %8s %8s %8s\n" "${labels[$round]}"
done
