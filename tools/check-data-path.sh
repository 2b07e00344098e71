#!/usr/bin/env bash
# Shows that read and write do no allocation, no ARC traffic, no lock and no exclusivity check per call: runs the
# release test peer under callgrind (64 MiB each way in random 1 B..1 MiB chunks against a native peer) and lists
# what the loops around write and read call (the hot calls are inlined into their callers, down to the ring).
# Fails if any of those runtime calls appear among them, or if a function it looks for is not there to look at.
# Valgrind 3.19 cannot read this toolchain's debug info, so the binary is copied with it stripped (symbols stay).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
tools/setup.sh
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
swift build -c release --product vmsock-testpeer >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"; pkill -x tp-stripped 2>/dev/null || true' EXIT
cp .build/release/vmsock-testpeer "$work/tp-stripped"
objcopy --strip-debug "$work/tp-stripped"
name=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$work/tp-stripped" stream-listen "$name" 67108864 262144 3 >/dev/null &
sleep 0.5
valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" "$work/tp-stripped" stream-connect "$name" 67108864 262144 3 \
    >/dev/null 2>"$work/valgrind.log"
wait
callgrind_annotate --tree=calling --inclusive=yes --threshold=100 "$work/cg.out" >"$work/tree.txt" 2>/dev/null
status=0
# The loops that write and read: VMSocket.writeAll (write is inlined into it) and the test peer's receive loop
# (read is inlined into it); and what the hot calls call when the ring is full or empty, or the peer sleeps.
for fn in VMSocketC8writeAllyySW 11PatternPumpO7receive SharedMemoryStreamC13awaitWritable SharedMemoryStreamC13awaitReadable \
          SharedMemoryStreamC12afterConsume SharedMemoryStreamC13writeFullPath SharedMemoryStreamC12readFullPath; do
    echo "== what $fn calls (count in parentheses):"
    awk -v fn="$fn" '$0 ~ "\\* .*"fn { on = 1; next } on && /^ *[0-9,]+ .* > / { print; next } on { exit }' "$work/tree.txt" \
        | sed -e 's/ \[.*//' -e 's/^ *[0-9,]* ([ 0-9.%]*) *> *//' | tee "$work/callees.txt"
    if [ ! -s "$work/callees.txt" ]; then
        echo "FAIL: $fn is not in the profile (renamed, or inlined into its caller): nothing was checked"
        status=1
    fi
    if grep -E 'swift_retain|swift_release|swift_allocObject|malloc|swift_beginAccess|pthread_mutex' "$work/callees.txt"; then
        echo "FAIL: runtime calls on the data path (above)"
        status=1
    fi
done

# vmperf's pumps, which go through the zero-copy calls (writeInPlace, readInPlace): 8 MiB in 64-byte blocks from
# a client under callgrind to a plain server (Pump.send), then back (-R: Pump.receive).
swift build -c release --product vmperf >/dev/null
cp .build/release/vmperf "$work/vmperf-stripped"
objcopy --strip-debug "$work/vmperf-stripped"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$work/vmperf-stripped" -s -p "$port" >/dev/null &
server=$!
sleep 0.5
for direction in send receive; do
    flags=(-c 127.0.0.1 -p "$port" -n 8M -l 64 --transport shm -i 0)
    [ $direction = receive ] && flags+=(-R)
    valgrind --tool=callgrind --callgrind-out-file="$work/vmperf-$direction.out" "$work/vmperf-stripped" "${flags[@]}" \
        >/dev/null 2>"$work/valgrind.log" || { cat "$work/valgrind.log"; status=1; }
    callgrind_annotate --tree=calling --inclusive=yes "$work/vmperf-$direction.out" >"$work/tree.txt" 2>/dev/null
    # The send pump specialized for VMSocket (writeInPlace inlined), or VMSocket's receive(scratch:) (readInPlace
    # inlined; the receive pump is inlined into its caller).
    fn="4Pump.*4send.*VMSocket"
    [ $direction = receive ] && fn="VMSocket.*ByteStream.*7receive7scratch.*TW"
    awk -v fn="$fn" '$0 ~ "\\* .*"fn { on = 1; next } on && /^ *[0-9,]+ .* > / { print; next } on { exit }' "$work/tree.txt" \
        | sed -e 's/ \[.*//' -e 's/^ *[0-9,]* ([ 0-9.%]*) *> *//' >"$work/callees.txt"
    echo "== vmperf $direction: what $fn calls:"
    if [ ! -s "$work/callees.txt" ]; then
        echo "FAIL: $fn is not in the profile (renamed, or inlined into its caller): nothing was checked"
        status=1
    fi
    cat "$work/callees.txt"
    if grep -E 'swift_retain|swift_release|swift_allocObject|malloc|swift_beginAccess|pthread_mutex' "$work/callees.txt"; then
        echo "FAIL: runtime calls on vmperf's data path (above)"
        status=1
    fi
    # 131,072 blocks go through each pump: anything but the copy called 10,000 times or more is a call per block
    # (a getter that stopped being inlined, a protocol call), which at 64-byte writes costs a fifth of the rate.
    if grep -v -E 'memcpy|memmove' "$work/callees.txt" | grep -E '\(([0-9]{2},[0-9]{3}|[0-9]{3},[0-9]{3}|[0-9,]{9,})x\)'; then
        echo "FAIL: a call per block on vmperf's data path (above)"
        status=1
    fi
done
kill "$server" 2>/dev/null || true
wait "$server" 2>/dev/null || true
[ $status = 0 ] && echo "ok: no allocation, ARC, lock or exclusivity call in read, write or vmperf's pumps"
exit $status
