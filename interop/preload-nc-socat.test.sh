# Unmodified nc and socat under vmsock-run, both ends: 128 MiB each way (PRELOAD_BYTES) at once, checked by sha256, and each
# connection confirmed as shared memory by the debug lines (issue 18).
source "$(dirname "$0")/lib.sh"
need nc socat ss python3
[ -x "$VMSOCK_RUN" ] || fail "$VMSOCK_RUN is not built (swift build)"
SIZE=${PRELOAD_BYTES:-$((128 << 20))}  # 256 MiB takes about 30 s on the 2-core test machine
random_file "$WORK/a" "$SIZE"
random_file "$WORK/b" "$SIZE"

# Server command $2 and client command $3 exchange a and b; PORT is replaced by a free port.
exchange() {
    local label=$1 server=$2 client=$3
    port=$(free_port)
    start timeout 60 bash -c "${server//PORT/$port}" 2>"$WORK/server.err"
    local pid=$LAST
    wait_listening 127.0.0.1 "$port"
    timeout 60 bash -c "${client//PORT/$port}" 2>"$WORK/client.err" || fail "$label: client failed: $(cat "$WORK/client.err")"
    wait_for "$pid" 60 || fail "$label: server failed: $(cat "$WORK/server.err")"
    same "$WORK/a" "$WORK/got-a" "$label, client to server"
    same "$WORK/b" "$WORK/got-b" "$label, server to client"
    count_says "$WORK/server.err" 1 "shared memory"
    count_says "$WORK/client.err" 1 "shared memory"
    rm -f "$WORK/got-a" "$WORK/got-b"
}

R="$VMSOCK_RUN --debug"
exchange "nc to nc" "$R nc -N -l 127.0.0.1 PORT <$WORK/b >$WORK/got-a" "$R nc -N 127.0.0.1 PORT <$WORK/a >$WORK/got-b"
exchange "socat to socat" "$R socat TCP-LISTEN:PORT,bind=127.0.0.1,reuseaddr OPEN:$WORK/b!!OPEN:$WORK/got-a,creat" \
    "$R socat OPEN:$WORK/a!!OPEN:$WORK/got-b,creat TCP:127.0.0.1:PORT"
echo "ok: nc and socat, $SIZE bytes each way over shared memory"
