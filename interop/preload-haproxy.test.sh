# haproxy, unmodified, under vmsock-run, in front of nginx (2 forked workers) under vmsock-run: haproxy with 2
# threads (epoll), an HTTP frontend and a TCP frontend that splices both ways (`option splice-request` and
# `splice-response`: non-blocking splice calls between the sockets and blocking pipes). curl under vmsock-run
# fetches a 3 MiB file through each frontend three times (checksummed) and wrk under vmsock-run runs 2 s through
# the HTTP one (no socket errors, no non-2xx answers). Every connection of haproxy, both sides, is shared memory.
# Then haproxy in master-worker mode (-W, how Debian's service runs it), reloaded twice (SIGUSR2: the master execs
# itself again and its new worker takes the listeners over a socket from the old one) while curl fetches a file
# over and over: every answer must be right. Its connections to nginx are shared memory; its clients' are TCP (the
# master registers the listener and then closes its copy, leaving it to the worker: DESIGN.md, vmsock-run).
source "$(dirname "$0")/lib.sh"
PATH=$PATH:/usr/sbin  # where Debian puts nginx and haproxy, off a user's PATH
need haproxy nginx curl wrk ss python3
[ -x "$VMSOCK_RUN" ] || fail "$VMSOCK_RUN is not built (swift build)"
R="$VMSOCK_RUN --debug"
mkdir -p "$WORK/www" "$WORK/nginx/temp"
random_file "$WORK/www/big.bin" $(((3 << 20) + 1))
echo hello >"$WORK/www/small.txt"
backend=$(free_port) http=$(free_port) spliced=$(free_port)
interop/programs/nginx-conf.sh "$WORK/nginx" "$backend" "$WORK/www" "master_process on; worker_processes 2;" \
    >"$WORK/nginx/nginx.conf"
start $R nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" >/dev/null 2>&1
CLEANUPS+=("kill -TERM $LAST; sleep 0.3; pkill -9 -P $LAST")
wait_listening 127.0.0.1 "$backend"

# config FRONTEND-LINES: haproxy's configuration, the HTTP frontend on $http, and more frontend lines.
config() {
    cat <<CONF
global
    maxconn 1000
    nbthread 2
    $1
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend web
    bind 127.0.0.1:$http
    default_backend nginx
backend nginx
    server s1 127.0.0.1:$backend
$2
CONF
}
config "" "frontend spliced
    mode tcp
    bind 127.0.0.1:$spliced
    default_backend nginx-spliced
backend nginx-spliced
    mode tcp
    option splice-request
    option splice-response
    server s1 127.0.0.1:$backend" >"$WORK/haproxy.cfg"
start $R haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.out" 2>"$WORK/haproxy.err"
haproxy=$LAST
wait_listening 127.0.0.1 "$http"
wait_listening 127.0.0.1 "$spliced"

for port in "$http" "$spliced"; do
    for round in 1 2 3; do
        timeout 30 $R curl -sS --fail -o "$WORK/got" "http://127.0.0.1:$port/big.bin" 2>>"$WORK/curl.err" \
            || fail "curl through haproxy's port $port exited $?: $(tail -3 "$WORK/curl.err")"
        same "$WORK/www/big.bin" "$WORK/got" "curl through haproxy's port $port, round $round"
    done
done
grep -q "splice: fd [0-9]*, a shared-memory connection, is copied" "$WORK/haproxy.err" \
    || fail "haproxy never spliced a shared-memory connection: $(grep -i splice "$WORK/haproxy.err" | head -3)"
timeout 60 $R wrk -t 2 -c 20 -d 2s "http://127.0.0.1:$http/small.txt" >"$WORK/wrk.out" 2>>"$WORK/wrk.err" \
    || fail "wrk: $(cat "$WORK/wrk.out" "$WORK/wrk.err")"
grep -q "Requests/sec:" "$WORK/wrk.out" || fail "wrk: no result: $(cat "$WORK/wrk.out")"
! grep -qE "Non-2xx|Socket errors" "$WORK/wrk.out" || fail "wrk: $(grep -E 'Non-2xx|Socket errors' "$WORK/wrk.out")"
echo "haproxy: wrk $(grep -o 'Requests/sec: *[0-9.]*' "$WORK/wrk.out")"
kill -0 "$haproxy" 2>/dev/null || fail "haproxy died: $(tail -5 "$WORK/haproxy.err")"
kill -TERM "$haproxy"
wait_for "$haproxy" 10 || true
for kind in accept connect; do
    shm=$(grep -cE "$kind fd [0-9]+ .*: shared memory" "$WORK/haproxy.err" || true)
    tcp=$(grep -cE "$kind fd [0-9]+ .*: tcp" "$WORK/haproxy.err" || true)
    [ "$shm" -ge 26 ] && [ "$tcp" = 0 ] \
        || fail "haproxy's ${kind}s: $shm shared memory, $tcp tcp: $(grep -E "$kind fd .*: tcp" "$WORK/haproxy.err" | head -3)"
done

# Master-worker mode, reloaded twice under load.
config "stats socket $WORK/haproxy.sock mode 600 level admin expose-fd listeners" "" >"$WORK/workers.cfg"
start $R haproxy -W -db -f "$WORK/workers.cfg" >"$WORK/workers.out" 2>"$WORK/workers.err"
master=$LAST
CLEANUPS+=("kill -TERM $master; sleep 0.3; pkill -9 -P $master")
wait_listening 127.0.0.1 "$http"
(
    for i in $(seq 300); do
        $R curl -sS --fail --max-time 10 "http://127.0.0.1:$http/small.txt" 2>>"$WORK/loop.err" >"$WORK/loop.got" \
            && [ "$(cat "$WORK/loop.got")" = hello ] || { echo "request $i: $(tail -2 "$WORK/loop.err")"; exit 1; }
    done
) >"$WORK/loop.out" &
loop=$!
# count_reaches FILE N PATTERN: waits (10 s at most) until FILE has N lines matching PATTERN.
count_reaches() {
    for _ in $(seq 100); do
        [ "$(grep -c "$3" "$1")" -ge "$2" ] && return 0
        sleep 0.1
    done
    fail "expected $2 lines matching '$3' in $1: $(grep -E 'NOTICE|ALERT|WARNING' "$1" | tail -5)"
}
count_reaches "$WORK/workers.err" 1 "Loading success"
for reload in 1 2; do
    sleep 1
    kill -0 "$loop" 2>/dev/null || fail "the requests ended before reload $reload: $(cat "$WORK/loop.out")"
    kill -USR2 "$master"
    count_reaches "$WORK/workers.err" $((reload + 1)) "Loading success"
    count_reaches "$WORK/workers.err" "$reload" "Former worker .* exited"
done
wait "$loop" || fail "a request through the reloaded haproxy failed: $(cat "$WORK/loop.out")"
grep -qE "connect fd [0-9]+ .*: shared memory" "$WORK/workers.err" \
    || fail "no connection of the reloaded haproxy to nginx was shared memory: $(grep 'connect fd' "$WORK/workers.err" | head -3)"
echo "haproxy -W: 300 requests right through two reloads" \
    "($(grep -cE 'accept fd [0-9]+ .*: tcp' "$WORK/workers.err") accepted over TCP," \
    "$(grep -cE 'connect fd [0-9]+ .*: shared memory' "$WORK/workers.err") connections to nginx over shared memory)"
