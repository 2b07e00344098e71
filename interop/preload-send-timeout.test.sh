# SO_SNDTIMEO on a shared-memory connection under vmsock-run (issue 19): a blocking send into a full ring that
# nobody reads returns EAGAIN once the timeout has passed, though a wait for room now sleeps in steps of at most
# 10 ms (a wake-up for room can be lost to another waiter, and the next look finds it); every byte sent arrives.
source "$(dirname "$0")/lib.sh"
need python3 ss
[ -x "$VMSOCK_RUN" ] || fail "$VMSOCK_RUN is not built (swift build)"

cat >"$WORK/client.py" <<'EOF'
import errno, socket, struct, sys
client = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 0, 300000))  # 0.3 s
sent = 0
try:
    while True:
        sent += client.send(b"x" * 65536)
except OSError as error:
    print(errno.errorcode.get(error.errno, error.errno), sent, flush=True)
client.close()
EOF

port=$(free_port)
start "$VMSOCK_RUN" --debug python3 interop/programs/slow-reader.py "$port" 3 >"$WORK/received" 2>"$WORK/server.err"
server=$LAST
wait_listening 127.0.0.1 "$port"
timeout 20 "$VMSOCK_RUN" --debug python3 "$WORK/client.py" "$port" >"$WORK/client.out" 2>"$WORK/client.err" \
    || fail "the client did not finish (a send blocked past SO_SNDTIMEO?): $(cat "$WORK/client.err")"
count_says "$WORK/client.err" 1 "shared memory"
read -r code sent <"$WORK/client.out"
[ "$code" = EAGAIN ] || fail "a send past SO_SNDTIMEO gave '$code', not EAGAIN"
[ "$sent" -gt 0 ] || fail "nothing was sent before the ring was full"
wait_for "$server" 20 || fail "the server failed: $(cat "$WORK/server.err")"
[ "$(tail -1 "$WORK/received")" = "$sent" ] || fail "the server received $(tail -1 "$WORK/received") bytes, the client sent $sent"
echo "ok: SO_SNDTIMEO gave EAGAIN on a full ring after $sent bytes, and all of them arrived"
