# vmcat to vmcat, both ways, over shared memory and over TCP: text and binary files arrive intact (sha256), and
# -v says which transport carried them.
source "$(dirname "$0")/lib.sh"
need ss python3
random_file "$WORK/binary" $((16 << 20))
python3 -c 'import sys; sys.stdout.write("".join(f"line {i}: the quick brown fox\n" for i in range(100000)))' >"$WORK/text"

# One transfer: the listener sends ($1 = down) or receives ($1 = up) file $2, with transport flags $3...
transfer() {
    local way=$1 file=$2; shift 2
    local port; port=$(free_port)
    if [ "$way" = up ]; then
        start "$VMCAT" -v "$@" -l 127.0.0.1 "$port" </dev/null >"$WORK/got" 2>"$WORK/listener"
    else
        start "$VMCAT" -v -N "$@" -l 127.0.0.1 "$port" <"$file" 2>"$WORK/listener"
    fi
    local listener=$LAST
    wait_listening 127.0.0.1 "$port"
    if [ "$way" = up ]; then
        "$VMCAT" -v -N "$@" 127.0.0.1 "$port" <"$file" 2>"$WORK/client" || fail "client ($way $*): $(cat "$WORK/client")"
    else
        "$VMCAT" -v -d "$@" 127.0.0.1 "$port" >"$WORK/got" 2>"$WORK/client" || fail "client ($way $*): $(cat "$WORK/client")"
    fi
    wait_for "$listener" 30 || fail "listener ($way $*): $(cat "$WORK/listener")"
    same "$file" "$WORK/got" "vmcat $way $(basename "$file") $*"
}

for file in "$WORK/text" "$WORK/binary"; do
    for way in up down; do
        transfer "$way" "$file"
        says "$WORK/client" "Connection to 127.0.0.1 .* port succeeded via shared memory" "client -v"
        says "$WORK/listener" "Connection received on 127.0.0.1 [1-9][0-9]* via shared memory" "listener -v (the client's own port)"
        transfer "$way" "$file" --transport tcp
        says "$WORK/client" "succeeded via TCP (shared memory off by policy)" "client -v, --transport tcp"
        says "$WORK/listener" "Connection received on 127.0.0.1 [0-9]* via TCP" "listener -v, --transport tcp"
        transfer "$way" "$file" --transport shm --ring-size 4096
        says "$WORK/client" "succeeded via shared memory" "client -v, 4 KiB ring"
    done
done

# Auto mode falls back to TCP with the reason when the listener is not vmsock.
port=$(free_port)
start python3 -c "
import socket; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', $port)); s.listen(); c, _ = s.accept(); c.sendall(b'hi from python\n'); c.close()"
wait_listening 127.0.0.1 "$port"
"$VMCAT" -v -d 127.0.0.1 "$port" >"$WORK/got" 2>"$WORK/client" || fail "client to python: $(cat "$WORK/client")"
says "$WORK/client" "succeeded via TCP (no shared-memory listener)" "client -v to a plain TCP server"
says "$WORK/got" "hi from python" "client to a plain TCP server"

# A region that is named but cannot be joined is part of the reason, for a client and for a listener.
port=$(free_port)
start python3 -c "
import socket; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', $port)); s.listen(); c, _ = s.accept(); c.sendall(b'hi\n'); c.close()"
wait_listening 127.0.0.1 "$port"
VMSOCK_IVSHMEM=$WORK/no-vmsockd.sock "$VMCAT" -v -d 127.0.0.1 "$port" >/dev/null 2>"$WORK/client" || fail "client, region named: $(cat "$WORK/client")"
says "$WORK/client" "why not shared memory: the ivshmem region could not be joined: nothing listens on $WORK/no-vmsockd.sock" "client -v"
port=$(free_port)
VMSOCK_IVSHMEM=$WORK/no-vmsockd.sock start "$VMCAT" -v -l 127.0.0.1 "$port" >/dev/null 2>"$WORK/listener"
wait_contains "$WORK/listener" 10 "not in the ivshmem region: nothing listens on $WORK/no-vmsockd.sock"
echo "ok: text and binary, both ways, shared memory and TCP"
