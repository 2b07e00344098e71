#!/usr/bin/env bash
# Runs every interop test (interop/*.test.sh) against the debug build and prints one line per test and a total.
# Exit status: 0 when none failed (skips are reported, with their reason, and do not fail the run).
set -uo pipefail
cd "$(dirname "$0")"
passed=0 skipped=0 failed=0
for test in *.test.sh; do
    log=$(mktemp)
    start=$(date +%s%N)
    timeout 300 bash "$test" >"$log" 2>&1
    status=$?
    took=$(( ($(date +%s%N) - start) / 100000000 ))
    took="$((took / 10)).$((took % 10))"
    case $status in
        0) passed=$((passed + 1)); echo "interop: PASS $test (${took} s)" ;;
        77) skipped=$((skipped + 1)); echo "interop: SKIP $test: $(grep SKIP: "$log" | tail -1)" ;;
        *) failed=$((failed + 1)); echo "interop: FAIL $test (exit $status)"; sed 's/^/    /' "$log" ;;
    esac
    rm -f "$log"
done
echo "interop: $passed passed, $skipped skipped, $failed failed"
[ "$failed" = 0 ]
