#!/usr/bin/env bash
# vmcat against OpenBSD nc: GIB GiB (default 1) from a file into /dev/null, in one run, ROUNDS times (default 3),
# the tools alternating. Release build. Both pipelines are the same shape:
#   <tool> -N 127.0.0.1 PORT < FILE      (sender)      <tool> -d -l 127.0.0.1 PORT > /dev/null      (receiver)
# and the time is from starting the sender to both ends having exited. PIPE=1 feeds the sender from
# `head -c` through a pipe instead of a file. OLD=path/to/vmcat adds another vmcat build to the rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
command -v nc >/dev/null || tools/setup.sh
swift build -c release --product vmcat >/dev/null
vmcat=.build/release/vmcat
gib=${GIB:-1}
rounds=${ROUNDS:-3}
bytes=$((gib << 30))
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
head -c "$bytes" /dev/zero >"$work/file"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# $1: label; $2: the receiver command (PORT in it); $3: the sender command.
run() {
    local label=$1 p receiver start end
    p=$(port)
    bash -c "${2//PORT/$p}" >/dev/null &
    receiver=$!
    while ! ss -ltn | grep -q "127.0.0.1:$p "; do sleep 0.05; done
    start=$(date +%s%N)
    if [ "${PIPE:-0}" = 1 ]; then
        head -c "$bytes" /dev/zero | bash -c "${3//PORT/$p}"
    else
        bash -c "${3//PORT/$p}" <"$work/file"
    fi
    wait "$receiver"
    end=$(date +%s%N)
    awk -v ns=$((end - start)) -v b="$bytes" -v l="$label" \
        'BEGIN { printf "%-44s %6.3f s %6.2f GB/s\n", l, ns / 1e9, b / ns }'
}

echo "machine: $(nproc) cores, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "moving $gib GiB from $([ "${PIPE:-0}" = 1 ] && echo "head -c through a pipe" || echo "a file") into /dev/null"
for round in $(seq "$rounds"); do
    run "vmcat, shared memory" "$vmcat -d -l 127.0.0.1 PORT" "$vmcat -N 127.0.0.1 PORT"
    [ -n "${OLD:-}" ] && run "vmcat (OLD), shared memory" "$OLD -d -l 127.0.0.1 PORT" "$OLD -N 127.0.0.1 PORT"
    run "vmcat --transport tcp, TCP loopback" "$vmcat -d -l 127.0.0.1 PORT" "$vmcat -N --transport tcp 127.0.0.1 PORT"
    run "nc (OpenBSD), TCP loopback" "nc -d -l 127.0.0.1 PORT" "nc -N 127.0.0.1 PORT"
done
