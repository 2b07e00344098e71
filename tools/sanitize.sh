#!/usr/bin/env bash
# The XCTest suites under AddressSanitizer (with LeakSanitizer) and ThreadSanitizer (issue 20).
#
#   tools/sanitize.sh [address|thread|both] [swift test options]     (both by default)
#
# e.g. `tools/sanitize.sh thread --filter VMSockTests.LoopTests` runs one suite under ThreadSanitizer.
# Each sanitizer builds into its own scratch path (.build-asan, .build-tsan; the test peers, vmperf and vmcat are
# built with it too) and runs every XCTest with its suppressions (tools/asan.supp, tools/tsan.supp: each says why
# it is not our bug), and with VMSOCK_SANITIZER set to its name, for a test that cannot run under it to skip with
# a message (none needs to: the 1 GiB transfers take 20 s under ASan and 51 s under TSan here). Reports from
# every process, the test runner and the helpers it spawns alike, go to files (log_path) rather than to a stderr
# a test may capture, and are printed at the end. One summary line per sanitizer; exits non-zero on a failed
# build, a failed test or any report.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"

which=${1:-both}
[ $# -gt 0 ] && shift
case "$which" in
    address) sanitizers=(address) ;;
    thread) sanitizers=(thread) ;;
    both) sanitizers=(address thread) ;;
    *)
        echo "usage: tools/sanitize.sh [address|thread|both] [swift test options]" >&2
        exit 2
        ;;
esac

tools/setup.sh

status=0
summaries=()
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for sanitizer in "${sanitizers[@]}"; do
    case "$sanitizer" in
        address) short=asan ;;
        thread) short=tsan ;;
    esac
    scratch=".build-$short"
    reports="$work/$short-reports"
    log="$work/$short.log"
    mkdir -p "$reports"

    echo "== $sanitizer: building into $scratch"
    start=$(date +%s)
    set +e
    # Without gold's ~600 warnings about ASan's own symbols ("Cannot export local symbol '__asan_...'").
    swift build --scratch-path "$scratch" --build-tests --sanitize="$sanitizer" 2>&1 | grep -v "Cannot export local symbol '__asan"
    build_status=${PIPESTATUS[0]}
    set -e
    built=$(date +%s)
    if [ "$build_status" != 0 ]; then
        summaries+=("sanitize: $sanitizer: build failed (exit $build_status) after $((built - start)) s")
        status=1
        continue
    fi

    echo "== $sanitizer: running the XCTest suites"
    set +e
    case "$sanitizer" in
        address)
            VMSOCK_SANITIZER=address \
                ASAN_OPTIONS="log_path=$reports/report:detect_leaks=1" \
                LSAN_OPTIONS="suppressions=$PWD/tools/asan.supp:print_suppressions=0" \
                swift test --scratch-path "$scratch" --skip-build --disable-swift-testing --sanitize=address "$@" 2>&1 \
                | tee "$log"
            ;;
        thread)
            VMSOCK_SANITIZER=thread \
                TSAN_OPTIONS="log_path=$reports/report:suppressions=$PWD/tools/tsan.supp:print_suppressions=0" \
                swift test --scratch-path "$scratch" --skip-build --disable-swift-testing --sanitize=thread "$@" 2>&1 \
                | tee "$log"
            ;;
    esac
    test_status=${PIPESTATUS[0]}
    set -e
    tested=$(date +%s)

    # A report is a file with a sanitizer's ERROR, FATAL or WARNING header (a runtime may also log notes).
    found=0
    for file in "$reports"/*; do
        [ -e "$file" ] || continue
        count=$(grep -c -E "^(==[0-9]+==)?((ERROR|FATAL): (Address|Leak|Thread)Sanitizer|WARNING: ThreadSanitizer)" "$file" || true)
        if [ "$count" -gt 0 ]; then
            echo "---- $sanitizer report from pid ${file##*.}" >&2
            cat "$file" >&2
            found=$((found + count))
        fi
    done

    summary=$(grep -E "Executed [0-9]+ tests?, with [0-9]+ failures?" "$log" | tail -1 || true)
    if [ -z "$summary" ]; then
        result="no XCTest summary (swift test exit $test_status)"
        status=1
    else
        total=$(echo "$summary" | sed -E 's/.*Executed ([0-9]+) tests?.*/\1/')
        failed=$(echo "$summary" | sed -E 's/.*with ([0-9]+) failures?.*/\1/')
        skipped=$(grep -c -E "^Test Case .* skipped" "$log" || true)
        result="$((total - failed)) of $total tests passed ($skipped skipped), $failed failed"
        [ "$test_status" = 0 ] && [ "$failed" = 0 ] || status=1
    fi
    [ "$found" = 0 ] || status=1
    summaries+=("sanitize: $sanitizer: $result; $found sanitizer reports; build $((built - start)) s, tests $((tested - built)) s")
done

printf '%s\n' "${summaries[@]}"
exit $status
