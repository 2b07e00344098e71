# memcached, unmodified, under vmsock-run: 4 threads on libevent (epoll), accepting on one and handing connections
# to the others. A Python client under vmsock-run makes 20 connections and 3,000 random sets and gets of values
# from 1 B to 900 KB (the ring wraps many times), each answer checked against what it stored, then 50 pipelined
# gets; then the same client without vmsock-run (TCP to a vmsock-run server). Shared memory is confirmed from both
# ends' --debug lines.
source "$(dirname "$0")/lib.sh"
need memcached python3 ss
[ -x "$VMSOCK_RUN" ] || fail "$VMSOCK_RUN is not built (swift build)"
R="$VMSOCK_RUN --debug"
port=$(free_port)
user=()
[ "$(id -u)" = 0 ] && user=(-u root)  # memcached refuses to run as root without it
start $R memcached -l 127.0.0.1 -p "$port" -U 0 -t 4 -I 2m -m 256 "${user[@]}" >"$WORK/server.out" 2>"$WORK/server.err"
server=$LAST
wait_listening 127.0.0.1 "$port"
wait_contains "$WORK/server.err" 10 "shared memory offered"

timeout 120 $R python3 interop/programs/memcached-client.py "$port" 3000 shm >"$WORK/shm.out" 2>"$WORK/client.err" \
    || fail "under vmsock-run: $(cat "$WORK/shm.out"; tail -3 "$WORK/client.err")"
cat "$WORK/shm.out"
count_says "$WORK/client.err" 20 "shared memory"
count_says "$WORK/server.err" 20 "shared memory"
timeout 120 python3 interop/programs/memcached-client.py "$port" 1000 tcp >"$WORK/tcp.out" \
    || fail "a plain TCP client: $(cat "$WORK/tcp.out")"
cat "$WORK/tcp.out"
count_says "$WORK/server.err" 20 "tcp"
kill -0 "$server" 2>/dev/null || fail "memcached died: $(tail -5 "$WORK/server.err")"
echo "ok: memcached's answers right over shared memory and over TCP"
