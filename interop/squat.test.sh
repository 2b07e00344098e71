# Another local user registers a port's shared-memory endpoint before the real listener does. Clients must not
# trust it: they reach the real listener over TCP and say why ("untrusted owner").
source "$(dirname "$0")/lib.sh"
need setpriv ss python3
[ "$(id -u)" = 0 ] || skip "needs root to run a process as another user (setpriv)"
uid=65534
setpriv --reuid=$uid --regid=$uid --clear-groups true 2>"$WORK/err" || skip "setpriv cannot switch users here: $(cat "$WORK/err")"
setpriv --reuid=$uid --regid=$uid --clear-groups test -x "$PEER" || skip "uid $uid cannot run $PEER (the build folder is not readable to it)"
port=$(free_port)
start setpriv --reuid=$uid --regid=$uid --clear-groups "$PEER" squat "$port"
for _ in $(seq 100); do grep -q "vmsock/tcp-net[0-9]*-127.0.0.1-$port" /proc/net/unix && break; sleep 0.1; done
grep -q "vmsock/tcp-net[0-9]*-127.0.0.1-$port" /proc/net/unix || fail "the squatter did not register"

start "$PEER" cat-listen 127.0.0.1 "$port" --echo 2>"$WORK/listener"
listener=$LAST
wait_listening 127.0.0.1 "$port"
echo "not for the squatter" | "$PEER" cat 127.0.0.1 "$port" >"$WORK/back" 2>"$WORK/client" || fail "client: $(cat "$WORK/client")"
wait_for "$listener" || fail "listener: $(cat "$WORK/listener")"
says "$WORK/client" "transport: TCP (untrusted owner)" "client"
says "$WORK/back" "not for the squatter" "echo through the real listener"
echo "ok: a registration owned by uid $uid is not trusted; TCP reached the real listener"
