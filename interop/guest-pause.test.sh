# QEMU is stopped (SIGSTOP, as a loaded host or a debugger stops it) for about 3 s while a vmcat in the guest
# streams to a host vmcat through vmsockd's region. vmsockd stops seeing the guest processes' heartbeats and takes
# their slots back after 0.6 s, so the host side must end by itself, as for a killed guest process.
# While the guest stands still, two host processes start a stream of 2 MiB of random bytes through the region,
# paced so that it runs on after the guest runs again. The guest's old slot is in quarantine, so their connection
# takes another; and the guest's vmcat, running again, must write nothing more into its old slot: its next write
# fails with the reason (ECONNRESET). The pair's bytes must arrive unchanged.
# A vmcat listening in the guest all along must then accept a host connection through the region: its process
# takes a new slot and publishes its listen entries again.
source "$(dirname "$0")/lib.sh"
guest_host_address
start_vmsockd --vectors 1 --verbose
PORT=$(free_port)
PAIR=$(free_port)
GUESTPORT=$(free_port)
VMSOCK_IVSHMEM=$SOCK start "$VMCAT" -v -l "$PORT" >"$WORK/received" 2>"$WORK/host.err"
HOSTCAT=$LAST
VMSOCK_IVSHMEM=$SOCK start "$VMCAT" -v -l "$PAIR" >"$WORK/pair.out" 2>"$WORK/pair-listener.err"
PAIRLISTENER=$LAST
wait_listening 0.0.0.0 "$PORT"
wait_listening 0.0.0.0 "$PAIR"

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
kill -STOP "$QEMU"
stopped=$(date +%s%N)
CLEANUPS+=("kill -CONT $QEMU")
while kill -0 "$HOSTCAT" 2>/dev/null && [ $(( $(date +%s%N) - stopped )) -lt 2500000000 ]; do sleep 0.02; done
kill -0 "$HOSTCAT" 2>/dev/null && { kill -CONT "$QEMU"; fail "the host's vmcat still runs 2.5 s after QEMU was stopped"; }
ended_ms=$(( ($(date +%s%N) - stopped) / 1000000 ))
grep -q "process slot" "$WORK/vmsockd.err" || { kill -CONT "$QEMU"; fail "vmsockd did not say it cleared the guest process's slot"; }

# The pair: 1 MiB now, while the guest stands still, then 1 MiB more once it runs again.
head -c 1048576 /dev/urandom >"$WORK/one"
head -c 1048576 /dev/urandom >"$WORK/two"
( cat "$WORK/one"; sleep 4; cat "$WORK/two" ) | VMSOCK_IVSHMEM=$SOCK "$VMCAT" -v -N --transport ivshmem 127.0.0.1 "$PAIR" \
    2>"$WORK/pair.err" &
PAIRSENDER=$!
PIDS+=("$PAIRSENDER")
for _ in $(seq 100); do [ "$(stat -c %s "$WORK/pair.out")" -ge 1048576 ] && break; sleep 0.05; done
[ "$(stat -c %s "$WORK/pair.out")" -ge 1048576 ] || { kill -CONT "$QEMU"; fail "the pair's first MiB did not arrive: $(cat "$WORK/pair.err")"; }
while [ $(( $(date +%s%N) - stopped )) -lt 3000000000 ]; do sleep 0.05; done
kill -CONT "$QEMU"
paused_ms=$(( ($(date +%s%N) - stopped) / 1000000 ))
echo "QEMU stood still for ${paused_ms} ms; the host's vmcat ended ${ended_ms} ms after the stop"

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

# The guest's listener, through the region, under its process's new slot.
connected=0
for _ in $(seq 50); do
    if echo "hello after the pause" | VMSOCK_IVSHMEM=$SOCK "$VMCAT" -N --transport ivshmem 10.0.2.15 "$GUESTPORT" 2>"$WORK/late.err"; then
        connected=1
        break
    fi
    sleep 0.2
done
[ "$connected" = 1 ] || fail "no host connection reached the guest's listener after the pause: $(cat "$WORK/late.err")"
await_guest "$WORK/console" "guest: listener exit" "the guest's listener never ended"
tr -d '\r' <"$WORK/console" >"$WORK/console.txt"
grep -q "guest: listener exit 0 got: hello after the pause" "$WORK/console.txt" \
    || fail "the guest's listener did not get the host's line: $(grep 'guest: listener' "$WORK/console.txt")"
wait "$BOOT" || fail "the guest's script failed: $(tail -10 "$WORK/console.txt")"
echo "ok: the host side ended ${ended_ms} ms into a ${paused_ms} ms stop of QEMU; the guest's vmcat then failed with the" \
    "reason; a host pair's 2 MiB across the resume arrived whole; the guest's listener accepted again"
