# A guest reboots (`reboot -f`, in the same QEMU: boot.sh --reboot) while its vmcat streams to a host vmcat
# through vmsockd's region. QEMU stays connected to vmsockd, so no leave is announced: the host side must learn of
# the reboot from the guest process's slot, whose heartbeat stops. After the reboot the same guest (same device,
# same peer id) connects again and its 1 MiB arrives whole. The guest learns which boot it is in from a small
# TCP server on the host (reached through user networking at 10.0.2.2).
source "$(dirname "$0")/lib.sh"
guest_host_address

start_vmsockd --vectors 1 --verbose
PORT=$(free_port)
AGAIN=$(free_port)
PHASE=$(free_port)
VMSOCK_IVSHMEM=$SOCK start "$VMCAT" -v -l "$PORT" >"$WORK/received" 2>"$WORK/host.err"
HOSTCAT=$LAST
VMSOCK_IVSHMEM=$SOCK start "$VMCAT" -v -l "$AGAIN" >"$WORK/again" 2>"$WORK/again.err"
AGAINCAT=$LAST
# Answers "1" to the first boot's question, "2" to every later one.
start python3 -c '
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(4)
boot = 0
while True:
    c, _ = s.accept(); boot += 1
    c.sendall(b"%d\n" % min(boot, 2)); c.close()
' "$PHASE"
wait_listening 0.0.0.0 "$PORT"
wait_listening 0.0.0.0 "$AGAIN"
wait_listening 127.0.0.1 "$PHASE"

cat >"$WORK/guest.sh" <<GUEST
boot=\$(nc 10.0.2.2 $PHASE < /dev/null)
echo "guest: boot \$boot"
export VMSOCK_IVSHMEM=pci
if [ "\$boot" = 1 ]; then
    vmcat -v --transport ivshmem $HOST $PORT < /dev/zero &
    sleep 4
    echo "guest: rebooting"
    reboot -f
    sleep 60
fi
head -c 1048576 /dev/urandom > /tmp/data
echo "guest sent: \$(sha256sum < /tmp/data)"
vmcat -v -N --transport ivshmem $HOST $AGAIN < /tmp/data
GUEST
boot_guest --reboot --timeout 170 "$WORK/guest.sh"
await_guest "$WORK/console" "guest: rebooting" "the guest never got to its reboot"
seen=$(date +%s%N)
says "$WORK/host.err" "via ivshmem (vmsockd socket)" "the host's vmcat -v"
[ -s "$WORK/received" ] || fail "no bytes arrived from the guest before its reboot"
while kill -0 "$HOSTCAT" 2>/dev/null && [ $(( $(date +%s%N) - seen )) -lt 2000000000 ]; do sleep 0.02; done
kill -0 "$HOSTCAT" 2>/dev/null && fail "the host's vmcat still runs 2 s after the guest said it reboots: $(tail -3 "$WORK/vmsockd.err")"
ms=$(( ($(date +%s%N) - seen) / 1000000 ))
echo "host vmcat ended ${ms} ms after the console said the guest reboots, with $(stat -c %s "$WORK/received") bytes"

wait "$BOOT" && status=0 || status=$?
tr -d '\r' <"$WORK/console" | grep -E "^(guest|vmcat)" || true
[ "$status" = 0 ] || fail "the rebooted guest's vmcat failed (boot.sh exit $status): $(tr -d '\r' <"$WORK/console" | tail -10)"
[ "$(tr -d '\r' <"$WORK/console" | grep -c '^guest: boot ')" = 2 ] || fail "the guest did not boot twice in one QEMU"
wait_for "$AGAINCAT" 20 || fail "the host's second vmcat failed: $(cat "$WORK/again.err")"
sent=$(tr -d '\r' <"$WORK/console" | sed -n 's/^guest sent: \([0-9a-f]*\).*/\1/p')
[ "$(sha256sum <"$WORK/again" | cut -d' ' -f1)" = "$sent" ] || fail "the rebooted guest's 1 MiB arrived changed ($(stat -c %s "$WORK/again") bytes)"
says "$WORK/again.err" "via ivshmem (vmsockd socket)" "the host's second vmcat -v"
grep -c "joined" "$WORK/vmsockd.err" | grep -qx 3 || fail "vmsockd saw other joins than the two host vmcats and one QEMU: $(cat "$WORK/vmsockd.err")"
echo "ok: a guest rebooted mid-transfer ended the host side in ${ms} ms, and connected again after its reboot"
