# Real servers that fork, under vmsock-run, with preloaded clients: nginx (the master listens, two forked
# workers accept: each claims the link the master's listener thread welcomed; then with `daemon on`, whose
# daemon takes the listener over from the process that made it) and redis-server (a BGSAVE
# child forks while clients are connected and leaves with _exit; then redis --daemonize yes, which listens in a
# forked child). Files come back byte-identical; the connections are shared memory (the VMSOCK_DEBUG lines go to
# nginx's error_log).
source "$(dirname "$0")/lib.sh"
[ -x "$VMSOCK_RUN" ] || fail "$VMSOCK_RUN is not built (swift build)"
need nginx curl redis-server redis-cli redis-benchmark

# nginx: files from 130 KB to 4.2 MB (the ring holds 1 MiB).
mkdir -p "$WORK/ngx/www" "$WORK/ngx/temp"
for n in 1 2 3 4 5 6; do random_file "$WORK/ngx/www/f$n.bin" $((n * n * 117000 + 13000 + n)); done
chmod o+x "$WORK" && chmod -R a+rX "$WORK/ngx/www"  # the workers run as nobody
port=$(free_port)
NGINX_USER= interop/programs/nginx-conf.sh "$WORK/ngx" "$port" "$WORK/ngx/www" \
    "master_process on; worker_processes 2;" >"$WORK/ngx/nginx.conf"
# The master and its workers (a master killed -9 would leave them running, holding our output).
stop_nginx() {
    local master workers pid
    master=$(cat "$WORK/ngx/nginx.pid" 2>/dev/null) || return 0
    workers=$(pgrep -P "$master" || true)
    kill "$master" 2>/dev/null || true
    for pid in $master $workers; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
}
start env VMSOCK_DEBUG=1 "$VMSOCK_RUN" nginx -c "$WORK/ngx/nginx.conf" -p "$WORK/ngx"
CLEANUPS+=(stop_nginx)
wait_listening 127.0.0.1 "$port"
for round in 1 2 3; do
    for n in 1 2 3 4 5 6; do
        timeout 20 "$VMSOCK_RUN" --debug curl -sS -o "$WORK/out.bin" "http://127.0.0.1:$port/f$n.bin" 2>>"$WORK/curl.txt" \
            || fail "curl of f$n.bin failed: $(cat "$WORK/curl.txt")"
        cmp "$WORK/out.bin" "$WORK/ngx/www/f$n.bin" || fail "f$n.bin came back different"
    done
done
count_says "$WORK/curl.txt" 18 "shared memory"
master=$(cat "$WORK/ngx/nginx.pid")
workers=$(grep -aE "accept fd [0-9]+ from .*: shared memory" "$WORK/ngx/error.log" | grep -avc "^vmsock-run\[$master\]" || true)
[ "$workers" -ge 18 ] || fail "expected 18 shared-memory accepts in nginx's workers, got $workers: $(grep -a vmsock-run "$WORK/ngx/error.log")"
stop_nginx
echo "nginx: 18 files byte-identical, all accepted over shared memory by forked workers"

# nginx with `daemon on`, as a distribution starts it: the process that listens forks the daemon and exits; the
# daemon takes its listeners over before it forks its workers.
sed -i 's/^daemon off;/daemon on;/' "$WORK/ngx/nginx.conf"
: >"$WORK/ngx/error.log"
: >"$WORK/curl.txt"
timeout 20 env VMSOCK_DEBUG=1 "$VMSOCK_RUN" nginx -c "$WORK/ngx/nginx.conf" -p "$WORK/ngx" 2>>"$WORK/ngx/first.txt" \
    || fail "nginx with daemon on failed: $(cat "$WORK/ngx/first.txt")"
wait_listening 127.0.0.1 "$port"
for n in 1 2 3 4 5 6; do
    timeout 20 "$VMSOCK_RUN" --debug curl -sS -o "$WORK/out.bin" "http://127.0.0.1:$port/f$n.bin" 2>>"$WORK/curl.txt" \
        || fail "curl of f$n.bin failed: $(cat "$WORK/curl.txt")"
    cmp "$WORK/out.bin" "$WORK/ngx/www/f$n.bin" || fail "f$n.bin came back different"
done
count_says "$WORK/curl.txt" 6 "shared memory"
grep -aq "this one takes it over" "$WORK/ngx/error.log" || fail "the daemon did not take the listener over: $(grep -a vmsock-run "$WORK/ngx/error.log")"
workers=$(grep -acE "accept fd [0-9]+ from .*: shared memory" "$WORK/ngx/error.log" || true)
[ "$workers" -ge 6 ] || fail "expected 6 shared-memory accepts in the daemon's workers, got $workers: $(grep -a vmsock-run "$WORK/ngx/error.log")"
stop_nginx
echo "nginx with daemon on: 6 files byte-identical, the daemon took its first process's listener over"

# redis: BGSAVE forks a child that holds every client connection and leaves with _exit.
port=$(free_port)
start "$VMSOCK_RUN" --debug redis-server --port "$port" --bind 127.0.0.1 --save "" --dir "$WORK" --daemonize no \
    --enable-debug-command yes 2>"$WORK/redis.txt" >"$WORK/redis.out"
wait_listening 127.0.0.1 "$port"
{ printf 'SET a 1\r\nBGSAVE\r\n'; sleep 1; printf 'DEBUG SLEEP 0\r\nGET a\r\nINFO persistence\r\n'; sleep 0.5; printf 'QUIT\r\n'; } \
    | timeout 20 "$VMSOCK_RUN" --debug redis-cli -p "$port" >"$WORK/cli.txt" 2>"$WORK/cli.err" || fail "redis-cli failed: $(cat "$WORK/cli.err")"
grep -q "Background saving started" "$WORK/cli.txt" || fail "no BGSAVE: $(cat "$WORK/cli.txt")"
grep -q "^1$" "$WORK/cli.txt" || fail "GET after BGSAVE: $(cat "$WORK/cli.txt")"
grep -q "rdb_last_bgsave_status:ok" "$WORK/cli.txt" || fail "BGSAVE failed: $(cat "$WORK/cli.txt")"
count_says "$WORK/cli.err" 1 "shared memory"
# A benchmark's connections stay up through a BGSAVE in the middle of it.
timeout 60 "$VMSOCK_RUN" redis-benchmark -p "$port" -n 30000 -c 4 -q -t set,get >"$WORK/bench.txt" 2>&1 &
bench=$!
sleep 0.3
timeout 10 "$VMSOCK_RUN" redis-cli -p "$port" BGSAVE >/dev/null
wait "$bench" || fail "redis-benchmark failed: $(cat "$WORK/bench.txt")"
grep -q "requests per second" "$WORK/bench.txt" || fail "redis-benchmark: $(cat "$WORK/bench.txt")"
grep -q "DB saved on disk" "$WORK/redis.out" || fail "no BGSAVE finished: $(cat "$WORK/redis.out")"
count_says "$WORK/redis.txt" 5 "shared memory"
timeout 10 "$VMSOCK_RUN" redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
echo "redis: BGSAVE with preloaded clients connected, replies and benchmark intact, over shared memory"

# redis --daemonize yes: the process that listens is a forked child (its parent exits at once), whose own listen
# offers shared memory since nothing of a listener came with its fork. Its debug lines go to /dev/null with its
# output; the clients' say what they got.
port=$(free_port)
stop_daemon() { local pid; pid=$(cat "$WORK/redis-d.pid" 2>/dev/null) && kill "$pid" 2>/dev/null || true; }
CLEANUPS+=(stop_daemon)
timeout 20 "$VMSOCK_RUN" redis-server --port "$port" --bind 127.0.0.1 --save "" --dir "$WORK" --daemonize yes \
    --pidfile "$WORK/redis-d.pid" --logfile "$WORK/redis-d.log" || fail "redis-server --daemonize yes failed"
wait_listening 127.0.0.1 "$port"
timeout 20 "$VMSOCK_RUN" --debug redis-cli -p "$port" SET daemon yes >"$WORK/cli-d.txt" 2>"$WORK/cli-d.err" \
    || fail "redis-cli failed: $(cat "$WORK/cli-d.err")"
count_says "$WORK/cli-d.err" 1 "shared memory"
timeout 60 "$VMSOCK_RUN" --stats redis-benchmark -p "$port" -n 20000 -c 4 -q -t set,get >"$WORK/bench-d.txt" 2>&1 \
    || fail "redis-benchmark failed: $(cat "$WORK/bench-d.txt")"
grep -qE "connects: [1-9][0-9]* shared memory, 0 tcp" "$WORK/bench-d.txt" \
    || fail "the benchmark's connections to the daemon were not all shared memory: $(cat "$WORK/bench-d.txt")"
[ "$(timeout 10 "$VMSOCK_RUN" redis-cli -p "$port" GET daemon)" = yes ] || fail "GET from the daemon failed"
timeout 10 "$VMSOCK_RUN" redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
echo "redis --daemonize yes: its listen, in a forked child, offered shared memory; benchmark intact"
