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
says "$WORK/client" "transport: shared memory local 127.0.0.1:0 peer 127.0.0.1:$port" "client"
says "$WORK/listener" "transport: shared memory local 127.0.0.1:$port peer 127.0.0.1:0" "listener"
echo "ok: both sides report shared memory"
