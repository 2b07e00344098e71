# A hostile guest scribbles over vmsockd's whole region while another guest streams through it to the host, and
# nobody but the streams may suffer: docs/DESIGN.md ("Trust") says a peer that scribbles the region can make any
# connection in it fail, but cannot make another peer crash or wait without bound.
# Guest A (10.0.2.15) sends /dev/zero to a host vmcat through the region; once bytes flow, guest B (10.0.2.16)
# runs programs/scribble.c (random 64-bit words at random offsets: header, slot table, arena) for
# VMSOCK_SCRIBBLE_SECONDS (default 5). Passes when no process died from a signal or a Swift runtime error:
# vmsockd runs on and removes its socket at SIGTERM, the host vmcat and guest A's vmcat end (an error message is
# fine, and printed), and a fresh host listener and connector on the scribbled region work or fail with a message.
source "$(dirname "$0")/lib.sh"
need cc
guest_host_address
SECONDS_TO_SCRIBBLE=${VMSOCK_SCRIBBLE_SECONDS:-5}
# Static, so that the guest needs no library for it.
cc -static -O2 -Wall -o "$WORK/scribble" interop/programs/scribble.c 2>"$WORK/cc.err" \
    || skip "cc -static cannot build programs/scribble.c (no static C library? Debian's libc6-dev has it):" \
        "$(head -3 "$WORK/cc.err")"

# Ends true when process $1 has ended within $2 seconds (its status is then in $ENDED), false when it still runs.
ended_within() {
    local pid=$1
    for _ in $(seq $(($2 * 10))); do
        kill -0 "$pid" 2>/dev/null || { ENDED=0; wait "$pid" || ENDED=$?; return 0; }
        sleep 0.1
    done
    return 1
}
# Fails when a file shows a crash: a Swift runtime trap, a fatal signal, a core.
no_crash_in() {
    local found
    local crash="Fatal error|Segmentation fault|core dumped|Illegal instruction|Bus error|Aborted|Trace/breakpoint"
    found=$(tr -d '\r' <"$1" | grep -E "$crash" | head -5) || true
    [ -z "$found" ] || fail "$2 crashed: $found"
}

start_vmsockd --vectors 1 --verbose
tools/vm/build.sh "$BIN" >/dev/null 2>"$WORK/build.err" || skip "$(grep SKIP: "$WORK/build.err" | tail -1)"
PORT=$(free_port)
GO=$(free_port)
VMSOCK_IVSHMEM=$SOCK start "$VMCAT" -v -l "$PORT" >"$WORK/received" 2>"$WORK/host.err"
HOSTCAT=$LAST
wait_listening 0.0.0.0 "$PORT"

cat >"$WORK/a.sh" <<GUEST
export VMSOCK_IVSHMEM=pci
vmcat -v --transport ivshmem $HOST $PORT < /dev/zero
echo "guest A: vmcat exit \$?"
GUEST
# B waits for the host's word (a listener on 127.0.0.1:$GO, which QEMU's 10.0.2.2 reaches) to scribble.
cat >"$WORK/b.sh" <<GUEST
until [ "\$(nc 10.0.2.2 $GO </dev/null 2>/dev/null)" = go ]; do sleep 0.3; done
scribble $SECONDS_TO_SCRIBBLE
echo "guest B: scribble exit \$?"
GUEST
for guest in a b; do
    ip=$([ $guest = a ] && echo 10.0.2.15 || echo 10.0.2.16)
    start tools/vm/boot.sh --bin "$BIN" --socket "$SOCK" --ip "$ip" --add "$WORK/scribble" \
        --pidfile "$WORK/$guest.pid" --timeout 100 "$WORK/$guest.sh" >"$WORK/$guest.console" 2>&1
    eval "BOOT_$guest=$LAST"
    CLEANUPS+=("[ -s $WORK/$guest.pid ] && kill -9 \$(cat $WORK/$guest.pid)")
done

for _ in $(seq 600); do
    [ -s "$WORK/received" ] && break
    kill -0 "$BOOT_a" 2>/dev/null || break
    sleep 0.1
done
if ! [ -s "$WORK/received" ]; then
    ended_within "$BOOT_a" 1 && [ "$ENDED" = 77 ] && skip "$(grep SKIP: "$WORK/a.console" | tail -1)"
    fail "no bytes arrived from guest A: $(tr -d '\r' <"$WORK/a.console" | grep -v '^\[' | tail -10)"
fi
says "$WORK/host.err" "via ivshmem (vmsockd socket)" "the host's vmcat -v"
sleep 1
before=$(stat -c %s "$WORK/received")
echo "bytes flow: $before received before the scribbling"

start python3 -c '
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen()
while True:
    c, _ = s.accept(); c.sendall(b"go\n"); c.close()
' "$GO"
ended_within "$BOOT_b" 60 || fail "guest B did not finish scribbling within 60 s: $(tr -d '\r' <"$WORK/b.console" | tail -5)"
[ "$ENDED" = 77 ] && skip "$(grep SKIP: "$WORK/b.console" | tail -1)"
tr -d '\r' <"$WORK/b.console" | grep "scribble" || true
tr -d '\r' <"$WORK/b.console" | grep -q "guest B: scribble exit 0" || fail "the scribbler failed: $(tr -d '\r' <"$WORK/b.console" | tail -10)"
after=$(stat -c %s "$WORK/received")

# The stream may end (the likely outcome) or survive with corrupt bytes; what matters is how it ends.
if ended_within "$HOSTCAT" 10; then
    host_status=$ENDED host_how="ended by itself"
else
    # Still running: a stream the scribbling left intact goes on; one it left looking full to its writer and
    # empty to its reader waits, as with a peer that stopped reading (a scribbler can fake any peer). Say which.
    mark=$(stat -c %s "$WORK/received")
    sleep 2
    flow=$(( $(stat -c %s "$WORK/received") - mark ))
    progress=$([ "$flow" -gt 0 ] && echo "still receiving ($flow bytes in 2 s)" || echo "waiting (no byte in 2 s)")
    kill -TERM "$HOSTCAT"
    ended_within "$HOSTCAT" 5 || fail "the host's vmcat ignores SIGTERM after the scribbling"
    host_status=$ENDED host_how="still ran 10 s after the scribbling, $progress, stopped by us (SIGTERM)"
fi
total=$(stat -c %s "$WORK/received")
nonzero=$(tr -d '\0' <"$WORK/received" | wc -c)
echo "host vmcat: $host_how, exit $host_status; received $total bytes ($((after - before)) from the go to the scribbler's end," \
    "$nonzero not zero); it said:"
sed 's/^/    /' "$WORK/host.err"
ended_within "$BOOT_a" 20 || fail "guest A's vmcat did not end within 20 s of the host side: $(tr -d '\r' <"$WORK/a.console" | tail -5)"
a_exit=$(tr -d '\r' <"$WORK/a.console" | sed -n 's/^guest A: vmcat exit \([0-9]*\)$/\1/p')
echo "guest A's vmcat: exit ${a_exit:-unknown}; it said:"
tr -d '\r' <"$WORK/a.console" | grep -v '^\[' | grep -vE "vmsock-guest|SeaBIOS|Booting|^.\[" | sed 's/^/    /'

# A fresh listener and connector on the scribbled region: each may fail, but with a message, not a crash.
# Ends the test when vmsockd is gone, with its exit status and last words.
daemon_runs() {
    kill -0 "$DAEMON" 2>/dev/null && return 0
    ended_within "$DAEMON" 1
    fail "vmsockd ended $1 (exit $ENDED): $(tail -5 "$WORK/vmsockd.err")"
}
daemon_runs "during the scribbling"
FRESH=$(free_port)
VMSOCK_IVSHMEM=$SOCK start "$VMCAT" -v -l "$FRESH" >"$WORK/fresh.received" 2>"$WORK/fresh-listener.err"
LISTENER=$LAST
sleep 1
fresh_status=0
echo hello | VMSOCK_IVSHMEM=$SOCK timeout 20 "$VMCAT" -v -N --transport ivshmem "$HOST" "$FRESH" \
    >/dev/null 2>"$WORK/fresh-connector.err" || fresh_status=$?
[ "$fresh_status" = 124 ] && fail "a fresh connector hung for 20 s: $(cat "$WORK/fresh-connector.err")"
echo "fresh connector: exit $fresh_status; it said: $(cat "$WORK/fresh-connector.err")"
if ended_within "$LISTENER" 5; then listener_status=$ENDED listener_how="exit $ENDED"
else kill -TERM "$LISTENER"; listener_status=0 listener_how="still listening 5 s later, stopped by us"; fi
echo "fresh listener: $listener_how, received '$(cat "$WORK/fresh.received")'; it said: $(cat "$WORK/fresh-listener.err")"

daemon_runs "while fresh processes joined"
kill -TERM "$DAEMON"
ended_within "$DAEMON" 10 || fail "vmsockd did not end within 10 s of SIGTERM"
daemon_status=$ENDED
echo "vmsockd: exit $daemon_status at SIGTERM; its last words: $(tail -3 "$WORK/vmsockd.err" | tr '\n' ' ')"

for file in host.err fresh-connector.err fresh-listener.err vmsockd.err vmsockd.out; do
    no_crash_in "$WORK/$file" "$file"
done
no_crash_in "$WORK/a.console" "guest A"
[ "$daemon_status" -lt 128 ] || fail "vmsockd died from signal $((daemon_status - 128))"
[ ! -e "$SOCK" ] || fail "vmsockd left its socket $SOCK behind"
[ "$host_status" -lt 128 ] || [ "$host_how" != "ended by itself" ] \
    || fail "the host's vmcat died from signal $((host_status - 128))"
[ -n "$a_exit" ] || fail "guest A printed no exit status"
[ "$a_exit" -lt 128 ] || fail "guest A's vmcat died from signal $((a_exit - 128))"
[ "$fresh_status" -lt 128 ] || fail "the fresh connector died from signal $((fresh_status - 128))"
[ "$fresh_status" = 0 ] || [ -s "$WORK/fresh-connector.err" ] || fail "the fresh connector failed without a message"
[ "$listener_status" -lt 128 ] || fail "the fresh listener died from signal $((listener_status - 128))"
echo "ok: $SECONDS_TO_SCRIBBLE s of scribbling over the whole region; nobody crashed"
