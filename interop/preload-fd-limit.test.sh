# A vmsock-run server out of descriptors: a client under vmsock-run that connects meanwhile is refused shared
# memory at once ("listener out of resources") and uses TCP, which the server accepts once it has room again,
# every line echoed. Before, the server's listener thread could not take the knock, so each connector waited out
# its handshake (a second) while that thread found the knock in its backlog again and again, spinning.
source "$(dirname "$0")/lib.sh"
need python3
[ -x "$VMSOCK_RUN" ] || fail "$VMSOCK_RUN is not built (swift build)"
port=$(free_port) clients=5 program=interop/programs/fd-limit.py
start bash -c "ulimit -n 64 && exec $VMSOCK_RUN --debug python3 $program server $port $WORK/go $clients" \
    >"$WORK/server.out" 2>"$WORK/server.err"
server=$LAST
wait_contains "$WORK/server.out" 10 full
timeout 60 "$VMSOCK_RUN" --debug python3 "$program" client "$port" "$WORK/go" "$clients" >"$WORK/client.out" \
    2>"$WORK/client.err" || fail "the client failed: $(cat "$WORK/client.out" "$WORK/client.err")"
wait_for "$server" 30 || fail "the server failed: $(cat "$WORK/server.out" "$WORK/server.err")"
for i in $(seq 0 $((clients - 1))); do says "$WORK/client.out" "^line $i$" "the echo of line $i"; done
count_says "$WORK/client.err" "$clients" "tcp"
# Each refused, with the reason, even where the refusal beat its hello (the reject is read after the reset).
[ "$(grep -c "refused the connection: listener out of resources" "$WORK/client.err")" -eq "$clients" ] \
    || fail "not every connect was refused for want of descriptors: $(grep connect "$WORK/client.err")"
echo "ok: $clients connects to a server out of descriptors refused at once, then served over TCP"
