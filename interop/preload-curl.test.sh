# curl (poll, non-blocking connect) fetches a 100 MiB file from python3 -m http.server, both under vmsock-run:
# the bytes arrive intact, and both ends say shared memory (issue 18).
source "$(dirname "$0")/lib.sh"
need curl python3 ss
[ -x "$VMSOCK_RUN" ] || fail "$VMSOCK_RUN is not built (swift build)"
mkdir -p "$WORK/www"
random_file "$WORK/www/big" $((100 << 20))
port=$(free_port)
run=$(realpath "$VMSOCK_RUN")
(cd "$WORK/www" && exec "$run" --debug python3 -m http.server "$port" --bind 127.0.0.1) \
    >"$WORK/server.out" 2>&1 &
PIDS+=($!)  # vmsock-run, then python3, exec in its place: one process to kill
wait_listening 127.0.0.1 "$port"
timeout 60 "$VMSOCK_RUN" --debug curl -sS -o "$WORK/got" "http://127.0.0.1:$port/big" 2>"$WORK/client.err" \
    || fail "curl failed: $(cat "$WORK/client.err")"
same "$WORK/www/big" "$WORK/got" "curl from http.server"
count_says "$WORK/client.err" 1 "shared memory"
wait_contains "$WORK/server.out" 5 "accept fd"
count_says "$WORK/server.out" 1 "shared memory"
echo "ok: 100 MiB through curl and http.server over shared memory"
