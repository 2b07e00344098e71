# A C program (programs/preload-calls.c) exercises each call vmsock-run interposes, edge cases included, and
# prints what it observes; run under vmsock-run (its connections over shared memory, confirmed by the debug lines)
# and without it, the output must be the same (issue 18).
source "$(dirname "$0")/lib.sh"
[ -x "$VMSOCK_RUN" ] || fail "$VMSOCK_RUN is not built (swift build)"
CC=$(command -v cc || command -v /opt/swift/usr/bin/clang || true)
[ -n "$CC" ] || skip "no C compiler (cc or the Swift toolchain's clang)"
"$CC" -O2 -D_FORTIFY_SOURCE=2 -Wall -o "$WORK/calls" interop/programs/preload-calls.c -lpthread
timeout 60 "$WORK/calls" >"$WORK/plain.txt" || fail "plain run failed: $(cat "$WORK/plain.txt")"
timeout 60 "$VMSOCK_RUN" --debug "$WORK/calls" >"$WORK/preloaded.txt" 2>"$WORK/debug.txt" \
    || fail "preloaded run failed: $(cat "$WORK/preloaded.txt" "$WORK/debug.txt")"
diff -u "$WORK/plain.txt" "$WORK/preloaded.txt" || fail "the program observed a difference under vmsock-run"
grep -q '^done$' "$WORK/plain.txt" || fail "the program did not finish"
count_says "$WORK/debug.txt" 6 "shared memory"
echo "ok: $(grep -c . "$WORK/plain.txt") observations, the same with and without vmsock-run"
