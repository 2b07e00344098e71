# Two vmsock processes on this host pick shared memory, and say so; the bytes survive both ways.
source "$(dirname "$0")/lib.sh"
need ss python3
random_file "$WORK/up" $((8 << 20))
port=$(free_port)
start "$PEER" cat-listen 127.0.0.1 "$port" --echo 2>"$WORK/listener"
listener=$LAST
wait_listening 127.0.0.1 "$port"
"$PEER" cat 127.0.0.1 "$port" <"$WORK/up" >"$WORK/back" 2>"$WORK/client" || fail "client: $(cat "$WORK/client")"
wait_for "$listener" || fail "listener: $(cat "$WORK/listener")"
same "$WORK/up" "$WORK/back" "echo over shared memory"
says "$WORK/client" "transport: shared memory local 127.0.0.1:[1-9][0-9]* peer 127.0.0.1:$port" "client (a port of its own, as over TCP)"
says "$WORK/listener" "transport: shared memory local 127.0.0.1:$port peer 127.0.0.1:[1-9][0-9]*" "listener"
mine=$(grep -o "local 127.0.0.1:[0-9]*" "$WORK/client" | cut -d: -f2)
theirs=$(grep -o "peer 127.0.0.1:[0-9]*" "$WORK/listener" | cut -d: -f2)
[ "$mine" = "$theirs" ] || fail "the client's port is $mine, the listener sees $theirs"
echo "ok: both sides report shared memory"
