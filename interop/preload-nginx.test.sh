# nginx, unmodified, under vmsock-run (issue 19): a master with 2 forked workers, and (with EXPECT_SHARED_MEMORY=1)
# also nginx as one process (master_process off). Each serves static files (100 B, 4 KiB, 3 MiB + 1 B, 8 MiB;
# epoll, edge-triggered; accept4, sendfile, keep-alive) to curl under vmsock-run, six on one keep-alive connection
# and each alone, checksummed, then to wrk under vmsock-run for 2 s on the 4 KiB and 3 MiB files (no socket errors,
# no non-2xx answers). Correctness is always checked.
# EXPECT_SHARED_MEMORY=1 (the default) is issue 19's goal, met: every connection of both configurations is shared
# memory (forked workers claim the links their master's listener welcomed; the one-process nginx's edge-triggered
# EPOLLOUT waits and wrk's connects work). EXPECT_SHARED_MEMORY=0 runs the 2-worker nginx only, checks the data and
# reports the transport.
EXPECT_SHARED_MEMORY=${EXPECT_SHARED_MEMORY:-1}
source "$(dirname "$0")/lib.sh"
PATH=$PATH:/usr/sbin  # where Debian puts nginx, off a user's PATH
need nginx curl wrk ss python3
[ -x "$VMSOCK_RUN" ] || fail "$VMSOCK_RUN is not built (swift build)"
R="$VMSOCK_RUN --debug"
mkdir -p "$WORK/www"
head -c 100 /dev/urandom | base64 -w 0 | head -c 100 >"$WORK/www/tiny.txt"
random_file "$WORK/www/small.bin" 4096
random_file "$WORK/www/odd.bin" $(((3 << 20) + 1))
random_file "$WORK/www/big.bin" $((8 << 20))

# serve NAME PROCESS-DIRECTIVES SHARED-MEMORY-REQUIRED(1/0)
serve() {
    local name=$1 processes=$2 require=$3 dir="$WORK/$1" port master
    port=$(free_port)
    mkdir -p "$dir/temp"
    interop/programs/nginx-conf.sh "$dir" "$port" "$WORK/www" "$processes" \
        "tcp_nopush on; keepalive_timeout 30; keepalive_requests 100000;" >"$dir/nginx.conf"
    start $R nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" >"$dir/master.out" 2>"$dir/master.err"
    master=$LAST
    # Workers are the master's children: a graceful stop, then whatever is left of them.
    CLEANUPS+=("kill -TERM $master; sleep 0.3; pkill -9 -P $master")
    wait_listening 127.0.0.1 "$port"
    local workers=0
    grep -q "master_process on" <<<"$processes" && workers=2
    for _ in $(seq 50); do [ "$(pgrep -c -P "$master")" -ge $workers ] && break; sleep 0.1; done
    [ "$(pgrep -c -P "$master")" -ge $workers ] || fail "$name: nginx started no $workers workers: $(cat "$dir/error.log")"

    # curl: six files on one keep-alive connection, then each on its own connection, and a 404.
    local args=() got file
    for file in tiny.txt small.bin odd.bin big.bin tiny.txt big.bin; do
        args+=(-o "$dir/got.$((${#args[@]} / 3)).$file" "http://127.0.0.1:$port/$file")
    done
    timeout 30 $R curl -sS --fail "${args[@]}" 2>"$dir/curl.err" \
        || fail "$name: curl (keep-alive) exited $? (124: 30 s timeout); got $(cd "$dir" && stat -c '%n %s B' got.* \
            | tr '\n' ' ')of $(cd "$WORK/www" && stat -c '%n %s B' * | tr '\n' ' '); $(cat "$dir/curl.err")"
    for got in "$dir"/got.*; do same "$WORK/www/${got##*.[0-9].}" "$got" "$name: curl, keep-alive, ${got##*/}"; done
    local connects
    connects=$(grep -c "connect fd" "$dir/curl.err" || true)
    [ "$connects" = 1 ] || fail "$name: curl made $connects connections for 6 files, not 1: $(cat "$dir/curl.err")"
    for file in tiny.txt small.bin odd.bin big.bin; do
        timeout 30 $R curl -sS --fail -o "$dir/one" "http://127.0.0.1:$port/$file" 2>>"$dir/curl.err" \
            || fail "$name: curl $file exited $? (124: 30 s timeout), got $(stat -c %s "$dir/one" 2>/dev/null) bytes" \
                "of $(stat -c %s "$WORK/www/$file"): $(cat "$dir/curl.err")"
        same "$WORK/www/$file" "$dir/one" "$name: curl $file"
    done
    [ "$(timeout 10 $R curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/missing" 2>>"$dir/curl.err")" = 404 ] \
        || fail "$name: nginx did not answer 404 for a missing file"

    # wrk: 2 threads, 20 keep-alive connections, 2 s.
    local requests
    for file in small.bin odd.bin; do
        timeout 60 $R wrk -t 2 -c 20 -d 2s "http://127.0.0.1:$port/$file" >"$dir/wrk.out" 2>>"$dir/wrk.err" \
            || fail "$name: wrk $file: $(cat "$dir/wrk.out" "$dir/wrk.err")"
        grep -q "Requests/sec:" "$dir/wrk.out" || fail "$name: wrk $file: no result: $(cat "$dir/wrk.out")"
        requests=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$dir/wrk.out")
        [ "${requests:-0}" -gt 0 ] || fail "$name: wrk $file: no requests: $(cat "$dir/wrk.out")"
        echo "$name: wrk $file: $requests requests, $(grep -o 'Requests/sec: *[0-9.]*' "$dir/wrk.out")" \
            "$(grep -E 'Socket errors|Non-2xx' "$dir/wrk.out" | tr -s ' ' | tr '\n' ' ')"
        ! grep -q "Non-2xx" "$dir/wrk.out" || fail "$name: wrk $file: $(grep 'Non-2xx' "$dir/wrk.out")"
        ! grep -q "Socket errors" "$dir/wrk.out" || fail "$name: wrk $file: $(grep 'Socket errors' "$dir/wrk.out")"
    done
    kill -0 "$master" 2>/dev/null || fail "$name: nginx died: $(tail -5 "$dir/error.log")"
    [ "$(pgrep -c -P "$master")" -ge $workers ] || fail "$name: an nginx worker died: $(grep -E 'signal|exited' "$dir/error.log" | head -5)"
    ! grep -qE "\[(alert|crit|emerg)\]" "$dir/error.log" \
        || fail "$name: nginx logged: $(grep -E '\[(alert|crit|emerg)\]' "$dir/error.log" | head -5)"

    # What the debug lines say: clients (curl, wrk) and the accepting processes (their stderr goes to error_log).
    local clients client_shm accepts accept_shm
    clients=$(cat "$dir/curl.err" "$dir/wrk.err" | grep -c "connect fd" || true)
    client_shm=$(cat "$dir/curl.err" "$dir/wrk.err" | grep -c "connect fd .*: shared memory" || true)
    accepts=$(cat "$dir/error.log" "$dir/master.err" | grep -c "accept fd" || true)
    accept_shm=$(cat "$dir/error.log" "$dir/master.err" | grep -c "accept fd .*: shared memory" || true)
    echo "$name: $client_shm of $clients client connections and $accept_shm of $accepts accepts were shared memory"
    grep -h -m1 "connect fd .*: tcp" "$dir/curl.err" "$dir/wrk.err" | sed "s/^/$name: first TCP connect: /" || true
    grep -h -m1 "accept fd .*: tcp" "$dir/error.log" "$dir/master.err" | sed "s/^/$name: first TCP accept: /" || true
    [ "$clients" -gt 0 ] || fail "$name: curl and wrk printed no debug lines"
    if [ "$require" = 1 ]; then
        [ "$client_shm" = "$clients" ] || fail "$name: $((clients - client_shm)) of $clients client connections used TCP"
        [ "$accepts" -ge "$clients" ] && [ "$accept_shm" = "$accepts" ] \
            || fail "$name: nginx accepted $accept_shm of $accepts connections over shared memory (clients made $clients)"
    fi
    kill -QUIT "$master"
    wait_for "$master" 10 || fail "$name: nginx did not stop gracefully: $(tail -5 "$dir/error.log")"
}

# Marked (see the top): with EXPECT_SHARED_MEMORY=0 only the forked workers run, and their transport is reported.
serve two-workers "master_process on; worker_processes 2;" "$EXPECT_SHARED_MEMORY"
[ "$EXPECT_SHARED_MEMORY" = 1 ] && serve one-process "master_process off;" 1
echo "ok: nginx served curl and wrk, every file intact" \
    "$([ "$EXPECT_SHARED_MEMORY" = 1 ] && echo "over shared memory, 2 workers and one process" \
        || echo "(2 workers; transport reported above)")"
