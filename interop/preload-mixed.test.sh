# One end under vmsock-run and the other not: the connection works over TCP, and the debug line says why
# (issue 18). Both ways round, with nc.
source "$(dirname "$0")/lib.sh"
need nc ss python3
[ -x "$VMSOCK_RUN" ] || fail "$VMSOCK_RUN is not built (swift build)"
random_file "$WORK/data" $((4 << 20))

port=$(free_port)
start nc -d -l 127.0.0.1 "$port" >"$WORK/got"
pid=$LAST
wait_listening 127.0.0.1 "$port"
timeout 30 "$VMSOCK_RUN" --debug nc -N 127.0.0.1 "$port" <"$WORK/data" 2>"$WORK/client.err" || fail "client failed"
wait_for "$pid" 30
same "$WORK/data" "$WORK/got" "preloaded client, plain server"
says "$WORK/client.err" "tcp (no vmsock-run listener on 127.0.0.1:$port)" "preloaded client's reason"
rm -f "$WORK/got"

port=$(free_port)
start "$VMSOCK_RUN" --debug nc -d -l 127.0.0.1 "$port" >"$WORK/got" 2>"$WORK/server.err"
pid=$LAST
wait_listening 127.0.0.1 "$port"
timeout 30 nc -N 127.0.0.1 "$port" <"$WORK/data" || fail "client failed"
wait_for "$pid" 30
same "$WORK/data" "$WORK/got" "plain client, preloaded server"
says "$WORK/server.err" "tcp (no hello from 127.0.0.1:" "preloaded server's reason"
echo "ok: mixed ends use TCP and say why"
