#!/usr/bin/env bash
# The test command (README): set-up, debug build, every XCTest, the interop tests against nc, socat and friends
# (interop/run.sh), every fuzz target briefly (tools/fuzz.sh), the chaos soak, the XCTests under AddressSanitizer
# (tools/sanitize.sh), then a check that no test left anything behind.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
tools/setup.sh
swift build --build-tests
# The suites are XCTest; without the flag Swift Testing closes the output with a line about its own zero tests.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
swift test --disable-swift-testing 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
summary=$(grep -E "Executed [0-9]+ tests?, with [0-9]+ failures?" "$log" | tail -1)
total=$(echo "$summary" | sed -E 's/.*Executed ([0-9]+) tests?.*/\1/')
failed=$(echo "$summary" | sed -E 's/.*with ([0-9]+) failures?.*/\1/')

# The documents stay true to the tree: the folder map, the peer-check pointers, the status figures.
docs_status=0
tools/check-docs.sh || docs_status=1

interop_status=0
interop_log=$(mktemp)
interop/run.sh | tee "$interop_log" || interop_status=1
interop_summary=$(tail -1 "$interop_log")
rm -f "$interop_log"

# Every fuzz target for a few seconds from its seeds (docs/FUZZING.md): a parser that crashes on its seeds or on
# what the fuzzer makes of them in that time fails the run. Long runs are `tools/fuzz.sh [SECONDS]`, by hand.
fuzz_status=0
fuzz_log=$(mktemp)
tools/fuzz.sh 6 | tee "$fuzz_log" || fuzz_status=1
fuzz_summary="fuzz: $(grep ' runs ' "$fuzz_log" | grep -c ' ok$' || true) of $(grep -c ' runs ' "$fuzz_log" || true) targets ok"
rm -f "$fuzz_log"

# The chaos soak (tools/soak.sh): SOAK_MINUTES of connections over both transports with kills and hostile
# peers, every invariant checked; 0 leaves it out. Three run at once, each with its own server and clients: each
# then runs on a machine the other two keep busy, where races show that one soak alone seldom meets.
soak_status=0
soak_summary="soak: not run"
if [ "${SOAK_MINUTES:-2}" != 0 ]; then
    swift build --product vmsock-testpeer >/dev/null
    soak_logs=() soak_pids=()
    for _ in 1 2 3; do
        soak_logs+=("$(mktemp)")
        tools/soak.sh "${SOAK_MINUTES:-2}" > "${soak_logs[-1]}" 2>&1 &
        soak_pids+=($!)
    done
    for i in 0 1 2; do
        if wait "${soak_pids[$i]}"; then
            grep -h "^soak:" "${soak_logs[$i]}" || true
        else
            soak_status=1
            echo "soak $((i + 1)) of 3 failed; its output:"
            cat "${soak_logs[$i]}"
        fi
    done
    soak_summary="soak: 3 at once, ${SOAK_MINUTES:-2} min: $(cat "${soak_logs[@]}" | awk '/^soak: [0-9.]+ min:/ \
        { c += $4; k++ } END { printf "%d of 3 held, %d connections", k, c }')"
    if [ "$soak_status" != 0 ]; then
        soak_summary="soak: FAILED: $(grep -h "INVARIANT" "${soak_logs[@]}" | head -1 | cut -c1-160 || true)"
    fi
    rm -f "${soak_logs[@]}"
fi

# The XCTests again under AddressSanitizer and LeakSanitizer (tools/sanitize.sh address, about 4 minutes here):
# any report fails the run. SANITIZE=thread runs ThreadSanitizer instead (about 5 minutes), SANITIZE=0 neither.
sanitize_status=0
sanitize_summary="sanitize: not run"
if [ "${SANITIZE:-address}" != 0 ]; then
    sanitize_log=$(mktemp)
    tools/sanitize.sh "${SANITIZE:-address}" 2>&1 | tee "$sanitize_log" || sanitize_status=1
    sanitize_summary=$(grep -E "^sanitize: " "$sanitize_log" | tail -1)
    rm -f "$sanitize_log"
fi

# Tests stop what they start and free what they map; say so loudly if one did not.
left=0
if pgrep -x vmsock-testpeer >/dev/null; then
    echo "test.sh: vmsock-testpeer processes were left running:" >&2
    pgrep -a -x vmsock-testpeer >&2
    pkill -9 -x vmsock-testpeer || true
    left=1
fi
if pgrep -x vmperf >/dev/null; then
    echo "test.sh: vmperf processes were left running:" >&2
    pgrep -a -x vmperf >&2
    left=1
fi
if pgrep -x vmsockd >/dev/null; then
    echo "test.sh: vmsockd processes were left running:" >&2
    pgrep -a -x vmsockd >&2
    left=1
fi
if pgrep -x vmcat >/dev/null; then
    echo "test.sh: vmcat processes were left running:" >&2
    pgrep -a -x vmcat >&2
    left=1
fi
if ls /dev/shm 2>/dev/null | grep -q -i vmsock; then
    echo "test.sh: files were left in /dev/shm: $(ls /dev/shm | grep -i vmsock)" >&2
    left=1
fi
if [ -z "$summary" ]; then
    echo "test.sh: swift test printed no XCTest summary (exit $status)" >&2
    exit 1
fi
if grep -q "vmsock/tcp-" /proc/net/unix 2>/dev/null; then
    echo "test.sh: shared-memory registrations were left behind:" >&2
    grep "vmsock/tcp-" /proc/net/unix >&2
    left=1
fi
echo "tests: $((total - failed)) passed, $failed failed (XCTest); $interop_summary; $fuzz_summary"
echo "tests: $soak_summary"
echo "tests: $sanitize_summary"
[ "$status" = 0 ] && [ "$failed" = 0 ] && [ "$left" = 0 ] && [ "$interop_status" = 0 ] && [ "$docs_status" = 0 ] \
    && [ "$fuzz_status" = 0 ] && [ "$soak_status" = 0 ] && [ "$sanitize_status" = 0 ]
