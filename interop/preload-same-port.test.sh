# Two clients with the same port on different addresses (issue 18): a plain TCP client from 127.0.0.1:P and a
# client under vmsock-run from 127.0.0.2:P, both to one listener under vmsock-run that accepts the plain one
# first. vmsock-run's accept pairs a connection with its hello by the connector's address and port; by the port
# alone it gave the plain client's connection the other client's link, and neither got its own answer back.
source "$(dirname "$0")/lib.sh"
need python3 ss
[ -x "$VMSOCK_RUN" ] || fail "$VMSOCK_RUN is not built (swift build)"
python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.2", 0))' 2>/dev/null || skip "cannot bind 127.0.0.2"

cat >"$WORK/server.py" <<'EOF'
import socket, sys, time
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", int(sys.argv[1])))
listener.listen(8)
time.sleep(float(sys.argv[2]))  # both clients connect before the first accept, the plain one first
for _ in range(2):
    connection, _ = listener.accept()
    connection.settimeout(10)
    data = connection.recv(100)
    connection.sendall(b"got " + data)
    connection.close()
EOF
cat >"$WORK/client.py" <<'EOF'
import socket, sys
client = socket.socket()
client.bind((sys.argv[1], int(sys.argv[2])))
client.settimeout(10)
client.connect(("127.0.0.1", int(sys.argv[3])))
client.sendall(sys.argv[4].encode())
answer = client.recv(100).decode()
print(answer)
sys.exit(0 if answer == "got " + sys.argv[4] else 1)
EOF

listen_port=$(free_port)
client_port=$(free_port)
start "$VMSOCK_RUN" --debug python3 "$WORK/server.py" "$listen_port" 2 2>"$WORK/server.err"
server=$LAST
wait_listening 127.0.0.1 "$listen_port"
start python3 "$WORK/client.py" 127.0.0.1 "$client_port" "$listen_port" plain >"$WORK/plain" 2>&1
plain=$LAST
sleep 0.5
"$VMSOCK_RUN" --debug python3 "$WORK/client.py" 127.0.0.2 "$client_port" "$listen_port" shared >"$WORK/shared" 2>"$WORK/shared.err" \
    || fail "the client under vmsock-run got '$(cat "$WORK/shared")': $(cat "$WORK/shared.err") / server: $(cat "$WORK/server.err")"
wait_for "$plain" 15 || fail "the plain client got '$(cat "$WORK/plain")'; server: $(cat "$WORK/server.err")"
wait_for "$server" 15 || fail "the server failed: $(cat "$WORK/server.err")"
says "$WORK/server.err" "from 127.0.0.1:$client_port: tcp" "the plain client's connection stayed TCP"
says "$WORK/server.err" "from 127.0.0.2:$client_port: shared memory" "the other client's connection got its link"
count_says "$WORK/shared.err" 1 "shared memory"
echo "ok: same port, two addresses: each connection got its own answer, the preloaded one over shared memory"
