# A peer killed with kill -9 in the middle of a shared-memory transfer under vmsock-run: the other end sees end of
# stream or a reset (or EPIPE, writing) within seconds and exits, never hangs (issue 18). Killed reader, then
# killed writer; nc on both ends.
source "$(dirname "$0")/lib.sh"
need nc ss python3
[ -x "$VMSOCK_RUN" ] || fail "$VMSOCK_RUN is not built (swift build)"

# $1: which side the server is (reader/writer); the server is killed.
kill_server() {
    local role=$1 server_pid client_pid port
    port=$(free_port)
    if [ "$role" = reader ]; then
        start "$VMSOCK_RUN" --debug nc -d -l 127.0.0.1 "$port" >/dev/null 2>"$WORK/server.err"
    else
        start bash -c "exec $VMSOCK_RUN --debug nc -l 127.0.0.1 $port </dev/zero >/dev/null" 2>"$WORK/server.err"
    fi
    server_pid=$LAST
    wait_listening 127.0.0.1 "$port"
    if [ "$role" = reader ]; then
        start bash -c "exec $VMSOCK_RUN --debug nc 127.0.0.1 $port </dev/zero >/dev/null" 2>"$WORK/client.err"
    else
        start "$VMSOCK_RUN" --debug nc -d 127.0.0.1 "$port" >/dev/null 2>"$WORK/client.err"
    fi
    client_pid=$LAST
    wait_contains "$WORK/client.err" 5 "shared memory"
    sleep 0.5
    kill -0 "$client_pid" 2>/dev/null || fail "killed $role: the client ended before the kill"
    kill -9 "$server_pid"
    # Any exit status: what matters is that it ended. If it does not, say where it waits.
    for _ in $(seq 50); do kill -0 "$client_pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$client_pid" 2>/dev/null && [ "$(cut -d' ' -f3 "/proc/$client_pid/stat" 2>/dev/null)" != Z ]; then
        fail "killed $role: the client (pid $client_pid) did not end within 5 s; it waits in" \
            "$(for task in /proc/$client_pid/task/*; do echo "[$(cat "$task/comm") $(cat "$task/wchan")]"; done | tr '\n' ' ')" \
            "$(timeout 2 strace -p "$client_pid" 2>&1 | head -8 | tr '\n' ' ')" \
            "; its debug lines: $(cat "$WORK/client.err"); the server's: $(cat "$WORK/server.err")"
    fi
    wait "$client_pid" 2>/dev/null || true
    echo "killed $role: the other end ended"
}

kill_server reader
kill_server writer
echo "ok: kill -9 of either end ends the other"
