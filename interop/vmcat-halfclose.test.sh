# Half-close: with -N, end of file on stdin shuts down vmcat's writing only; the answer the server sends after
# that still arrives, and vmcat ends at the server's end of stream. Over shared memory (a vmsock echo listener)
# and over TCP (a server that answers only after end of stream).
source "$(dirname "$0")/lib.sh"
need ss python3
random_file "$WORK/data" $((8 << 20))

port=$(free_port)
start "$PEER" cat-listen 127.0.0.1 "$port" --echo 2>"$WORK/listener"
wait_listening 127.0.0.1 "$port"
"$VMCAT" -v -N 127.0.0.1 "$port" <"$WORK/data" >"$WORK/back" 2>"$WORK/client" || fail "client: $(cat "$WORK/client")"
same "$WORK/data" "$WORK/back" "echo through shared memory after -N"
says "$WORK/client" "via shared memory" "client -v"

# The TCP server reads to end of stream, waits, then answers: only a half-closed connection gets the answer.
port=$(free_port)
start python3 -c "
import socket, time; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', $port)); s.listen(); c, _ = s.accept(); got = b''
while True:
    b = c.recv(65536)
    if not b: break
    got += b
time.sleep(0.3); c.sendall(b'answer to ' + got); c.close()"
wait_listening 127.0.0.1 "$port"
echo question | "$VMCAT" -N 127.0.0.1 "$port" >"$WORK/answer" 2>"$WORK/client" || fail "client: $(cat "$WORK/client")"
[ "$(cat "$WORK/answer")" = "answer to question" ] || fail "half-close over TCP: got '$(cat "$WORK/answer")'"

# -q 0 quits right after end of file on stdin, without waiting for the peer (which never answers here).
port=$(free_port)
start "$VMCAT" -l 127.0.0.1 "$port" </dev/null >"$WORK/got"
listener=$LAST
wait_listening 127.0.0.1 "$port"
echo bye | timeout 5 "$VMCAT" -q 0 127.0.0.1 "$port" || fail "-q 0 did not end at once"
wait_for "$listener" 5 || fail "listener after -q 0"
says "$WORK/got" bye "-q 0"

# A listener with a file to send, whose client sends a line and quits at once without reading: the listener
# stops sending when the peer reads no more, takes the line and ends with status 0, as nc does.
port=$(free_port)
start "$VMCAT" -l 127.0.0.1 "$port" <"$WORK/data" >"$WORK/got"
listener=$LAST
wait_listening 127.0.0.1 "$port"
echo bye | timeout 5 "$VMCAT" -q 0 127.0.0.1 "$port" >/dev/null || fail "-q 0 against a sending listener"
wait_for "$listener" 5 || fail "a sending listener whose client quit did not end with status 0"
says "$WORK/got" bye "the sending listener"
echo "ok: -N half-close over both transports, -q 0, a client that quits without reading"
