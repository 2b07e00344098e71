#!/usr/bin/env bash
# Shows that the C API's data calls (vmsock_write, vmsock_read) take no lock, allocate nothing and make no ARC
# traffic per call, as tools/check-data-path.sh shows for the Swift API: builds libvmsock.so in release, runs the
# C test program's pump (64 MiB each way in 64-byte calls, against a child process) under callgrind, and lists what
# vmsock_write and vmsock_read call. Fails if a runtime call (retain, release, allocation, malloc, a mutex, an
# exclusivity check, swift_once) is among them, or if a function it looks for is not in the profile.
#
#   tools/check-capi-data-path.sh            (SCRATCH=.build-mine tools/check-capi-data-path.sh: another scratch path)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
scratch=${SCRATCH:-.build}
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
swift build --scratch-path "$scratch" -c release --product vmsock >/dev/null
lib=$(cd "$scratch/release" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Valgrind 3.19 cannot read this toolchain's debug info: a copy of the library without it (symbols stay).
cp "$lib/libvmsock.so" "$work/"
objcopy --strip-debug "$work/libvmsock.so"
cc -std=c11 -O2 -I Sources/CVMSockAPI/include interop/capi/capi_test.c -L "$work" -lvmsock -Wl,-rpath,"$work" \
    -lpthread -o "$work/capi_test"

status=0
for direction in write read; do
    "$work/capi_test" pump "$direction" $((64 << 20)) 64   # the rate, without valgrind
    valgrind --tool=callgrind --callgrind-out-file="$work/$direction.out" "$work/capi_test" pump "$direction" \
        $((8 << 20)) 64 >/dev/null 2>"$work/valgrind.log" || { cat "$work/valgrind.log"; status=1; }
    callgrind_annotate --tree=calling --inclusive=yes "$work/$direction.out" >"$work/tree.txt" 2>/dev/null
    fn="vmsock_$direction"
    grep -q "\* .*$fn " "$work/tree.txt" || { echo "FAIL: $fn is not in the profile: nothing was checked"; status=1; }
    # What the entry point and every C-API function under it call (the exports, the handle table, their closures;
    # the compiler may merge cRead and cWrite into one function): everything but the engine's own code. The
    # set-up calls the program made once (accept, listen, addresses) are left out: they share merged thunks with
    # the data calls (withConnection's and withListener's), so callgrind's tree shows them under those.
    awk '/^ *[0-9,]+ .* \* / { on = ($0 ~ /vmsock_(read|write) |VMSockCAPI|VMSockHandles/) &&
                                    $0 !~ /cAccept|cListen|cConnect|cLocalAddress|cPeerAddress|withListener/
                              if (on) print "--" $0; next }
         on && /^ *[0-9,]+ .* > / { print }' "$work/tree.txt" \
        | sed -e 's/ \[.*//' -e 's/^ *[0-9,]* ([ 0-9.%]*) *> *//' -e 's/^--.*\* */in /' >"$work/callees.txt"
    echo "== $fn: what the C API's functions call (count in parentheses; 131,072 calls were made):"
    cat "$work/callees.txt"
    if grep -E 'swift_retain|swift_release|swift_allocObject|malloc|swift_beginAccess|pthread_mutex|swift_once' \
        "$work/callees.txt"; then
        echo "FAIL: runtime calls on the C API's data path (above)"
        status=1
    fi
done
[ "$status" = 0 ] && echo "check-capi-data-path: vmsock_write and vmsock_read make no runtime calls"
exit "$status"
