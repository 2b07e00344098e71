#!/usr/bin/env bash
# The figures in README.md. Release build; each configuration runs RUNS times (default 5) and the median, min and
# max are printed, because this VM's figures move from run to run by a factor of two or more.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
tools/setup.sh
swift build -c release --product vmsock-demo >/dev/null
demo=.build/release/vmsock-demo
runs=${RUNS:-5}

# Prints "median min max" of the numbers on stdin.
summary() { sort -g | awk '{ v[NR] = $1 } END { printf "%8.2f %8.2f %8.2f\n", v[int((NR + 1) / 2)], v[1], v[NR] }'; }

echo "machine: $(nproc) cores, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "runs per row: $runs"
echo
printf "%-52s %8s %8s %8s\n" "streaming, 1 s each (GB/s)" median min max
for config in "64 " "1024 " "65536 " "131072 " "65536 --in-place"; do
    set -- $config
    label="$1-byte writes, 256 KiB ring, reader copying"
    if [ -n "${2:-}" ]; then label="$1-byte writes, 256 KiB ring, reader in place"; fi
    for _ in $(seq "$runs"); do
        "$demo" --seconds 1 --write-size "$1" ${2:-} --round-trips 1000 | sed -n 's/.*: \([0-9.]*\) GB\/s.*/\1/p'
    done | summary | xargs printf "%-52s %8s %8s %8s\n" "$label"
done
echo
printf "%-52s %8s %8s %8s\n" "64-byte round trip (µs)" median min max
for spin in 50 0; do
    label="spin ${spin} µs"
    if [ "$spin" = 0 ]; then label="$label: every wait sleeps on its doorbell"; fi
    for _ in $(seq "$runs"); do
        "$demo" --seconds 0.2 --round-trips 100000 --spin-us "$spin" | sed -n 's/.*round trip: \([0-9.]*\) .*/\1/p'
    done | summary | xargs printf "%-52s %8s %8s %8s\n" "$label"
done
echo
printf "%-52s %8s %8s %8s\n" "connections per second (connect, 1 B each way, close)" median min max
for transport in "shared memory" "TCP"; do
    for _ in $(seq "$runs"); do
        "$demo" --connections 2000 | sed -n "s/connections per second over $transport: \([0-9]*\) .*/\1/p"
    done | summary | xargs printf "%-52s %8s %8s %8s\n" "$transport"
done
