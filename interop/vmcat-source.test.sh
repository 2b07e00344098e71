# vmcat -s and -p (nc's source address and port) make the connection leave from that address and port, over
# shared memory (the vmcat listener reports it as the peer's) and over TCP (real nc -l reports it); a source
# port another socket holds fails as nc's does, in one line.
source "$(dirname "$0")/lib.sh"
need nc python3 ss

# Over shared memory: the listener sees the source the client chose.
port=$(free_port) source=$(free_port)
start "$VMCAT" -v -l 127.0.0.1 "$port" >"$WORK/got" 2>"$WORK/listener.err"
listener=$LAST
wait_listening 127.0.0.1 "$port"
echo hello | "$VMCAT" -v -N -s 127.0.0.1 -p "$source" 127.0.0.1 "$port" 2>"$WORK/client.err" ||
    fail "vmcat -s -p failed: $(cat "$WORK/client.err")"
wait_for "$listener" 15 || fail "the vmcat listener failed: $(cat "$WORK/listener.err")"
says "$WORK/listener.err" "Connection received on 127.0.0.1 $source via shared memory" "the vmcat listener"
[ "$(cat "$WORK/got")" = hello ] || fail "the listener got '$(cat "$WORK/got")'"

# Over TCP, to real nc: -p alone takes the port, from the address the route gives.
port=$(free_port) source=$(free_port)
start nc -v -n -l 127.0.0.1 "$port" >"$WORK/got" 2>"$WORK/nc.err"
listener=$LAST
wait_listening 127.0.0.1 "$port"
echo hello | "$VMCAT" -N -p "$source" 127.0.0.1 "$port" 2>"$WORK/client.err" ||
    fail "vmcat -p to nc failed: $(cat "$WORK/client.err")"
wait_for "$listener" 15 || fail "nc -l failed: $(cat "$WORK/nc.err")"
says "$WORK/nc.err" "Connection received on 127.0.0.1 $source" "nc -l"
[ "$(cat "$WORK/got")" = hello ] || fail "nc got '$(cat "$WORK/got")'"

# A source port another socket holds: bind's error, one line, exit 1 (as nc: "Address already in use").
port=$(free_port)
python3 -c 'import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1], flush=True); time.sleep(30)' >"$WORK/held" &
PIDS+=($!)
for _ in $(seq 50); do [ -s "$WORK/held" ] && break; sleep 0.1; done
held=$(cat "$WORK/held")
start "$VMCAT" -l 127.0.0.1 "$port" >/dev/null 2>&1
wait_listening 127.0.0.1 "$port"
status=0
"$VMCAT" -s 127.0.0.1 -p "$held" 127.0.0.1 "$port" </dev/null >/dev/null 2>"$WORK/err" || status=$?
[ "$status" = 1 ] || fail "a held source port: exit $status, expected 1 ($(cat "$WORK/err"))"
[ "$(wc -l <"$WORK/err")" = 1 ] || fail "a held source port: expected one line, got: $(cat "$WORK/err")"
says "$WORK/err" "^vmcat: .*Address already in use" "a held source port"
echo "ok: -s and -p over shared memory and TCP; a held port fails in one line"
