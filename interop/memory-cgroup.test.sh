# A vmperf server inside a memory cgroup whose limit leaves room for a few rings only: it keeps serving, the
# connections beyond the room fall back to TCP saying "out of resources", and the kernel kills nothing. Without
# MemoryBudget the server's rings filled past the limit and the kernel killed it (vmperf -R -P 6, 24 MiB of room).
source "$(dirname "$0")/lib.sh"
need python3 ss
[ "$(id -u)" = 0 ] || skip "making a memory cgroup needs root"
VMPERF=$BIN/vmperf
[ -x "$VMPERF" ] || fail "$VMPERF is not built (swift build)"

# Our own memory cgroup, v1 (a memory hierarchy) or v2; a child of it for the server.
line=$(grep -E '^[0-9]+:([^:]*,)?memory(,[^:]*)?:' /proc/self/cgroup || true)
if [ -n "$line" ]; then
    PARENT=/sys/fs/cgroup/memory${line#*:*:}
    LIMIT_FILE=memory.limit_in_bytes USAGE_FILE=memory.usage_in_bytes EVENTS_FILE=memory.oom_control
    INACTIVE_FILE_KEY=total_inactive_file
else
    line=$(grep -E '^0::' /proc/self/cgroup || true)
    [ -n "$line" ] || skip "this process is in no memory cgroup (/proc/self/cgroup: $(tr '\n' ' ' </proc/self/cgroup))"
    PARENT=/sys/fs/cgroup${line#0::}
    LIMIT_FILE=memory.max USAGE_FILE=memory.current EVENTS_FILE=memory.events
    INACTIVE_FILE_KEY=inactive_file
fi
GROUP=$PARENT/vmsock-test-$$
mkdir "$GROUP" 2>"$WORK/mkdir.err" || skip "cannot make a memory cgroup under $PARENT: $(cat "$WORK/mkdir.err")"
# The group goes at the end whatever happens: its processes killed, then rmdir until it is empty (up to 5 s).
remove_group() {
    local pid
    for _ in $(seq 50); do
        for pid in $(cat "$GROUP/cgroup.procs" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
        rmdir "$GROUP" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "memory-cgroup: could not remove $GROUP" >&2
}
CLEANUPS+=(remove_group)
[ -w "$GROUP/$LIMIT_FILE" ] || skip "$GROUP has no $LIMIT_FILE (memory controller not enabled there)"
oom_kills() { awk '$1 == "oom_kill" { print $2 }' "$GROUP/$EVENTS_FILE"; }
[ -n "$(oom_kills)" ] || skip "$GROUP/$EVENTS_FILE has no oom_kill count (kernel before 4.13): the test could not see a kill"

PORT=$(free_port)
start bash -c 'echo $$ > "$1/cgroup.procs" && exec "$2" -s -p "$3"' _ "$GROUP" "$VMPERF" "$PORT" >"$WORK/server.out" 2>&1
SERVER=$LAST
for _ in $(seq 100); do ss -ltn | grep -q ":$PORT " && break; sleep 0.1; done
ss -ltn | grep -q ":$PORT " || fail "the server did not listen on $PORT: $(cat "$WORK/server.out")"
# 24 MiB of room as MemoryBudget weighs it: the usage less inactive file pages, which reclaim gives back. A
# server that started with pages of files it read once (30 MiB of them in one run of the whole suite) would
# otherwise have had that much more room, and all 6 rings fitted. (A limit below the usage makes the kernel
# reclaim those pages first.)
usage=$(cat "$GROUP/$USAGE_FILE")
inactive=$(awk -v key="$INACTIVE_FILE_KEY" '$1 == key { print $2 }' "$GROUP/memory.stat")
inuse=$((usage - ${inactive:-0}))
[ "$inuse" -ge 0 ] || inuse=0
echo $((inuse + (24 << 20))) >"$GROUP/$LIMIT_FILE" || fail "could not set the cgroup's limit to $((inuse >> 20)) + 24 MiB"
echo "server's cgroup: $GROUP, $((inuse >> 20)) MiB in use ($((usage >> 20)) MiB with inactive file pages), limit $(( $(cat "$GROUP/$LIMIT_FILE") >> 20 )) MiB"
before=$(oom_kills)

# The server sends (-R) on 6 streams, each through a 4 MiB ring of its own when it gets shared memory: 24 MiB and
# more, above the room. Twice, so that the rings of the first run are seen to be given back.
for run in 1 2; do
    "$VMPERF" -c 127.0.0.1 -p "$PORT" -R -P 6 -t 1 >"$WORK/client$run.out" 2>&1 \
        || fail "run $run: the client failed: $(tail -5 "$WORK/client$run.out"); server: $(tail -5 "$WORK/server.out")"
    shm=$(grep -c "connected to .* via shared memory" "$WORK/client$run.out" || true)
    tcp=$(grep -c "connected to .* via TCP (out of resources)" "$WORK/client$run.out" || true)
    echo "run $run: $shm streams over shared memory, $tcp over TCP (out of resources)"
    [ "$shm" -ge 1 ] || fail "run $run: no stream got shared memory: $(grep connected "$WORK/client$run.out")"
    [ "$tcp" -ge 1 ] || fail "run $run: no stream fell back for want of memory: $(grep connected "$WORK/client$run.out")"
    [ $((shm + tcp)) = 6 ] || fail "run $run: $shm + $tcp streams, not 6: $(grep connected "$WORK/client$run.out")"
    kill -0 "$SERVER" 2>/dev/null || fail "run $run: the server died: $(tail -3 "$WORK/server.out")"
done
after=$(oom_kills)
[ "$after" = "$before" ] || fail "the kernel's OOM killer acted in the server's cgroup ($before, then $after kills)"
echo "ok: the server kept serving within its memory cgroup; the streams beyond its room used TCP; no OOM kill"
