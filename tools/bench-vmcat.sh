#!/usr/bin/env bash
# The vmcat figures in README.md: 4 GiB (GIB=4) from `head -c` through vmcat over shared memory, then through
# OpenBSD nc over TCP loopback, into /dev/null, in one run. Release build. Both pipelines are the same shape:
#   head -c 4G /dev/zero | <tool> -N 127.0.0.1 PORT      (sender)      <tool> -l 127.0.0.1 PORT >/dev/null (receiver)
# and the time is from starting the sender to both ends having exited.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
command -v nc >/dev/null || tools/setup.sh
swift build -c release --product vmcat >/dev/null
vmcat=.build/release/vmcat
gib=${GIB:-4}
bytes=$((gib << 30))
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# $1: label; $2: the receiver command (PORT in it); $3: the sender command.
run() {
    local label=$1 p receiver start end
    p=$(port)
    bash -c "${2//PORT/$p}" >/dev/null &
    receiver=$!
    while ! ss -ltn | grep -q "127.0.0.1:$p "; do sleep 0.05; done
    start=$(date +%s%N)
    head -c "$bytes" /dev/zero | bash -c "${3//PORT/$p}"
    wait "$receiver"
    end=$(date +%s%N)
    awk -v ns=$((end - start)) -v b="$bytes" -v l="$label" \
        'BEGIN { printf "%-40s %6.2f s %6.2f GB/s\n", l, ns / 1e9, b / ns }'
}

echo "machine: $(nproc) cores, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "moving $gib GiB from head -c into /dev/null"
run "vmcat, shared memory" "$vmcat -d -l 127.0.0.1 PORT" "$vmcat -N 127.0.0.1 PORT"
run "vmcat --transport tcp, TCP loopback" "$vmcat -d -l 127.0.0.1 PORT" "$vmcat -N --transport tcp 127.0.0.1 PORT"
run "nc (OpenBSD), TCP loopback" "nc -d -l 127.0.0.1 PORT" "nc -N 127.0.0.1 PORT"
