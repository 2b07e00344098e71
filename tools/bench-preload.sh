#!/usr/bin/env bash
# vmsock-run against plain TCP loopback, in one run (BENCHMARKS.md, "vmsock-run"): iperf3 at 128 KiB and 1 KiB
# writes, and sockperf's 64-byte ping-pong round trip. Release build: swift build -c release --product
# vmsock-preload and --product vmsock-run (BIN=.build/release by default). Prints one line per measurement.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.build/release}
RUN="$BIN/vmsock-run"
SECONDS_EACH=${SECONDS_EACH:-5}
[ -x "$RUN" ] || { echo "bench-preload: build $RUN first (release)" >&2; exit 1; }
command -v iperf3 >/dev/null && command -v sockperf >/dev/null || { echo "bench-preload: needs iperf3 and sockperf (tools/setup.sh)" >&2; exit 1; }
iperf() {  # $1: "" or the vmsock-run prefix, $2: write size, $3: port
    local prefix=$1 length=$2 port=$3
    $prefix iperf3 -s -1 -p $port >/dev/null 2>&1 &
    local server=$!
    sleep 1
    $prefix iperf3 -c 127.0.0.1 -p $port -t "$SECONDS_EACH" -l "$length" -J \
        | python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.2f" % (d["end"]["sum_received"]["bits_per_second"]/1e9))'
    wait $server 2>/dev/null || true
}

# --mps: sockperf sizes its table of sequence numbers by its message rate (600k/s unless told) and stops with
# "_seqN > m_maxSequenceNo" when the round trips come faster, as they do over shared memory.
pingpong() {  # $1: "" or the vmsock-run prefix, $2: port
    local prefix=$1 port=$2
    $prefix sockperf server -i 127.0.0.1 -p $port --tcp >/dev/null 2>&1 &
    local server=$!
    sleep 1
    $prefix sockperf ping-pong -i 127.0.0.1 -p $port --tcp -m 64 --mps 20000000 -t "$SECONDS_EACH" 2>&1 \
        | grep -o 'Latency is [0-9.]*' | grep -o '[0-9.]*$'
    kill $server 2>/dev/null; wait $server 2>/dev/null || true
}

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
for length in 128K 1K; do
    plain=$(iperf "" $length 5301)
    shm=$(iperf "$RUN" $length 5302)
    echo "iperf3 -l $length: plain TCP $plain Gbit/s, vmsock-run $shm Gbit/s"
done
# The ceiling at 128 KiB: a bare C ring between two pinned threads (tools/micro/ring64.c), one copy in and every
# line read once on the other core, less than iperf3's read, which copies out too. What this machine moves from one
# core to the other, in the same run.
if cc=$(command -v gcc || command -v cc); then
    "$cc" -O2 -pthread -o "${TMPDIR:-/tmp}/vmsock-ring64" tools/micro/ring64.c
    "${TMPDIR:-/tmp}/vmsock-ring64" release 131072 \
        | awk '{printf "bare C ring, 128 KiB messages (the ceiling): %s GB/s = %.1f Gbit/s\n", $(NF-1), $(NF-1) * 8}'
fi
plain=$(pingpong "" 5303)
shm=$(pingpong "$RUN" 5304)
echo "sockperf ping-pong 64 B (avg of RTT/2 as sockperf reports it): plain TCP $plain us, vmsock-run $shm us"
