# The waits vmsock-run answers from the rings (issue 19): a C program (programs/preload-epoll.c) checks epoll
# (level, EPOLLET, EPOLLONESHOT, EPOLLRDHUP, EPOLLOUT, sets mixing connections with a pipe, an eventfd and a
# timerfd, a set inside a set, a connection added while another thread sleeps in the set), poll and select, and
# moves 16 MiB twice through non-blocking writers that wait for EPOLLOUT or POLLOUT. Run under vmsock-run (its
# connections over shared memory, confirmed by the debug lines) and without it, the output must be the same.
source "$(dirname "$0")/lib.sh"
[ -x "$VMSOCK_RUN" ] || fail "$VMSOCK_RUN is not built (swift build)"
CC=$(command -v cc || command -v /opt/swift/usr/bin/clang || true)
[ -n "$CC" ] || skip "no C compiler (cc or the Swift toolchain's clang)"
"$CC" -O2 -Wall -o "$WORK/epoll" interop/programs/preload-epoll.c -lpthread
timeout 60 "$WORK/epoll" >"$WORK/plain.txt" || fail "plain run failed: $(cat "$WORK/plain.txt")"
timeout 60 "$VMSOCK_RUN" --debug "$WORK/epoll" >"$WORK/preloaded.txt" 2>"$WORK/debug.txt" \
    || fail "preloaded run failed: $(cat "$WORK/preloaded.txt" "$WORK/debug.txt")"
diff -u "$WORK/plain.txt" "$WORK/preloaded.txt" || fail "the program observed a difference under vmsock-run"
grep -q '^done$' "$WORK/plain.txt" || fail "the program did not finish"
grep -q 'CORRUPT' "$WORK/plain.txt" && fail "a transfer was corrupted"
count_says "$WORK/debug.txt" 12 "shared memory"
echo "ok: $(grep -c . "$WORK/plain.txt") observations, the same with and without vmsock-run"
