# A guest with an IOMMU (vfio-pci interrupts) streams to a host vmcat through vmsockd's region; QEMU is killed
# (-9) mid-transfer, and the host side ends within about a second: vmsockd announces QEMU's leave, the host's
# node ends the connection (end of stream), vmcat exits.
source "$(dirname "$0")/lib.sh"
guest_host_address

start_vmsockd --vectors 1 --verbose
PORT=$(free_port)
VMSOCK_IVSHMEM=$SOCK start "$VMCAT" -v -l "$PORT" >"$WORK/received" 2>"$WORK/host.err"
HOSTCAT=$LAST
wait_listening 0.0.0.0 "$PORT"

cat >"$WORK/guest.sh" <<GUEST
export VMSOCK_IVSHMEM=pci
vmcat -v --transport ivshmem $HOST $PORT < /dev/zero
GUEST
boot_guest --vfio --timeout 170 "$WORK/guest.sh"
await_guest "$WORK/host.err" "Connection received" "the guest never connected"
says "$WORK/host.err" "via ivshmem (vmsockd socket)" "the host's vmcat -v"
# Let bytes flow for a moment, then kill QEMU while they do.
sleep 1.5
before=$(stat -c %s "$WORK/received")
[ "$before" -gt 0 ] || fail "no bytes arrived from the guest"
tr -d '\r' <"$WORK/console" | grep "via ivshmem" || fail "the guest's vmcat did not say ivshmem: $(tr -d '\r' <"$WORK/console" | tail -5)"
grep -q "via ivshmem (pci, vfio interrupts)" "$WORK/console" || fail "the guest did not use vfio interrupts"
killed=$(date +%s%N)
kill -9 "$(cat "$WORK/qemu.pid")"
for _ in $(seq 100); do kill -0 "$HOSTCAT" 2>/dev/null || break; sleep 0.02; done
kill -0 "$HOSTCAT" 2>/dev/null && fail "the host's vmcat still runs 2 s after QEMU was killed"
ms=$(( ($(date +%s%N) - killed) / 1000000 ))
echo "host vmcat ended ${ms} ms after kill -9 of QEMU, having received $(stat -c %s "$WORK/received") bytes"
[ "$ms" -le 1500 ] || fail "the host side took ${ms} ms to end (more than 1.5 s)"
echo "ok: QEMU killed mid-transfer; the host side ended in ${ms} ms"
