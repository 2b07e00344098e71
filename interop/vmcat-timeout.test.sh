# -w: a connection with no bytes either way for that long ends (status 0, as nc), over both transports; bytes that
# keep flowing keep it alive.
source "$(dirname "$0")/lib.sh"
need ss python3
for transport in shm tcp; do
    port=$(free_port)
    start "$VMCAT" -l 127.0.0.1 "$port" </dev/null >/dev/null
    wait_listening 127.0.0.1 "$port"
    begin=$(date +%s%N)
    timeout 5 "$VMCAT" -w 1 -d --transport "$transport" 127.0.0.1 "$port" || fail "$transport: -w 1 idle: exit $?"
    took=$(( ($(date +%s%N) - begin) / 1000000 ))
    [ "$took" -ge 900 ] && [ "$took" -le 2000 ] || fail "$transport: -w 1 ended an idle connection after $took ms"
done
port=$(free_port)
start "$VMCAT" -l 127.0.0.1 "$port" </dev/null >"$WORK/got"
wait_listening 127.0.0.1 "$port"
{ for i in 1 2 3 4; do echo "tick $i"; sleep 0.4; done; } | timeout 5 "$VMCAT" -w 1 127.0.0.1 "$port" || fail "-w 1 with traffic"
wait_contains "$WORK/got" 2 "tick 4"
echo "ok: -w ends idle connections only"
