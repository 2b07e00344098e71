#!/usr/bin/env bash
# Fuzzes everything vmsock parses that another party wrote (issue 20): libFuzzer with AddressSanitizer.
#
#   tools/fuzz.sh [SECONDS] [TARGET...]        (60 s per target, every target, by default)
#   tools/fuzz.sh --build [TARGET...]          builds only
#
# How a target is built (docs/FUZZING.md says why this way): SwiftPM compiles the package's modules once into its
# own scratch path, .build-fuzz, with `-sanitize=fuzzer,address` (coverage and ASan, no link) and, as every
# debug build, `-enable-testing`; then swiftc compiles one file of Fuzz/ (`@testable import` reaches the
# internal API) with the support files it needs, and links it against those modules' object files. Executable
# modules (vmcat, vmperf) link too: SwiftPM renames their entry point for testing, so their `main` does not
# collide with libFuzzer's.
#
# Each target runs from its seed corpus in Fuzz/corpus/<target>/ (read only; what the run adds goes to a
# scratch copy) for SECONDS, one after the other, and prints one line: runs, coverage, result. A crash (or an
# invariant a target checks, or a leak) is saved in Fuzz/crashes/<target>/ (not committed: turn it into a
# regression test) and makes the script exit 1. Replay one with `.build-fuzz/fuzz/<target> <file>`.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
# Swift's backtracer would hold a crashing run for tens of seconds; libFuzzer prints its own stack.
export SWIFT_BACKTRACE=enable=no

build_only=0
seconds=60
if [ "${1:-}" = "--build" ]; then
    build_only=1
    shift
elif [[ "${1:-}" =~ ^[0-9]+$ ]]; then
    seconds=$1
    shift
fi

# target: the package modules whose objects it links (dependencies included), then the support files it adds to
# Fuzz/Support/FuzzInput.swift.
library="VMSock VMSockRing CVMSock"
vmperf="vmperf VMPerfPaper VMPerfSupport ArgumentParser ArgumentParserToolInfo Histogram RealModule _NumericsShims $library"
declare -A modules=(
    [handshake-message]=$library
    [handshake-peer]=$library
    [ring]="VMSockRing CVMSock"
    [ivshmem-header]="VMSockRing CVMSock"
    [ivshmem-client]=$library
    [registry]=$library
    [vmperf-wire]=$vmperf
    [vmcat-options]="vmcat $library"
    [vmperf-options]=$vmperf
)
declare -A support=(
    [handshake-peer]="PeerDescriptors"
    [ivshmem-client]="PeerDescriptors"
)
order=(handshake-message handshake-peer ring ivshmem-header ivshmem-client registry vmperf-wire vmcat-options vmperf-options)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${order[@]}")
for target in "${targets[@]}"; do
    [ -n "${modules[$target]:-}" ] || { echo "fuzz: no target $target (targets: ${order[*]})" >&2; exit 2; }
done

tools/setup.sh
scratch=.build-fuzz
out=$scratch/fuzz
mkdir -p "$out"
start=$(date +%s)
# The library builds once for every target; vmcat and vmperf bring in VMSock and the packages they use.
for module in VMSock vmcat vmperf; do
    swift build -c debug --scratch-path "$scratch" --target "$module" \
        -Xswiftc -sanitize=fuzzer,address -Xcc -fsanitize=fuzzer-no-link,address >"$out/build.log" 2>&1 \
        || { cat "$out/build.log" >&2; echo "fuzz: swift build --target $module failed" >&2; exit 1; }
done
objects=$scratch/debug
for target in "${targets[@]}"; do
    files=(Fuzz/Support/FuzzInput.swift)
    for name in ${support[$target]:-}; do files+=("Fuzz/Support/$name.swift"); done
    links=()
    for module in ${modules[$target]}; do links+=("$objects/$module.build/"*.o); done
    # Rebuild only when the target's file, its support or the package's objects are newer than the binary.
    if [ ! -x "$out/$target" ] || [ -n "$(find "Fuzz/$target.swift" "${files[@]}" "${links[@]}" -newer "$out/$target" 2>/dev/null | head -1)" ]; then
        swiftc -sanitize=fuzzer,address -parse-as-library -g -Onone -module-name "fuzz_${target//-/_}" \
            -I "$objects/Modules" \
            -Xcc -fmodule-map-file="$objects/CVMSock.build/module.modulemap" -Xcc -ISources/CVMSock/include \
            -Xcc -fmodule-map-file=Sources/CLibevent/module.modulemap \
            -Xcc -fmodule-map-file="$scratch/checkouts/swift-numerics/Sources/_NumericsShims/include/module.modulemap" \
            $(for m in ${modules[$target]}; do [ -f "$objects/$m.build/module.modulemap" ] && echo "-Xcc -fmodule-map-file=$objects/$m.build/module.modulemap"; done) \
            "Fuzz/$target.swift" "${files[@]}" "${links[@]}" $(pkg-config --libs libevent_pthreads) \
            -o "$out/$target" >"$out/$target.build.log" 2>&1 \
            || { grep -v "Cannot export local symbol" "$out/$target.build.log" >&2; echo "fuzz: building $target failed" >&2; exit 1; }
    fi
done
echo "fuzz: built ${#targets[@]} target(s) in $(($(date +%s) - start)) s"
[ "$build_only" = 1 ] && exit 0

status=0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for target in "${targets[@]}"; do
    corpus=$work/$target
    mkdir -p "$corpus" "Fuzz/crashes/$target"
    [ -d "Fuzz/corpus/$target" ] && cp -r "Fuzz/corpus/$target/." "$corpus/"
    log=$work/$target.log
    # A target's temporary files (ivshmem-client's socket) go where this script cleans up, crash or not.
    mkdir -p "$work/tmp"
    set +e
    # -rss_limit_mb: ASan's shadow and a few ring mappings per run stay far below it; -timeout: one input
    # running for 10 s is a hang, and a finding like a crash.
    TMPDIR=$work/tmp "$out/$target" "$corpus" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
        -artifact_prefix="Fuzz/crashes/$target/" >"$log" 2>&1
    code=$?
    set -e
    # A run that crashed early has none of these lines: "?" then, and the FAILED line below says why.
    runs=$(grep -E '^stat::number_of_executed_units:' "$log" | awk '{print $2}' || true)
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | awk '{print $2}' || true)
    corp=$(grep -oE 'corp: [0-9]+' "$log" | tail -1 | awk '{print $2}' || true)
    if [ "$code" = 0 ]; then
        result=ok
    else
        result="FAILED (exit $code): $(ls -t "Fuzz/crashes/$target" | head -1 | sed "s|^|Fuzz/crashes/$target/|")"
        grep -E "ERROR: |Fatal error|invariant broken|SUMMARY" "$log" | head -5 | sed 's/^/    /' >&2
        cp "$log" "Fuzz/crashes/$target/last.log"
        status=1
    fi
    printf "fuzz: %-18s %4s s  %9s runs  cov %5s  corpus %5s  %s\n" "$target" "$seconds" "${runs:-?}" "${cov:-?}" "${corp:-?}" "$result"
done
exit $status
