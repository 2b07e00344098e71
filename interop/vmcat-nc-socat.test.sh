# vmcat talks to real nc and socat over TCP, as client and as listener, sending and receiving: 4 MiB of random
# bytes each time, checked by sha256. One direction per connection: nc, like vmcat, ends when its peer does.
source "$(dirname "$0")/lib.sh"
need nc socat ss python3
random_file "$WORK/data" $((4 << 20))

# Runs server command $1 in the background (port in $port), then client command $2, and checks $WORK/got.
check() {
    local label=$1 server=$2 client=$3
    port=$(free_port)
    start bash -c "${server//PORT/$port}" 2>"$WORK/server.err"
    local pid=$LAST
    wait_listening 127.0.0.1 "$port"
    bash -c "${client//PORT/$port}" 2>"$WORK/client.err" || fail "$label: client failed: $(cat "$WORK/client.err")"
    wait_for "$pid" 30 || fail "$label: server failed: $(cat "$WORK/server.err")"
    same "$WORK/data" "$WORK/got" "$label"
    rm -f "$WORK/got"
}

D=$WORK/data G=$WORK/got
check "nc client sends to vmcat -l" "$VMCAT -d -l 127.0.0.1 PORT >$G" "nc -N 127.0.0.1 PORT <$D"
check "vmcat -l sends to nc client" "$VMCAT -N -l 127.0.0.1 PORT <$D" "nc -d 127.0.0.1 PORT >$G"
check "vmcat client sends to nc -l" "nc -d -l 127.0.0.1 PORT >$G" "$VMCAT -N 127.0.0.1 PORT <$D"
check "nc -l sends to vmcat client" "nc -N -l 127.0.0.1 PORT <$D" "$VMCAT -d 127.0.0.1 PORT >$G"
check "socat client sends to vmcat -l" "$VMCAT -d -l 127.0.0.1 PORT >$G" "socat -u FILE:$D TCP:127.0.0.1:PORT"
check "vmcat -l sends to socat client" "$VMCAT -N -l 127.0.0.1 PORT <$D" "socat -u TCP:127.0.0.1:PORT STDOUT >$G"
check "vmcat client sends to socat server" "socat -u TCP-LISTEN:PORT,bind=127.0.0.1,reuseaddr STDOUT >$G" \
    "$VMCAT -N 127.0.0.1 PORT <$D"
check "socat server sends to vmcat client" "socat -u FILE:$D TCP-LISTEN:PORT,bind=127.0.0.1,reuseaddr" \
    "$VMCAT -d 127.0.0.1 PORT >$G"
echo "ok: nc and socat, client and server, both directions"
