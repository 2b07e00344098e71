# A SwiftNIO echo server and client (interop/programs/nio-echo, an ordinary NIOPosix program: epoll, an eventfd
# to wake its loops, a timerfd for its timeout, non-blocking accept4, read, writev, half-close), both unchanged
# under vmsock-run: 1 connection of 64 MiB, 8 at once of 4 MiB, and 200 of 1 KiB, in writes of 1 byte to 64 KiB;
# every byte checked, every connection shared memory on both sides (issue 19; lib.sh's VMSOCK_SHORT_TCP=0 keeps
# the 200 short connections on the rings). The package builds into
# ~/.cache/vmsock-nio (VMSOCK_NIO_CACHE), about 45 s the first time (debug, 2 cores), seconds after that.
source "$(dirname "$0")/lib.sh"
need swift ss python3
[ -x "$VMSOCK_RUN" ] || fail "$VMSOCK_RUN is not built (swift build)"
CACHE=${VMSOCK_NIO_CACHE:-$HOME/.cache/vmsock-nio}
PACKAGE=interop/programs/nio-echo
# Fetching swift-nio needs the network (or a package mirror); without it the test cannot run, which is a skip.
# A package that fetched but does not compile is a failure.
swift package --package-path "$PACKAGE" --scratch-path "$CACHE/build" resolve >"$WORK/resolve.log" 2>&1 \
    || skip "cannot fetch swift-nio for $PACKAGE: $(tail -3 "$WORK/resolve.log")"
swift build --package-path "$PACKAGE" --scratch-path "$CACHE/build" >"$WORK/build.log" 2>&1 \
    || fail "$PACKAGE does not build: $(tail -30 "$WORK/build.log")"
ECHO=$CACHE/build/debug/nio-echo
R="$VMSOCK_RUN --debug"

port=$(free_port)
start $R "$ECHO" server "$port" 2 >"$WORK/server.out" 2>"$WORK/server.err"
server=$LAST
wait_listening 127.0.0.1 "$port"
says "$WORK/server.err" "shared memory offered" "the NIO server's listen"
total=0
run() {  # BYTES CONNECTIONS
    timeout 120 $R "$ECHO" client "$port" "$1" "$2" 60 >"$WORK/client.out" 2>"$WORK/client.err" \
        || fail "nio-echo client $1 x $2: $(cat "$WORK/client.out" "$WORK/client.err")"
    says "$WORK/client.out" "ok: $2 connection(s), $1 bytes each, echoed intact" "nio-echo client $1 x $2"
    count_says "$WORK/client.err" "$2" "shared memory"
    total=$((total + $2))
    wait_contains "$WORK/server.err" 5 "accept fd"
}
run $((64 << 20)) 1
run $((4 << 20)) 8
run 1024 200
kill -0 "$server" 2>/dev/null || fail "the NIO server died: $(cat "$WORK/server.out" "$WORK/server.err")"
for _ in $(seq 50); do
    [ "$(grep -c "accept fd" "$WORK/server.err")" -ge "$total" ] && break
    sleep 0.1
done
count_says "$WORK/server.err" "$total" "shared memory"
grep -q ": tcp" "$WORK/server.err" "$WORK/client.err" && fail "a connection used TCP: $(grep ': tcp' "$WORK"/*.err)"
kill "$server"
wait "$server" 2>/dev/null || true
echo "ok: SwiftNIO echo, 1 x 64 MiB, 8 x 4 MiB, 200 x 1 KiB, $total connections over shared memory"
