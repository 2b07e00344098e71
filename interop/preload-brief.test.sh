# Short-lived connections under vmsock-run (brief.c): a new shared-memory connection costs several times a TCP one,
# so once a process's shared-memory connections to a destination keep ending within 100 ms having moved under
# 1 MiB (8 in a row), its connects there use TCP, with a probe of shared memory after 32 of them, then after
# twice as many each time. ab without keep-alive (a new connection per request, 300 of them) against nginx, both
# under vmsock-run: every request is answered, the first 8 and the probes (3 in 300: after 32, 64 and 128
# more) use shared memory, the rest TCP with the reason. With VMSOCK_SHORT_TCP=0 every connection uses shared
# memory, also in a program that clears its environment before it connects; so does VMSOCK_TRANSPORT=tcp, which
# makes them all TCP.
source "$(dirname "$0")/lib.sh"
PATH=$PATH:/usr/sbin  # where Debian puts nginx, off a user's PATH
need nginx ab python3
[ -x "$VMSOCK_RUN" ] || fail "$VMSOCK_RUN is not built (swift build)"
dir=$WORK/nginx
mkdir -p "$dir/temp" "$WORK/www"
random_file "$WORK/www/small.bin" 1024
port=$(free_port)
interop/programs/nginx-conf.sh "$dir" "$port" "$WORK/www" "master_process off;" >"$dir/nginx.conf"
start "$VMSOCK_RUN" --debug nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" >"$dir/out" 2>"$dir/err"
CLEANUPS+=("kill -TERM $LAST")
wait_listening 127.0.0.1 "$port"

# ab ENV-ASSIGNMENT NAME [OPTION]: 300 requests, one connection each; its --debug lines (or OPTION's) in
# $WORK/NAME.err
ab_run() {
    env "$1" timeout 60 "$VMSOCK_RUN" "${3:---debug}" ab -q -n 300 -c 1 "http://127.0.0.1:$port/small.bin" \
        >"$WORK/$2.out" 2>"$WORK/$2.err" || fail "$2: ab exited $?: $(tail -n 5 "$WORK/$2.out" "$WORK/$2.err")"
    grep -q "^Complete requests: *300$" "$WORK/$2.out" || fail "$2: ab did not complete 300 requests: $(cat "$WORK/$2.out")"
    grep -q "^Failed requests: *0$" "$WORK/$2.out" || fail "$2: ab saw failed requests: $(cat "$WORK/$2.out")"
}
ab_run VMSOCK_SHORT_TCP=1 adaptive
shm=$(grep -c "connect fd .*: shared memory" "$WORK/adaptive.err" || true)
brief=$(grep -c "connect fd .*: tcp (short-lived: " "$WORK/adaptive.err" || true)
echo "adaptive: $shm shared memory, $brief TCP as short-lived, of 300 connections"
grep -m1 "tcp (short-lived" "$WORK/adaptive.err" || true
[ "$shm" -ge 8 ] && [ "$shm" -le 16 ] || fail "adaptive: $shm connections used shared memory (the first 8 and 3 probes expected)"
[ $((shm + brief)) = 300 ] || fail "adaptive: $shm + $brief of 300 connections accounted for: $(grep "connect fd" "$WORK/adaptive.err" | sort | uniq -c | head)"

# Without --debug a connect to a short-lived destination is decided before the socket is looked at, and ab's
# second connect per connection counts as a call: the probes come on first connects all the same.
ab_run VMSOCK_SHORT_TCP=1 counted --stats
read -r shm tcp < <(sed -n 's/.*connects: \([0-9]*\) shared memory, \([0-9]*\) tcp;.*/\1 \2/p' "$WORK/counted.err")
echo "adaptive, without --debug: ${shm:-?} shared memory, ${tcp:-?} TCP, of 300 connections"
[ -n "$shm" ] && [ "$shm" -ge 8 ] && [ "$shm" -le 20 ] || fail "without --debug: ${shm:-no} connections used shared memory (the first 8 and about 5 probes expected): $(cat "$WORK/counted.err")"
[ $((shm + tcp)) = 300 ] || fail "without --debug: $shm + $tcp of 300 connections counted"

ab_run VMSOCK_SHORT_TCP=0 always
shm=$(grep -c "connect fd .*: shared memory" "$WORK/always.err" || true)
echo "VMSOCK_SHORT_TCP=0: $shm of 300 connections shared memory"
[ "$shm" = 300 ] || fail "VMSOCK_SHORT_TCP=0: $shm of 300 connections used shared memory"

# A program that replaces its environment before it connects (nginx keeps only TZ) keeps VMSOCK_SHORT_TCP=0: the
# library reads it at load. Python clears its environment, then makes 30 short connections; its --stats line
# counts them.
VMSOCK_SHORT_TCP=0 timeout 60 "$VMSOCK_RUN" --stats python3 -c '
import os, socket, sys
os.environ.clear()
for _ in range(30):
    with socket.create_connection(("127.0.0.1", int(sys.argv[1]))) as s:
        s.sendall(b"GET /small.bin HTTP/1.0\r\n\r\n")
        reply = b"".join(iter(lambda: s.recv(65536), b""))
        assert reply.startswith(b"HTTP/1.1 200") and len(reply) > 1024, reply[:100]
' "$port" 2>"$WORK/cleared.err" || fail "python with a cleared environment: $(cat "$WORK/cleared.err")"
says "$WORK/cleared.err" "connects: 30 shared memory, 0 tcp;" "VMSOCK_SHORT_TCP=0 after the environment was cleared"
# The same for the Swift half's settings: VMSOCK_TRANSPORT=tcp holds after the environment was cleared (it was read
# at the first connect, and lost there).
VMSOCK_TRANSPORT=tcp timeout 60 "$VMSOCK_RUN" --stats python3 -c '
import os, socket, sys
os.environ.clear()
for _ in range(3):
    with socket.create_connection(("127.0.0.1", int(sys.argv[1]))) as s:
        s.sendall(b"GET /small.bin HTTP/1.0\r\n\r\n")
        assert b"".join(iter(lambda: s.recv(65536), b"")).startswith(b"HTTP/1.1 200")
' "$port" 2>"$WORK/cleared-tcp.err" || fail "python with a cleared environment, VMSOCK_TRANSPORT=tcp: $(cat "$WORK/cleared-tcp.err")"
says "$WORK/cleared-tcp.err" "connects: 0 shared memory, 3 tcp;" "VMSOCK_TRANSPORT=tcp after the environment was cleared"
kill -0 "$LAST" 2>/dev/null || fail "nginx died: $(tail -5 "$dir/error.log")"
echo "ok: short-lived connections go to TCP after 8 (with probes), and all to shared memory with VMSOCK_SHORT_TCP=0," \
    "read at load, as VMSOCK_TRANSPORT is"
