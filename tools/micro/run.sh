#!/bin/sh
# Micro-benchmarks in C behind README figures: what each set-up step costs (and each call a reused link's
# connection makes), and what a fence per publish (or 20 more stores that hit the cache) costs a ring of 64-byte
# messages. Needs a C compiler (gcc or cc). This VM's figures move between runs: run it a few times.
# `tools/micro/run.sh floor [N [ROUNDS]]` runs only setup-floor.c instead: the least a first memfd connection
# between two processes costs, answered and pipelined, against a TCP one, alternating in one run.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${TMPDIR:-/tmp}/vmsock-micro
mkdir -p "$out"
cc=$(command -v gcc || command -v cc) || { echo "tools/micro/run.sh: no C compiler (apt-get install gcc)" >&2; exit 1; }
if [ "${1:-}" = floor ]; then
    "$cc" -O2 -o "$out/setup-floor" "$here/setup-floor.c"
    exec "$out/setup-floor" "${2:-200}" "${3:-30}"
fi
"$cc" -O2 -o "$out/setup-costs" "$here/setup-costs.c"
"$cc" -O2 -pthread -o "$out/ring64" "$here/ring64.c"
"$out/setup-costs"
for round in 1 2 3; do "$out/ring64" release; "$out/ring64" fenced; "$out/ring64" release 64 20; done
# The same ring with the message sizes of vmperf --compare: what the machine gives right now, for reference.
for size in 1024 65536 131072; do "$out/ring64" release $size; done
