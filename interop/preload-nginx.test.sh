# nginx, unmodified, under vmsock-run (issue 19): a master and 2 forked workers (epoll, accept4, sendfile,
# keep-alive) serve static files (100 B, 4 KiB, 3 MiB + 1 B, 8 MiB) to curl under vmsock-run, several per
# keep-alive connection, each checksummed, then to wrk under vmsock-run for 2 s (no socket errors, no non-2xx).
# Correctness is always checked. EXPECT_SHARED_MEMORY=1 also requires that every connection was shared memory,
# from the --debug lines of curl and wrk and of the workers (in nginx's error_log); until forked workers accept
# over shared memory that part fails, and EXPECT_SHARED_MEMORY=0 only reports what the lines say.
EXPECT_SHARED_MEMORY=${EXPECT_SHARED_MEMORY:-1}
source "$(dirname "$0")/lib.sh"
PATH=$PATH:/usr/sbin  # where Debian puts nginx, off a user's PATH
need nginx curl wrk ss python3
[ -x "$VMSOCK_RUN" ] || fail "$VMSOCK_RUN is not built (swift build)"
R="$VMSOCK_RUN --debug"
port=$(free_port)
mkdir -p "$WORK/www" "$WORK/temp"
head -c 100 /dev/urandom | base64 -w 0 | head -c 100 >"$WORK/www/tiny.txt"
random_file "$WORK/www/small.bin" 4096
random_file "$WORK/www/odd.bin" $(((3 << 20) + 1))
random_file "$WORK/www/big.bin" $((8 << 20))
cat >"$WORK/nginx.conf" <<CONF
daemon off;
master_process on;
worker_processes 2;
$([ "$(id -u)" = 0 ] && echo "user root;")
pid $WORK/nginx.pid;
error_log $WORK/error.log info;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 30;
    keepalive_requests 100000;
    client_body_temp_path $WORK/temp/body;
    proxy_temp_path $WORK/temp/proxy;
    fastcgi_temp_path $WORK/temp/fastcgi;
    uwsgi_temp_path $WORK/temp/uwsgi;
    scgi_temp_path $WORK/temp/scgi;
    types { text/plain txt; application/octet-stream bin; }
    server {
        listen 127.0.0.1:$port;
        root $WORK/www;
    }
}
CONF
start $R nginx -p "$WORK" -c "$WORK/nginx.conf" -e "$WORK/error.log" >"$WORK/master.out" 2>"$WORK/master.err"
master=$LAST
# The workers are the master's children: a graceful stop, then whatever is left of them.
CLEANUPS+=("kill -TERM $master; sleep 0.3; pkill -9 -P $master")
wait_listening 127.0.0.1 "$port"
for _ in $(seq 50); do [ "$(pgrep -c -P "$master")" -ge 2 ] && break; sleep 0.1; done
[ "$(pgrep -c -P "$master")" -ge 2 ] || fail "nginx started no 2 workers: $(cat "$WORK/error.log" "$WORK/master.err")"

# curl: every file twice on one keep-alive connection, then each on its own.
args=()
for name in tiny.txt small.bin odd.bin big.bin tiny.txt big.bin; do
    args+=(-o "$WORK/got.$((${#args[@]} / 2)).$name" "http://127.0.0.1:$port/$name")
done
timeout 60 $R curl -sS --fail "${args[@]}" 2>"$WORK/curl.err" || fail "curl (keep-alive): $(cat "$WORK/curl.err")"
for got in "$WORK"/got.*; do same "$WORK/www/${got##*.[0-9].}" "$got" "curl, keep-alive, ${got##*/}"; done
connects=$(grep -c "connect fd" "$WORK/curl.err" || true)
[ "$connects" = 1 ] || fail "curl made $connects connections for 6 files, not 1 (keep-alive): $(cat "$WORK/curl.err")"
for name in tiny.txt small.bin odd.bin big.bin; do
    timeout 60 $R curl -sS --fail -o "$WORK/one" "http://127.0.0.1:$port/$name" 2>>"$WORK/curl.err" \
        || fail "curl $name: $(cat "$WORK/curl.err")"
    same "$WORK/www/$name" "$WORK/one" "curl $name"
done
[ "$(timeout 10 $R curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/missing" 2>>"$WORK/curl.err")" = 404 ] \
    || fail "nginx did not answer 404 for a missing file"

# wrk: 2 threads, 20 keep-alive connections, 2 s, on the small and the 3 MiB file.
for name in small.bin odd.bin; do
    timeout 60 $R wrk -t 2 -c 20 -d 2s "http://127.0.0.1:$port/$name" >"$WORK/wrk.out" 2>>"$WORK/wrk.err" \
        || fail "wrk $name: $(cat "$WORK/wrk.out" "$WORK/wrk.err")"
    grep -q "Requests/sec:" "$WORK/wrk.out" || fail "wrk $name: no result: $(cat "$WORK/wrk.out")"
    ! grep -qE "Socket errors|Non-2xx" "$WORK/wrk.out" || fail "wrk $name: errors: $(cat "$WORK/wrk.out")"
    requests=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$WORK/wrk.out")
    [ "${requests:-0}" -gt 0 ] || fail "wrk $name: no requests: $(cat "$WORK/wrk.out")"
    echo "wrk $name: $requests requests, $(grep -o 'Requests/sec: *[0-9.]*' "$WORK/wrk.out")"
done
kill -0 "$master" 2>/dev/null || fail "nginx died: $(tail -5 "$WORK/error.log")"
[ "$(pgrep -c -P "$master")" -ge 2 ] || fail "an nginx worker died: $(grep -E 'signal|exited' "$WORK/error.log" | head -5)"
! grep -qE "\[(alert|crit|emerg)\]" "$WORK/error.log" || fail "nginx logged: $(grep -E '\[(alert|crit|emerg)\]' "$WORK/error.log" | head -5)"

# What the debug lines say: clients (curl, wrk) and workers (error_log, where nginx sends their stderr).
clients=$(cat "$WORK/curl.err" "$WORK/wrk.err" | grep -c "connect fd" || true)
client_shm=$(cat "$WORK/curl.err" "$WORK/wrk.err" | grep -c "connect fd .*: shared memory" || true)
accepts=$(grep -c "accept fd" "$WORK/error.log" || true)
accept_shm=$(grep -c "accept fd .*: shared memory" "$WORK/error.log" || true)
echo "debug lines: $client_shm of $clients client connections and $accept_shm of $accepts worker accepts were shared memory"
grep -h -m1 "connect fd .*: tcp" "$WORK/curl.err" "$WORK/wrk.err" | sed 's/^/  first TCP connect: /' || true
grep -m1 "accept fd .*: tcp" "$WORK/error.log" | sed 's/^/  first TCP accept: /' || true
[ "$clients" -gt 0 ] || fail "curl and wrk printed no debug lines"
if [ "$EXPECT_SHARED_MEMORY" = 1 ]; then
    # Marked: fails until nginx's forked workers accept over shared memory (EXPECT_SHARED_MEMORY=0 skips it).
    [ "$client_shm" = "$clients" ] || fail "$((clients - client_shm)) of $clients client connections used TCP"
    [ "$accepts" -ge "$clients" ] && [ "$accept_shm" = "$accepts" ] \
        || fail "the workers accepted $accept_shm of $accepts connections over shared memory (clients made $clients)"
fi
kill -QUIT "$master"
wait_for "$master" 10 || fail "nginx did not stop gracefully: $(tail -5 "$WORK/error.log")"
echo "ok: nginx served curl and wrk, every file intact$([ "$EXPECT_SHARED_MEMORY" = 1 ] && echo ", over shared memory")"
