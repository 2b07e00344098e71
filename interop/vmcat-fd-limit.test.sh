# Out of descriptors (issue 20): a `vmcat -lk` under `ulimit -n 16` keeps serving client after client (over TCP,
# since a shared-memory connection needs more descriptors than it has), and a client too short of descriptors for
# shared memory falls back to TCP with the reason. Neither prints libevent's own "[warn]" or "[err]" lines.
source "$(dirname "$0")/lib.sh"
need ss
port=$(free_port)
start with_fd_limit 16 "$VMCAT" -v -lk 127.0.0.1 "$port" </dev/null >"$WORK/got" 2>"$WORK/listener"
listener=$LAST
wait_listening 127.0.0.1 "$port"
for i in 1 2 3; do
    echo "client $i" | "$VMCAT" -N 127.0.0.1 "$port" 2>>"$WORK/clients" || fail "client $i: $(cat "$WORK/clients")"
    wait_contains "$WORK/got" 5 "client $i"
done
kill -0 "$listener" 2>/dev/null || fail "the listener under ulimit -n 16 ended: $(cat "$WORK/listener")"
[ "$(grep -c 'Connection received' "$WORK/listener")" = 3 ] || fail "listener said: $(cat "$WORK/listener")"

# A client with 12 descriptors: too few for a shared-memory connection and its loop, enough for TCP.
(echo "client 4" | (with_fd_limit 12 "$VMCAT" -v -N 127.0.0.1 "$port")) 2>"$WORK/short" || fail "short client: $(cat "$WORK/short")"
wait_contains "$WORK/got" 5 "client 4"
says "$WORK/short" "via TCP (out of resources)" "the short client fell back to TCP, saying why"
for file in listener clients short; do
    if grep -q '\[warn\]\|\[err\]' "$WORK/$file"; then fail "libevent printed by itself: $(cat "$WORK/$file")"; fi
done
echo "ok: served under ulimit -n 16; a client short of descriptors fell back with the reason"
