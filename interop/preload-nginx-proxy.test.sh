# nginx as a reverse proxy under vmsock-run (issue 19): a front port whose location proxies every request to a
# back port of the same nginx, which serves static files (100 B, 3 MiB + 1 B); as one process, and as a master
# with 2 forked workers. curl, under vmsock-run, fetches through the front; every file comes back checksummed.
# curl's connections to nginx are shared memory, and so are nginx's own connects to the back port, in the one
# process and in a forked worker (whose connection the other worker may accept). nginx adds its upstream
# socket to its epoll set, edge-triggered, before it connects: that registration must turn into the rings' when
# the connect does (before, the proxied 3 MiB file never arrived).
source "$(dirname "$0")/lib.sh"
PATH=$PATH:/usr/sbin  # where Debian puts nginx, off a user's PATH
need nginx curl python3
[ -x "$VMSOCK_RUN" ] || fail "$VMSOCK_RUN is not built (swift build)"
R="$VMSOCK_RUN --debug"
mkdir -p "$WORK/www"
head -c 100 /dev/urandom | base64 -w 0 | head -c 100 >"$WORK/www/tiny.txt"
random_file "$WORK/www/odd.bin" $(((3 << 20) + 1))

# proxy NAME PROCESS-DIRECTIVES WORKERS UPSTREAM-TRANSPORT
proxy() {
    local name=$1 processes=$2 workers=$3 expected=$4 dir="$WORK/$1" back front master round file logs clients upstream upstream_shm
    mkdir -p "$dir/temp"
    back=$(free_port)
    front=$(free_port)
    interop/programs/nginx-conf.sh "$dir" "$back" "$WORK/www" "$processes" \
        "server { listen 127.0.0.1:$front; location / { proxy_pass http://127.0.0.1:$back; } }" \
        >"$dir/nginx.conf"
    start $R nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" >"$dir/master.out" 2>"$dir/master.err"
    master=$LAST
    CLEANUPS+=("kill -TERM $master; sleep 0.3; pkill -9 -P $master")
    wait_listening 127.0.0.1 "$back"
    wait_listening 127.0.0.1 "$front"
    for _ in $(seq 50); do [ "$(pgrep -c -P "$master")" -ge "$workers" ] && break; sleep 0.1; done

    for round in 1 2 3; do
        for file in tiny.txt odd.bin; do
            timeout 30 $R curl -sS --fail -o "$dir/got" "http://127.0.0.1:$front/$file" 2>>"$dir/curl.err" \
                || fail "$name: curl $file through the proxy exited $? (124: 30 s timeout): $(cat "$dir/curl.err"; tail -5 "$dir/error.log")"
            same "$WORK/www/$file" "$dir/got" "$name: round $round, $file through the proxy"
        done
    done
    kill -0 "$master" 2>/dev/null || fail "$name: nginx died: $(tail -5 "$dir/error.log")"
    ! grep -qE "\[(alert|crit|emerg)\]" "$dir/error.log" \
        || fail "$name: nginx logged: $(grep -E '\[(alert|crit|emerg)\]' "$dir/error.log" | head -5)"

    # The debug lines: curl's connects to the front, nginx's connects to the back (in its error log).
    logs=("$dir/error.log" "$dir/master.err")
    clients=$(grep -c "connect fd .* to 127.0.0.1:$front: shared memory" "$dir/curl.err" || true)
    upstream=$(cat "${logs[@]}" | grep -c "connect fd .* to 127.0.0.1:$back" || true)
    upstream_shm=$(cat "${logs[@]}" | grep -c "connect fd .* to 127.0.0.1:$back: $expected" || true)
    echo "$name: curl: $clients of 6 connections to the front over shared memory; nginx: $upstream_shm of $upstream connections to the back over $expected"
    [ "$clients" = 6 ] || fail "$name: curl used TCP: $(cat "$dir/curl.err")"
    [ "$upstream" -ge 6 ] || fail "$name: nginx made $upstream connections to the back port for 6 requests: $(cat "${logs[@]}" | tail -20)"
    [ "$upstream_shm" = "$upstream" ] \
        || fail "$name: $((upstream - upstream_shm)) of $upstream upstream connections did not use $expected: $(cat "${logs[@]}" | grep "connect fd" | head -3)"
    kill -QUIT "$master"
    wait_for "$master" 10 || fail "$name: nginx did not stop gracefully: $(tail -5 "$dir/error.log")"
    echo "$name: ok"
}

proxy one-process "master_process off;" 0 "shared memory"
proxy two-workers "master_process on; worker_processes 2;" 2 "shared memory"
echo "ok: nginx proxied 6 files to curl, checksummed, both hops over shared memory: as one process, and with 2 workers"
