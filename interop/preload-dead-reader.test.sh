# A reader killed with kill -9 while its writer waits for room (issue 18): the writer, under vmsock-run, waits in
# poll or epoll for POLLOUT on a full ring. The dead reader's ring stays full and its socket closes with a FIN (it
# read nothing, so nothing unread makes it a reset), which alone could be a half-close. The wait must still end:
# POLLOUT, then a send that fails with EPIPE, as over TCP. Before, it waited for ever (a flaky preload-kill).
source "$(dirname "$0")/lib.sh"
need python3 ss
[ -x "$VMSOCK_RUN" ] || fail "$VMSOCK_RUN is not built (swift build)"

cat >"$WORK/reader.py" <<'EOF'
import socket, sys, time
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", int(sys.argv[1])))
listener.listen(1)
connection, _ = listener.accept()
print("accepted", flush=True)
time.sleep(60)  # reads nothing; killed with kill -9
EOF
cat >"$WORK/writer.py" <<'EOF'
import errno, select, socket, sys
how = sys.argv[2]
client = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
client.setblocking(False)
sent = 0
try:
    while True:
        sent += client.send(b"x" * 65536)
except BlockingIOError:
    pass
print("full after", sent, flush=True)
sys.stdin.readline()  # the reader is killed now
if how == "poll":
    waiter = select.poll()
    waiter.register(client, select.POLLOUT)
    events = waiter.poll(20000)
else:
    waiter = select.epoll()
    waiter.register(client, select.EPOLLOUT | select.EPOLLET)
    events = waiter.poll(20)
if not events:
    print("the wait for room timed out", flush=True)
    sys.exit(1)
try:
    client.send(b"x")
    print("a send after the reader died succeeded", flush=True)
    sys.exit(1)
except OSError as error:
    print("send:", errno.errorcode.get(error.errno, error.errno), flush=True)
EOF

for how in poll epoll; do
    port=$(free_port)
    start "$VMSOCK_RUN" --debug python3 "$WORK/reader.py" "$port" >"$WORK/reader.out" 2>"$WORK/reader.err"
    reader=$LAST
    wait_listening 127.0.0.1 "$port"
    mkfifo "$WORK/go-$how"
    start bash -c "exec $VMSOCK_RUN --debug python3 $WORK/writer.py $port $how <$WORK/go-$how" >"$WORK/writer.out" 2>"$WORK/writer.err"
    writer=$LAST
    exec 9>"$WORK/go-$how"
    wait_contains "$WORK/writer.out" 10 "full after"
    wait_contains "$WORK/reader.out" 10 "accepted"
    count_says "$WORK/writer.err" 1 "shared memory"
    kill -9 "$reader"
    echo >&9
    exec 9>&-
    wait_for "$writer" 15 || fail "$how: the writer failed: $(cat "$WORK/writer.out") $(cat "$WORK/writer.err")"
    says "$WORK/writer.out" "send: EPIPE" "$how: the send after the reader died"
    echo "$how: a wait for room on a dead reader's full ring ended, and the send said EPIPE"
done
echo "ok: a dead reader ends a writer's wait for room in poll and in epoll"
