# Signal handlers that run while an interposed wait spins on the rings (issue 19): a C program
# (programs/preload-signal.c) takes SIGALRM 250 ms into poll, epoll_wait, select and recv on an idle connection,
# with a handler without and with SA_RESTART; then recv with SO_RCVTIMEO, a handler that runs on another thread
# (it must not end this thread's poll), sysv_signal's one-shot handler, and what sigaction and siginterrupt report. Under vmsock-run the spin budget is
# 2 s (VMSOCK_SPIN_US), so each signal lands in the spin; the output must equal the run without vmsock-run
# (EINTR, or a restarted recv). Without the trampoline the waits slept in the kernel after the spin, for ever.
source "$(dirname "$0")/lib.sh"
[ -x "$VMSOCK_RUN" ] || fail "$VMSOCK_RUN is not built (swift build)"
CC=$(command -v cc || command -v /opt/swift/usr/bin/clang || true)
[ -n "$CC" ] || skip "no C compiler (cc or the Swift toolchain's clang)"
"$CC" -O2 -Wall -o "$WORK/signal" interop/programs/preload-signal.c -lpthread
timeout 30 "$WORK/signal" >"$WORK/plain.txt" || fail "plain run failed: $(cat "$WORK/plain.txt")"
VMSOCK_SPIN_US=2000000 timeout 30 "$VMSOCK_RUN" --debug "$WORK/signal" >"$WORK/preloaded.txt" 2>"$WORK/debug.txt" \
    || fail "preloaded run failed (exit $?; 124: a wait never ended): $(cat "$WORK/preloaded.txt")"
diff -u "$WORK/plain.txt" "$WORK/preloaded.txt" || fail "the program observed a difference under vmsock-run"
grep -q '^done$' "$WORK/plain.txt" || fail "the program did not finish"
count_says "$WORK/debug.txt" 1 "shared memory"
cat "$WORK/plain.txt"
echo "ok: $(grep -c . "$WORK/plain.txt") observations, the same with and without vmsock-run"
