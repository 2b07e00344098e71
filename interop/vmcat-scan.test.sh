# -z only checks that something listens: exit 0 on a vmcat listener (shared memory) and on a plain TCP server, 1
# on a closed port, silent without -v, one line with it.
source "$(dirname "$0")/lib.sh"
need nc ss python3

port=$(free_port)
start "$VMCAT" -l 127.0.0.1 "$port" </dev/null >/dev/null
wait_listening 127.0.0.1 "$port"
"$VMCAT" -zv 127.0.0.1 "$port" 2>"$WORK/err" || fail "-z on a vmcat listener: exit $?: $(cat "$WORK/err")"
says "$WORK/err" "Connection to 127.0.0.1 $port port succeeded via shared memory" "-zv on a vmcat listener"

port=$(free_port)
start nc -l 127.0.0.1 "$port" </dev/null >/dev/null
wait_listening 127.0.0.1 "$port"
"$VMCAT" -z -v 127.0.0.1 "$port" 2>"$WORK/err" || fail "-z on nc -l: exit $?: $(cat "$WORK/err")"
says "$WORK/err" "succeeded via TCP (no shared-memory listener)" "-zv on nc -l"

port=$(free_port)
status=0; "$VMCAT" -z 127.0.0.1 "$port" 2>"$WORK/err" || status=$?
[ "$status" = 1 ] || fail "-z on a closed port: exit $status, expected 1"
[ ! -s "$WORK/err" ] || fail "-z without -v printed: $(cat "$WORK/err")"
status=0; "$VMCAT" -zv 127.0.0.1 "$port" 2>"$WORK/err" || status=$?
[ "$status" = 1 ] || fail "-zv on a closed port: exit $status, expected 1"
[ "$(wc -l <"$WORK/err")" = 1 ] || fail "-zv on a closed port: expected one line, got: $(cat "$WORK/err")"
says "$WORK/err" "vmcat: connect to 127.0.0.1 port $port .*failed: Connection refused" "-zv on a closed port"
status=0; "$VMCAT" -z --transport shm 127.0.0.1 "$port" 2>/dev/null || status=$?
[ "$status" = 1 ] || fail "-z --transport shm on a closed port: exit $status, expected 1"
echo "ok: -z exit codes 0 and 1"
