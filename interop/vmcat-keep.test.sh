# -k: one listener serves clients one after another, over shared memory and TCP, and keeps listening.
source "$(dirname "$0")/lib.sh"
need ss python3
port=$(free_port)
start "$VMCAT" -v -lk 127.0.0.1 "$port" </dev/null >"$WORK/got" 2>"$WORK/listener"
listener=$LAST
wait_listening 127.0.0.1 "$port"
for i in 1 2 3; do
    transport=auto; [ "$i" = 2 ] && transport=tcp
    echo "client $i" | "$VMCAT" -N --transport "$transport" 127.0.0.1 "$port" || fail "client $i"
    wait_contains "$WORK/got" 5 "client $i"
done
kill -0 "$listener" 2>/dev/null || fail "the -k listener ended: $(cat "$WORK/listener")"
[ "$(cat "$WORK/got")" = "$(printf 'client 1\nclient 2\nclient 3')" ] || fail "got: $(cat "$WORK/got")"
[ "$(grep -c 'Connection received' "$WORK/listener")" = 3 ] || fail "listener said: $(cat "$WORK/listener")"
says "$WORK/listener" "via TCP" "the second client came over TCP"
echo "ok: three clients in turn"
