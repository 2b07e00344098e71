# VMSOCK_TRANSPORT: `shm` against a plain TCP server fails with ECONNREFUSED and the reason; `tcp` against a
# vmsock listener uses TCP and says the policy disabled shared memory.
source "$(dirname "$0")/lib.sh"
need nc ss python3
port=$(free_port)
start nc -l 127.0.0.1 "$port"
wait_listening 127.0.0.1 "$port"
if echo x | VMSOCK_TRANSPORT=shm "$PEER" cat 127.0.0.1 "$port" 2>"$WORK/shm"; then fail "shm policy connected to a plain TCP server"; fi
says "$WORK/shm" "no shared-memory listener" "shm policy"
says "$WORK/shm" "ECONNREFUSED" "shm policy"

port=$(free_port)
start "$PEER" cat-listen 127.0.0.1 "$port" --echo 2>"$WORK/listener"
wait_listening 127.0.0.1 "$port"
echo hello | VMSOCK_TRANSPORT=tcp "$PEER" cat 127.0.0.1 "$port" >"$WORK/back" 2>"$WORK/tcp" || fail "tcp policy: $(cat "$WORK/tcp")"
says "$WORK/tcp" "transport: TCP (shared memory off by policy)" "tcp policy"
says "$WORK/back" "hello" "tcp policy echo"
echo "ok: shm refuses to fall back; tcp never uses shared memory"
