# A connector from another user, whom the listener's policy does not admit: it falls back to TCP with the one
# reason that tells an operator what to change ("refused by the listener's policy"), whatever the timing of the
# listener's reject and close against the connector's hello (issue 20). Ten connects, to meet both orders.
source "$(dirname "$0")/lib.sh"
need setpriv python3
[ "$(id -u)" = 0 ] || skip "needs root to run a process as another user (setpriv)"
uid=65534
setpriv --reuid=$uid --regid=$uid --clear-groups true 2>"$WORK/err" || skip "setpriv cannot switch users here: $(cat "$WORK/err")"
setpriv --reuid=$uid --regid=$uid --clear-groups test -x "$PEER" || skip "uid $uid cannot run $PEER (the build folder is not readable to it)"
for round in $(seq 10); do
    port=$(free_port)
    start "$PEER" cat-listen 127.0.0.1 "$port" --echo 2>"$WORK/listener"
    wait_listening 127.0.0.1 "$port"
    echo "round $round" | setpriv --reuid=$uid --regid=$uid --clear-groups "$PEER" cat 127.0.0.1 "$port" \
        >"$WORK/back" 2>"$WORK/client" || fail "client, round $round: $(cat "$WORK/client")"
    says "$WORK/client" "transport: TCP (refused by the listener's policy)" "client, round $round"
    says "$WORK/back" "round $round" "echo, round $round"
    wait_for "$LAST" || fail "listener, round $round: $(cat "$WORK/listener")"
done
echo "ok: ten connects from uid $uid fell back to TCP, each saying the listener's policy refused it"
