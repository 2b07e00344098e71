# Out of memory for rings (issue 20): a process whose file size limit (ulimit -f) is below a ring's size, or whose
# address space (ulimit -v) has no room for the ring mappings, keeps working over TCP and says why. Before the fix
# a ring's ftruncate above `ulimit -f` made the kernel send SIGXFSZ, which ended vmcat, or any program under
# vmsock-run, with "File size limit exceeded".
source "$(dirname "$0")/lib.sh"
need ss nc
[ -x "$VMSOCK_RUN" ] || fail "$VMSOCK_RUN is not built (swift build)"
FSIZE_BLOCKS=100  # 100 KiB: far below any ring (a 4 KiB ring's region is 8 KiB, the default ring 4 MiB)

# Three clients to a `vmcat -lk` started with `$@` (a ulimit) in front: each is served, over TCP, and the
# listener lives on.
serve_three() {
    local label=$1
    shift
    local port
    port=$(free_port)
    : >"$WORK/got"
    start bash -c "$* && exec \"$VMCAT\" -v -lk 127.0.0.1 $port" </dev/null >"$WORK/got" 2>"$WORK/listener"
    local listener=$LAST
    wait_listening 127.0.0.1 "$port"
    for i in 1 2 3; do
        (echo "client $i" | "$VMCAT" -v -N 127.0.0.1 "$port") 2>"$WORK/client" || fail "$label: client $i: $(cat "$WORK/client")"
        wait_contains "$WORK/got" 5 "client $i"
        says "$WORK/client" "via TCP (out of resources)" "$label: client $i fell back to TCP, saying why"
    done
    kill -0 "$listener" 2>/dev/null || fail "$label: the listener ended: $(cat "$WORK/listener")"
    kill "$listener"
    echo "$label: 3 clients served over TCP, the listener alive"
}

serve_three "listener under ulimit -f $FSIZE_BLOCKS" ulimit -f "$FSIZE_BLOCKS"

# A plain listener, to measure a vmcat's address space and to serve the limited clients below.
port=$(free_port)
start "$VMCAT" -lk 127.0.0.1 "$port" </dev/null >"$WORK/plain" 2>&1
plain=$LAST
wait_listening 127.0.0.1 "$port"
vsz=$(ps -o vsz= -p "$plain" | tr -d ' ')
# Room for vmcat itself but not for one ring's mappings (two views of a 4 MiB ring, its own and the peer's).
VSIZE_KB=$((vsz + 2048))

client() {  # $1: label, $2: a ulimit, $3: the transport policy; prints vmcat's stderr into $WORK/client
    (echo "$1" | (eval "$2" && VMSOCK_TRANSPORT=$3 exec "$VMCAT" -v -N 127.0.0.1 "$port")) 2>"$WORK/client"
}
client "fsize client" "ulimit -f $FSIZE_BLOCKS" auto || fail "client under ulimit -f: $(cat "$WORK/client")"
says "$WORK/client" "via TCP (out of resources)" "a client under ulimit -f fell back to TCP, saying why"
wait_contains "$WORK/plain" 5 "fsize client"

status=0
client "shm client" "ulimit -f $FSIZE_BLOCKS" shm || status=$?
[ "$status" = 1 ] || fail "a client under ulimit -f with the shm policy should exit 1 (not be killed), got $status: $(cat "$WORK/client")"
says "$WORK/client" "file size limit" "the shm-only client said what to raise"
says "$WORK/client" "ulimit -f" "the shm-only client named the limit"

client "vsize client" "ulimit -v $VSIZE_KB" auto || fail "client under ulimit -v $VSIZE_KB: $(cat "$WORK/client")"
says "$WORK/client" "via TCP (out of resources)" "a client under ulimit -v fell back to TCP, saying why"
wait_contains "$WORK/plain" 5 "vsize client"
kill "$plain"
echo "clients under ulimit -f and ulimit -v: TCP with the reason; shm-only: a clear error and exit 1"

serve_three "listener under ulimit -v $VSIZE_KB" ulimit -v "$VSIZE_KB"

# Unmodified nc under vmsock-run, both ends under ulimit -f: the connection falls back to TCP and the bytes arrive.
port=$(free_port)
start bash -c "ulimit -f $FSIZE_BLOCKS && exec $VMSOCK_RUN --debug nc -d -l 127.0.0.1 $port" >"$WORK/nc-got" 2>"$WORK/nc-server"
server=$LAST
wait_listening 127.0.0.1 "$port"
(echo "through vmsock-run" | (ulimit -f "$FSIZE_BLOCKS" && exec "$VMSOCK_RUN" --debug nc -N 127.0.0.1 "$port")) 2>"$WORK/nc-client" \
    || fail "nc under vmsock-run and ulimit -f: $(cat "$WORK/nc-client")"
wait_for "$server" 10 || fail "nc -l under vmsock-run and ulimit -f: $(cat "$WORK/nc-server")"
says "$WORK/nc-got" "through vmsock-run" "the bytes arrived"
count_says "$WORK/nc-client" 1 "tcp"
says "$WORK/nc-client" "ulimit -f" "vmsock-run's debug line named the limit"
echo "ok: ulimit -f and ulimit -v cost shared memory, never the process"
