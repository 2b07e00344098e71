#!/usr/bin/env bash
# Shows that read and write do no allocation, no ARC traffic, no lock and no exclusivity check per call: runs the
# release test peer under callgrind (64 MiB each way in random 1 B..1 MiB chunks against a native peer) and lists
# what SharedMemoryStream.write and .read call. Fails if any of those runtime calls appear among them.
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
callgrind_annotate --tree=calling --inclusive=yes "$work/cg.out" >"$work/tree.txt" 2>/dev/null
status=0
# The engine's calls, and the facade's (VMSocket dispatches to the shared-memory or the TCP engine), when the
# facade is not inlined into its caller.
for fn in SharedMemoryStreamC5write SharedMemoryStreamC4read4into VMSocketC5write VMSocketC4read4into VMSocketC4read4intoSiSw_tAA0A5ErrorVYKFTm; do
    echo "== what $fn calls (count in parentheses):"
    awk -v fn="$fn" '$0 ~ "\\* .*"fn { on = 1; next } on && /^ *[0-9,]+ .* > / { print; next } on { exit }' "$work/tree.txt" \
        | sed -e 's/ \[.*//' -e 's/^ *[0-9,]* ([ 0-9.%]*) *> *//' | tee "$work/callees.txt"
    if grep -E 'swift_retain|swift_release|swift_allocObject|malloc|swift_beginAccess|pthread_mutex' "$work/callees.txt"; then
        echo "FAIL: runtime calls on the data path (above)"
        status=1
    fi
done
[ $status = 0 ] && echo "ok: no allocation, ARC, lock or exclusivity call in read or write"
exit $status
