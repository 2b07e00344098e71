# A program under vmsock-run that execs another with a shared-memory connection as its standard input and output,
# as inetd does: socat's EXEC with nofork runs cat on the accepted socket itself. Both ends under vmsock-run; 16
# MiB go through cat and back, checked by sha256. The exec hands the connection to a relay process (the new image
# gets a TCP socket that carries the data: the rings cannot go across exec), which ends with the connection.
source "$(dirname "$0")/lib.sh"
need socat python3
[ -x "$VMSOCK_RUN" ] || fail "$VMSOCK_RUN is not built (swift build)"
random_file "$WORK/data" $((16 << 20))
port=$(free_port)
start "$VMSOCK_RUN" --debug socat TCP-LISTEN:"$port",bind=127.0.0.1,reuseaddr EXEC:cat,nofork 2>"$WORK/server.err"
server=$LAST
wait_listening 127.0.0.1 "$port"
timeout 60 "$VMSOCK_RUN" --debug socat -t 30 - TCP:127.0.0.1:"$port" <"$WORK/data" >"$WORK/got" 2>"$WORK/client.err" \
    || fail "client failed: $(cat "$WORK/client.err" "$WORK/server.err")"
same "$WORK/data" "$WORK/got" "16 MiB through cat, exec'd on the connection"
says "$WORK/client.err" "connect fd [0-9]* to .*: shared memory" "the client's connect"
says "$WORK/server.err" "accept fd [0-9]* from .*: shared memory" "the server's accept"
says "$WORK/server.err" "goes to the new image as a TCP socket through a relay process" "the exec"
wait_for "$server" 30 || fail "the server (cat, after the exec) did not end: $(cat "$WORK/server.err")"
# The relay ends with the connection: nothing is left behind.
for _ in $(seq 50); do [ -z "$(live_relays)" ] && break; sleep 0.1; done
[ -z "$(live_relays)" ] || fail "a relay process is left: $(live_relays)"
echo "ok: 16 MiB through a program exec'd on a shared-memory connection, and its relay gone"
