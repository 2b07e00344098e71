# A reader killed with kill -9 while its writer waits for room (issue 18): the writer, under vmsock-run, waits in
# poll or epoll for POLLOUT on a full ring. The dead reader's ring stays full and its socket closes with a FIN (it
# read nothing, so nothing unread makes it a reset), which alone could be a half-close. The wait must still end:
# POLLOUT, then a send that fails with EPIPE, as over TCP. Before, it waited for ever (a flaky preload-kill). And a
# reader that is alive but half-closed must not make that wait spin.
source "$(dirname "$0")/lib.sh"
need python3 ss
[ -x "$VMSOCK_RUN" ] || fail "$VMSOCK_RUN is not built (swift build)"

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

# A writer fills its ring against interop/programs/slow-reader.py (started with MODE, which may be empty), then
# waits for room in HOW (poll or epoll) once the reader printed READY and, with `kill`, was killed with kill -9.
# The wait must end, and the send after it say EPIPE.
#   writer_gets_epipe HOW MODE READY kill|keep
writer_gets_epipe() {
    local how=$1 mode=$2 ready=$3 kill_first=$4 port reader writer
    port=$(free_port)
    start "$VMSOCK_RUN" --debug python3 interop/programs/slow-reader.py "$port" 60 $mode >"$WORK/reader.out" 2>"$WORK/reader.err"
    reader=$LAST
    wait_listening 127.0.0.1 "$port"
    mkfifo "$WORK/go-$how$mode"
    start bash -c "exec $VMSOCK_RUN --debug python3 $WORK/writer.py $port $how <$WORK/go-$how$mode" >"$WORK/writer.out" 2>"$WORK/writer.err"
    writer=$LAST
    exec 9>"$WORK/go-$how$mode"
    wait_contains "$WORK/writer.out" 10 "full after"
    wait_contains "$WORK/reader.out" 10 "$ready"
    count_says "$WORK/writer.err" 1 "shared memory"
    if [ "$kill_first" = kill ]; then kill -9 "$reader"; fi
    echo >&9
    exec 9>&-
    wait_for "$writer" 15 || fail "$how $mode: the writer failed: $(cat "$WORK/writer.out") $(cat "$WORK/writer.err")"
    says "$WORK/writer.out" "send: EPIPE" "$how $mode: the send after the wait for room"
    kill -9 "$reader" 2>/dev/null || true
}

for how in poll epoll; do
    writer_gets_epipe "$how" "" accepted kill
    echo "$how: a wait for room on a dead reader's full ring ended, and the send said EPIPE"
done
# A reader that is alive but half-closed (FIN) and reads nothing for 2 s: the writer's poll for room sleeps
# (a FIN alone once made every kernel poll return at once, a busy loop), then ends when the reader reads.
cat >"$WORK/patient.py" <<'EOF'
import resource, select, socket, sys
client = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
client.setblocking(False)
sent = 0
try:
    while True:
        sent += client.send(b"x" * 65536)
except BlockingIOError:
    pass
waiter = select.poll()
waiter.register(client, select.POLLOUT)
before = resource.getrusage(resource.RUSAGE_SELF)
events = waiter.poll(20000)
after = resource.getrusage(resource.RUSAGE_SELF)
cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
client.setblocking(True)
client.sendall(b"y" * 1000)
client.close()
print(sent + 1000, "%.2f" % cpu, flush=True)
EOF
port=$(free_port)
start "$VMSOCK_RUN" --debug python3 interop/programs/slow-reader.py "$port" 2 half-close >"$WORK/halfclosed.out" 2>"$WORK/halfclosed.err"
reader=$LAST
wait_listening 127.0.0.1 "$port"
timeout 30 "$VMSOCK_RUN" --debug python3 "$WORK/patient.py" "$port" >"$WORK/patient.out" 2>"$WORK/patient.err" \
    || fail "the patient writer failed: $(cat "$WORK/patient.out") $(cat "$WORK/patient.err")"
count_says "$WORK/patient.err" 1 "shared memory"
wait_for "$reader" 20 || fail "the half-closed reader failed: $(cat "$WORK/halfclosed.err")"
read -r expected cpu <"$WORK/patient.out"
[ "$(tail -1 "$WORK/halfclosed.out")" = "$expected" ] || fail "the reader got $(tail -1 "$WORK/halfclosed.out") bytes, not $expected"
# A busy loop would take about 2 s of CPU over the 2 s wait; a sleep takes a few hundredths.
python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) < 1.0 else 1)" "$cpu" \
    || fail "the writer's wait for room on a half-closed peer spun: $cpu CPU seconds over a 2 s wait"
echo "half-closed reader: the wait for room slept ($cpu CPU seconds), and all $expected bytes arrived"
# A hostile reader that stays alive but shuts its copies of the writer's doorbells down: the writer's space bell
# then reads end of stream for good. Its wait for room must take that for a gone peer (POLLOUT, then EPIPE), where
# it once drained nothing, found the bell readable again and went round the same poll until its timeout.
for how in poll epoll; do
    writer_gets_epipe "$how" shut-bells "shut " keep
    echo "$how: a reader that shut the writer's doorbells down ended the wait for room, and the send said EPIPE"
done
echo "ok: a dead reader ends a writer's wait for room in poll and in epoll; a half-closed one does not make it spin; nor do shut doorbells"
