# A vmcat inside a QEMU guest streams to a host vmcat through vmsockd's region and is killed (kill -9, inside the
# guest) mid-transfer. QEMU stays up, so vmsockd hears of no leave: the host side must learn of the death from the
# guest process's slot, whose heartbeat stops (vmsockd clears it within about 0.6 s). Then a new vmcat in the same
# guest connects again, with a slot of its own, and its 1 MiB arrives whole. That one dials 10.0.2.2, QEMU user
# networking's name for the host, which vmsockd was told is an alias of its host (--host-alias): still ivshmem.
# Last, the other way round: a host vmcat a guest vmcat streams to is killed, and the guest's must end within 2 s.
source "$(dirname "$0")/lib.sh"
guest_host_address

start_vmsockd --vectors 1 --host-alias 10.0.2.2 --verbose
PORT=$(free_port)
AGAIN=$(free_port)
VMSOCK_IVSHMEM=$SOCK start "$VMCAT" -v -l "$PORT" >"$WORK/received" 2>"$WORK/host.err"
HOSTCAT=$LAST
VMSOCK_IVSHMEM=$SOCK start "$VMCAT" -v -l "$AGAIN" >"$WORK/again" 2>"$WORK/again.err"
AGAINCAT=$LAST
THIRD=$(free_port)
VMSOCK_IVSHMEM=$SOCK start "$VMCAT" -v -l "$THIRD" >/dev/null 2>"$WORK/third.err"
THIRDCAT=$LAST
wait_listening 0.0.0.0 "$PORT"
wait_listening 0.0.0.0 "$AGAIN"
wait_listening 0.0.0.0 "$THIRD"

cat >"$WORK/guest.sh" <<GUEST
export VMSOCK_IVSHMEM=pci
vmcat -v --transport ivshmem $HOST $PORT < /dev/zero &
sleep 4
kill -9 \$!
echo "guest: killed vmcat"
sleep 3
head -c 1048576 /dev/urandom > /tmp/data
echo "guest sent: \$(sha256sum < /tmp/data)"
vmcat -v -N --transport ivshmem 10.0.2.2 $AGAIN < /tmp/data || exit 1
vmcat --transport ivshmem $HOST $THIRD < /dev/zero
echo "guest: third vmcat exit \$?"
GUEST
boot_guest --timeout 170 "$WORK/guest.sh"
await_guest "$WORK/console" "guest: killed vmcat" "the guest never got to the kill"
seen=$(date +%s%N)
says "$WORK/host.err" "via ivshmem (vmsockd socket)" "the host's vmcat -v"
[ -s "$WORK/received" ] || fail "no bytes arrived from the guest before the kill"
# The guest's next vmcat starts 3 s after the kill: the host side must have ended well before, by itself.
while kill -0 "$HOSTCAT" 2>/dev/null && [ $(( $(date +%s%N) - seen )) -lt 2000000000 ]; do sleep 0.02; done
kill -0 "$HOSTCAT" 2>/dev/null && fail "the host's vmcat still runs 2 s after the guest said it killed its peer: $(tail -3 "$WORK/vmsockd.err")"
ms=$(( ($(date +%s%N) - seen) / 1000000 ))
echo "host vmcat ended ${ms} ms after the console said the guest's vmcat was killed, with $(stat -c %s "$WORK/received") bytes"
grep "process slot" "$WORK/vmsockd.err" || fail "vmsockd did not say it cleared the guest process's slot"

for _ in $(seq 300); do grep -q "Connection received" "$WORK/third.err" && break; kill -0 "$BOOT" 2>/dev/null || break; sleep 0.1; done
grep -q "Connection received" "$WORK/third.err" || fail "the guest's third vmcat never connected: $(tr -d '\r' <"$WORK/console" | tail -10)"
sleep 1
kill -9 "$THIRDCAT"
killed=$(date +%s%N)
while ! grep -q "guest: third vmcat exit" "$WORK/console" && [ $(( $(date +%s%N) - killed )) -lt 2000000000 ]; do sleep 0.02; done
grep -q "guest: third vmcat exit" "$WORK/console" || fail "the guest's vmcat still streams 2 s after its host partner was killed"
host_ms=$(( ($(date +%s%N) - killed) / 1000000 ))
echo "the guest's vmcat ended ${host_ms} ms (as its console line arrived) after kill -9 of its host partner"
wait "$BOOT" && status=0 || status=$?
tr -d '\r' <"$WORK/console" | grep -E "^(guest|vmcat)" || true
[ "$status" = 0 ] || fail "the guest's script failed (exit $status): $(tr -d '\r' <"$WORK/console" | tail -10)"
wait_for "$AGAINCAT" 20 || fail "the host's second vmcat failed: $(cat "$WORK/again.err")"
sent=$(tr -d '\r' <"$WORK/console" | sed -n 's/^guest sent: \([0-9a-f]*\).*/\1/p')
[ "$(sha256sum <"$WORK/again" | cut -d' ' -f1)" = "$sent" ] || fail "the second connection's 1 MiB arrived changed ($(stat -c %s "$WORK/again") bytes)"
says "$WORK/again.err" "via ivshmem (vmsockd socket)" "the host's second vmcat -v"
echo "ok: a guest process killed mid-transfer ended the host side in ${ms} ms; the guest's next process connected again;" \
    "a host process killed ended the guest side in ${host_ms} ms"
