# Shared by the interop tests: where the binaries are, ports, waiting, checking, skipping, cleaning up.
# Each test is a bash script `*.test.sh` that exits 0 (pass), 77 (skip, with a message why) or anything else (fail).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=${BIN:-.build/debug}
PEER=$BIN/vmsock-testpeer
VMCAT=$BIN/vmcat
VMSOCK_RUN=$BIN/vmsock-run
WORK=$(mktemp -d /tmp/vmsock-interop.XXXXXX)
PIDS=()
# vmsock-run sends a destination whose connections keep ending quickly to TCP (brief.c). The tests are about the
# rings, and whether a connection counts as brief depends on the machine's speed: every connect tries shared
# memory here, except where preload-brief.test.sh sets it back to test that rule.
export VMSOCK_SHORT_TCP=0

CLEANUPS=()
cleanup() {
    for step in "${CLEANUPS[@]}"; do eval "$step" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

skip() { echo "SKIP: $*" >&2; exit 77; }
fail() { echo "FAIL: $*" >&2; exit 1; }
need() { for tool in "$@"; do command -v "$tool" >/dev/null || skip "$tool is not installed (tools/setup.sh installs it)"; done; }

# A TCP port on 127.0.0.1 that nothing listens on now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Starts a command in the background, remembering it for cleanup; its pid is in $LAST.
# Runs COMMAND with at most N descriptors: closes every descriptor above 2 it would inherit (a CI harness may
# hold some open, and they count against the limit), sets `ulimit -n N`, then execs COMMAND.
with_fd_limit() {
    local limit=$1; shift
    local fd
    for fd in $(ls /proc/$BASHPID/fd); do [ "$fd" -gt 2 ] && eval "exec $fd>&-" 2>/dev/null; done
    ulimit -n "$limit" && exec "$@"
}
start() { "$@" <&0 & LAST=$!; PIDS+=("$LAST"); }

# Waits until something listens on TCP HOST PORT (up to 10 s), optionally inside a network namespace.
wait_listening() {
    local host=$1 port=$2 ns=${3:-}
    for _ in $(seq 100); do
        if [ -n "$ns" ]; then ip netns exec "$ns" ss -ltn | grep -q "$host:$port " && return 0
        else ss -ltn | grep -q "$host:$port " && return 0; fi
        sleep 0.1
    done
    fail "nothing listened on $host:$port within 10 s"
}

# Waits for a background pid to end (up to $2 seconds) and returns its exit status.
wait_for() {
    local pid=$1 limit=${2:-30}
    for _ in $(seq $((limit * 10))); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid"; return $?; }
        sleep 0.1
    done
    fail "process $pid did not end within $limit s"
}

# vmsock-run's relay processes still running (exec's, ferry.c), one line each; those that ended are left to init.
live_relays() { ps -eo stat=,pid=,comm= | awk '$3 == "vmsock-relay" && $1 !~ /^Z/'; }
random_file() { head -c "$2" /dev/urandom > "$1"; }
same() { [ "$(sha256sum < "$1")" = "$(sha256sum < "$2")" ] || fail "$3: $1 ($(stat -c %s "$1") bytes) and $2 ($(stat -c %s "$2") bytes) differ"; }
says() { grep -q -- "$2" "$1" || fail "$3: expected '$2' in $1, got: $(cat "$1")"; }

# Waits (up to $2 seconds, default 5) until file $1 contains the string $3.
wait_contains() {
    local file=$1 limit=${2:-5} text=$3
    for _ in $(seq $((limit * 20))); do grep -q -- "$text" "$file" 2>/dev/null && return 0; sleep 0.05; done
    fail "'$text' did not appear in $file within $limit s (it has: $(head -c 300 "$file" 2>/dev/null))"
}

# Fails unless the debug lines in file $1 (vmsock-run --debug) say $2 connections of kind $3 ("shared memory", "tcp").
count_says() {
    local file=$1 want=$2 kind=$3 got
    got=$(grep -cE "(connect|accept) fd [0-9]+ (to|from) .*: $kind" "$file" || true)
    [ "$got" -ge "$want" ] || fail "expected at least $want '$kind' connections in $file, got $got: $(cat "$file")"
}

# The guest tests (tools/vm): an address of this host a guest dials ($HOST), or a skip when there is none.
guest_host_address() {
    need python3 ip
    HOST=$(ip -4 -o addr show scope global | awk '{ split($4, a, "/"); print a[1]; exit }')
    [ -n "$HOST" ] || skip "this host has no global IPv4 address for the guest to dial"
}

# Starts vmsockd on $WORK/vmsockd.sock ($SOCK; $DAEMON its pid) with ARGS, and waits for its ready line.
start_vmsockd() {
    [ -x "$BIN/vmsockd" ] || fail "$BIN/vmsockd is not built (swift build)"
    SOCK=$WORK/vmsockd.sock
    start "$BIN/vmsockd" --socket "$SOCK" "$@" >"$WORK/vmsockd.out" 2>"$WORK/vmsockd.err"
    DAEMON=$LAST
    wait_contains "$WORK/vmsockd.out" 10 "vmsockd: ready on $SOCK"
}

# Boots the test guest on $SOCK in the background (tools/vm/boot.sh with ARGS, then the script), its console in
# $WORK/console, its pid in $BOOT. QEMU runs under boot.sh's `timeout`, in a process group of its own: cleanup
# kills it by its pid file.
boot_guest() {
    start tools/vm/boot.sh --bin "$BIN" --socket "$SOCK" --pidfile "$WORK/qemu.pid" "$@" >"$WORK/console" 2>&1
    BOOT=$LAST
    CLEANUPS+=("pkill -KILL -P $BOOT; [ -s $WORK/qemu.pid ] && kill -9 \$(cat $WORK/qemu.pid)")
}

# Waits (up to 150 s) while the guest runs until FILE contains TEXT. Skips when no guest could boot here; fails,
# saying WHAT did not happen, when the guest ended first.
await_guest() {
    local file=$1 text=$2 what=$3 status
    for _ in $(seq 1500); do
        grep -q -- "$text" "$file" 2>/dev/null && return 0
        kill -0 "$BOOT" 2>/dev/null || break
        sleep 0.1
    done
    grep -q -- "$text" "$file" 2>/dev/null && return 0
    wait "$BOOT" && status=0 || status=$?
    [ "$status" = 77 ] && skip "$(grep SKIP: "$WORK/console" | tail -1)"
    fail "$what (boot.sh exit $status): $(tr -d '\r' <"$WORK/console" | tail -20)"
}

# The preload tests whose C program prints what it observes: compiles interop/programs/NAME.c (with CFLAGS), runs
# it plainly and under vmsock-run --debug (with ENV, e.g. VMSOCK_SPIN_US=2000000, for that run only), each within
# 60 s, and fails unless the two outputs are the same and end with "done". Leaves $WORK/plain.txt,
# $WORK/preloaded.txt and the debug lines in $WORK/debug.txt. Usage: same_under_preload NAME "CFLAGS" [ENV...]
same_under_preload() {
    local name=$1 flags=$2 cc status
    shift 2
    [ -x "$VMSOCK_RUN" ] || fail "$VMSOCK_RUN is not built (swift build)"
    cc=$(command -v cc || command -v /opt/swift/usr/bin/clang || true)
    [ -n "$cc" ] || skip "no C compiler (cc or the Swift toolchain's clang)"
    # shellcheck disable=SC2086  # CFLAGS are words
    "$cc" -O2 -Wall $flags -o "$WORK/$name" "interop/programs/$name.c" -lpthread
    timeout 60 "$WORK/$name" >"$WORK/plain.txt" || fail "plain run failed: $(cat "$WORK/plain.txt")"
    env "$@" timeout 60 "$VMSOCK_RUN" --debug "$WORK/$name" >"$WORK/preloaded.txt" 2>"$WORK/debug.txt" || {
        status=$?
        fail "preloaded run failed (exit $status; 124: it did not end within 60 s): $(cat "$WORK/preloaded.txt" "$WORK/debug.txt")"
    }
    diff -u "$WORK/plain.txt" "$WORK/preloaded.txt" \
        || { tail -30 "$WORK/debug.txt"; fail "the program observed a difference under vmsock-run"; }
    grep -q '^done$' "$WORK/plain.txt" || fail "the program did not finish"
}
