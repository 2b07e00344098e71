# QEMU is stopped (SIGSTOP, as a loaded host or a debugger stops it) for over 30 s while a vmcat in the guest
# streams to a host vmcat through vmsockd's region. vmsockd stops seeing the guest processes' heartbeats and takes
# their slots back after 0.6 s, so the host side must end by itself, as for a killed guest process.
# The region is the smallest (64 KiB: two connection slots). The guest's stream has slot 0; a host connection
# holds slot 1. Host probes must find no free slot until slot 0's quarantine is over (30 s); then two host processes
# stream 2 MiB of random bytes through slot 0, paced so that the stream runs on after the guest runs again. The
# guest's vmcat, running again, must write nothing into its old slot (its next call fails, with the reason), and
# the pair's bytes must arrive unchanged. Last, a vmcat listening in the guest all along must accept a host
# connection through the region: its process takes a new slot and publishes its listen entries again.
source "$(dirname "$0")/lib.sh"
guest_host_address
start_vmsockd --vectors 1 --verbose --size 64K
PORT=$(free_port) PAIR=$(free_port) FILL=$(free_port) PROBE=$(free_port) GUESTPORT=$(free_port)
VMSOCK_IVSHMEM=$SOCK start "$VMCAT" -v -l "$PORT" >"$WORK/received" 2>"$WORK/host.err"
HOSTCAT=$LAST
VMSOCK_IVSHMEM=$SOCK start "$VMCAT" -v -l "$PAIR" >"$WORK/pair.out" 2>"$WORK/pair-listener.err"
PAIRLISTENER=$LAST
VMSOCK_IVSHMEM=$SOCK start "$VMCAT" -v -l "$FILL" >/dev/null 2>"$WORK/fill-listener.err"
VMSOCK_IVSHMEM=$SOCK start "$VMCAT" -l "$PROBE" >/dev/null 2>"$WORK/probe-listener.err"
PROBELISTENER=$LAST
for port in "$PORT" "$PAIR" "$FILL" "$PROBE"; do wait_listening 0.0.0.0 "$port"; done

cat >"$WORK/guest.sh" <<GUEST
export VMSOCK_IVSHMEM=pci
vmcat --transport ivshmem -l $GUESTPORT > /tmp/got 2>/tmp/listener.err &
listener=\$!
sleep 1
echo "guest: streaming"
vmcat -v --transport ivshmem $HOST $PORT < /dev/zero
echo "guest: stream vmcat exit \$?"
wait \$listener
echo "guest: listener exit \$? got: \$(cat /tmp/got) \$(cat /tmp/listener.err)"
GUEST
boot_guest --timeout 170 "$WORK/guest.sh"
await_guest "$WORK/console" "guest: streaming" "the guest never started streaming"
for _ in $(seq 100); do [ -s "$WORK/received" ] && break; sleep 0.1; done
[ -s "$WORK/received" ] || fail "no bytes arrived from the guest: $(cat "$WORK/host.err")"
says "$WORK/host.err" "via ivshmem (vmsockd socket)" "the host's vmcat -v"
QEMU=$(cat "$WORK/qemu.pid")
# The guest's writer asleep when QEMU stops: the host reader stands still first, and the guest's 4 KiB ring fills.
# (A guest stopped inside a copy finishes that copy when it runs again, into whatever uses the slot by then: the
# quarantine covers that for stops shorter than itself, and this test's stop is longer, so it must not be one.)
kill -STOP "$HOSTCAT"
CLEANUPS+=("kill -CONT $HOSTCAT")
sleep 1
kill -STOP "$QEMU"
stopped=$(date +%s%N)
CLEANUPS+=("kill -CONT $QEMU")
kill -CONT "$HOSTCAT"
since() { echo $(( ($(date +%s%N) - stopped) / 1000000 )); }
while kill -0 "$HOSTCAT" 2>/dev/null && [ "$(since)" -lt 2500 ]; do sleep 0.02; done
kill -0 "$HOSTCAT" 2>/dev/null && fail "the host's vmcat still runs 2.5 s after QEMU was stopped"
ended_ms=$(since)
grep -q "process slot" "$WORK/vmsockd.err" || fail "vmsockd did not say it cleared the guest process's slot"

# Slot 1: a host connection that stays open.
mkfifo "$WORK/fill.in"
exec 3<>"$WORK/fill.in"  # held open, never written (read-write: the open cannot block): the filler keeps its slot
VMSOCK_IVSHMEM=$SOCK "$VMCAT" --transport ivshmem 127.0.0.1 "$FILL" <"$WORK/fill.in" 2>"$WORK/fill.err" &
FILLER=$!
PIDS+=("$FILLER")
wait_contains "$WORK/fill-listener.err" 10 "Connection received"
# Slot 0 is the guest's, in quarantine: no probe gets a slot until it is over.
refused=0 probed=0
while [ "$(since)" -lt 45000 ]; do
    if echo probe | VMSOCK_IVSHMEM=$SOCK "$VMCAT" -N --transport ivshmem 127.0.0.1 "$PROBE" 2>"$WORK/probe.err"; then
        probed=1
        break
    fi
    grep -q "connection slots of vmsockd's region .* are in use" "$WORK/probe.err" \
        || fail "a probe failed otherwise than for want of a slot: $(cat "$WORK/probe.err")"
    refused=$((refused + 1))
    sleep 2  # each probe is a new peer of vmsockd, and this small region has 32 peer ids, which QEMU never lets
             # vmsockd hand out twice (see vmsockd's leftAtJoin)
done
[ "$probed" = 1 ] || fail "slot 0 was still taken 45 s after QEMU stopped (a quarantine of 30 s)"
quarantine_ms=$(since)
[ "$refused" -gt 0 ] && [ "$quarantine_ms" -ge 25000 ] \
    || fail "slot 0 came free ${quarantine_ms} ms after the stop, after $refused refusals: no quarantine"
wait_for "$PROBELISTENER" 10 || fail "the probe's listener failed: $(cat "$WORK/probe-listener.err")"

# The pair, through slot 0: 1 MiB now, while the guest stands still, then 1 MiB more once it runs again.
head -c 1048576 /dev/urandom >"$WORK/one"
head -c 1048576 /dev/urandom >"$WORK/two"
( cat "$WORK/one"; sleep 4; cat "$WORK/two" ) | VMSOCK_IVSHMEM=$SOCK "$VMCAT" -v -N --transport ivshmem 127.0.0.1 "$PAIR" \
    2>"$WORK/pair.err" &
PAIRSENDER=$!
PIDS+=("$PAIRSENDER")
for _ in $(seq 60); do [ "$(stat -c %s "$WORK/pair.out")" -ge 1048576 ] && break; sleep 0.05; done
[ "$(stat -c %s "$WORK/pair.out")" -ge 1048576 ] || fail "the pair's first MiB did not arrive within 3 s: $(cat "$WORK/pair.err")"
kill -CONT "$QEMU"
paused_ms=$(since)
echo "QEMU stood still for ${paused_ms} ms; the host's vmcat ended ${ended_ms} ms after the stop; slot 0 came free" \
    "after ${quarantine_ms} ms ($refused probes refused before)"

await_guest "$WORK/console" "guest: stream vmcat exit" "the guest's vmcat never ended after the pause"
tr -d '\r' <"$WORK/console" >"$WORK/console.txt"
grep -E "^(guest|vmcat)" "$WORK/console.txt" || true
grep -q "guest: stream vmcat exit 0" "$WORK/console.txt" && fail "the guest's vmcat ended without an error after its slot was taken back"
grep -q "took back this process's slot" "$WORK/console.txt" \
    || fail "the guest's vmcat did not say vmsockd took its slot back: $(grep vmcat "$WORK/console.txt" | tail -3)"

wait_for "$PAIRSENDER" 20 || fail "the pair's sender failed: $(cat "$WORK/pair.err")"
wait_for "$PAIRLISTENER" 20 || fail "the pair's listener failed: $(cat "$WORK/pair-listener.err")"
says "$WORK/pair.err" "via ivshmem (vmsockd socket)" "the pair's vmcat -v"
[ "$(cat "$WORK/one" "$WORK/two" | sha256sum)" = "$(sha256sum <"$WORK/pair.out")" ] \
    || fail "the pair's 2 MiB arrived changed ($(stat -c %s "$WORK/pair.out") bytes): the guest wrote into their slot"

# The guest's listener, through the region, under its process's new slot (slot 1 freed for it).
kill "$FILLER"  # its connection goes, and slot 1 with it
wait "$FILLER" 2>/dev/null || true
exec 3>&-
# Each try is a new peer of vmsockd and costs one of the region's 32 ids for good while QEMU runs: few tries.
connected=0
for _ in $(seq 8); do
    if echo "hello after the pause" | VMSOCK_IVSHMEM=$SOCK "$VMCAT" -N --transport ivshmem 10.0.2.15 "$GUESTPORT" 2>"$WORK/late.err"; then
        connected=1
        break
    fi
    sleep 1
done
[ "$connected" = 1 ] || fail "no host connection reached the guest's listener after the pause: $(cat "$WORK/late.err")"
await_guest "$WORK/console" "guest: listener exit" "the guest's listener never ended"
tr -d '\r' <"$WORK/console" >"$WORK/console.txt"
grep -q "guest: listener exit 0 got: hello after the pause" "$WORK/console.txt" \
    || fail "the guest's listener did not get the host's line: $(grep 'guest: listener' "$WORK/console.txt")"
wait "$BOOT" || fail "the guest's script failed: $(tail -10 "$WORK/console.txt")"
echo "ok: the host side ended ${ended_ms} ms into a ${paused_ms} ms stop of QEMU; the guest's slot came free after" \
    "${quarantine_ms} ms and a host pair's 2 MiB through it, across the resume, arrived whole; the guest's vmcat" \
    "failed with the reason; the guest's listener accepted again"
