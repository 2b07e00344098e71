# A peer killed (kill -9) in the middle of a transfer ends vmcat within a second, whichever way the bytes flow and
# over both transports; the one that was sending says so and exits 1, the one receiving ends at end of stream.
source "$(dirname "$0")/lib.sh"
need ss python3

# $1: who is killed (the listener while it "sends" or "receives"); $2: transport.
kill_case() {
    local role=$1 transport=$2 port survivor victim
    port=$(free_port)
    if [ "$role" = sends ]; then
        start "$VMCAT" --transport "$transport" -l 127.0.0.1 "$port" </dev/zero
        victim=$LAST
        wait_listening 127.0.0.1 "$port"
        start "$VMCAT" --transport "$transport" -d 127.0.0.1 "$port" >/dev/null 2>"$WORK/err"
    else
        start "$VMCAT" --transport "$transport" -d -l 127.0.0.1 "$port" >/dev/null
        victim=$LAST
        wait_listening 127.0.0.1 "$port"
        start "$VMCAT" --transport "$transport" 127.0.0.1 "$port" </dev/zero 2>"$WORK/err"
    fi
    survivor=$LAST
    sleep 0.5
    kill -0 "$survivor" 2>/dev/null || fail "$transport: vmcat ended before the kill: $(cat "$WORK/err")"
    kill -9 "$victim"
    local status=0
    wait_for "$survivor" 1 || status=$?
    echo "$transport, peer that $role killed: vmcat ended with status $status: $(cat "$WORK/err")"
    [ "$(wc -l <"$WORK/err")" -le 1 ] || fail "more than one line on stderr: $(cat "$WORK/err")"
}
for transport in shm tcp; do
    kill_case sends "$transport"
    kill_case receives "$transport"
done
echo "ok: vmcat ends within a second of its peer's death"
