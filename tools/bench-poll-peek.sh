#!/usr/bin/env bash
# How long a poll's spin on an idle shared-memory connection holds back another descriptor's event: round trips
# through pipes to a child while the same poll also waits on a connection that never becomes readable
# (tools/micro/poll-peek.c), plain and under vmsock-run with two builds of its library, alternating for ROUNDS
# rounds of 5,000 round trips. Prints each run's median and 90th percentile.
# Usage: tools/bench-poll-peek.sh OLD-LIBRARY NEW-LIBRARY [ROUNDS]   (libvmsock-preload.so files; default 3 rounds)
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: tools/bench-poll-peek.sh OLD-LIBRARY NEW-LIBRARY [ROUNDS]" >&2; exit 2; }
for library in "$1" "$2"; do
    [ -r "$library" ] || { echo "tools/bench-poll-peek.sh: $library is not a readable library" >&2; exit 1; }
done
OLD=$(realpath "$1") NEW=$(realpath "$2") ROUNDS=${3:-3}
cd "$(dirname "$0")/.."
RUN=.build/release/vmsock-run
[ -x "$RUN" ] || { echo "tools/bench-poll-peek.sh: build it first: swift build -c release --product vmsock-run" >&2; exit 1; }
cc=$(command -v gcc || command -v cc) || { echo "tools/bench-poll-peek.sh: no C compiler (apt-get install gcc)" >&2; exit 1; }
work=$(mktemp -d)
server=
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT INT TERM
"$cc" -O2 -o "$work/poll-peek" tools/micro/poll-peek.c
# The idle server: accepts and holds its connections, under vmsock-run (the new library) so that they are shared
# memory for the clients under vmsock-run.
VMSOCK_PRELOAD_LIBRARY=$NEW "$RUN" python3 -c '
import socket, sys
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(16)
print(listener.getsockname()[1], flush=True)
held = []
while True:
    held.append(listener.accept()[0])
' >"$work/port" &
server=$!
for _ in $(seq 50); do [ -s "$work/port" ] && break; sleep 0.1; done
port=$(cat "$work/port")
[ -n "$port" ] || { echo "tools/bench-poll-peek.sh: the idle server did not start" >&2; exit 1; }
for round in $(seq "$ROUNDS"); do
    echo "round $round: plain: $("$work/poll-peek" "$port" 5000)"
    echo "round $round: old:   $(VMSOCK_PRELOAD_LIBRARY=$OLD "$RUN" "$work/poll-peek" "$port" 5000)"
    echo "round $round: new:   $(VMSOCK_PRELOAD_LIBRARY=$NEW "$RUN" "$work/poll-peek" "$port" 5000)"
done
