# A guest with an IOMMU (vfio-pci interrupts) streams to a host vmcat through vmsockd's region; QEMU is killed
# (-9) mid-transfer, and the host side ends within about a second: vmsockd announces QEMU's leave, the host's
# node ends the connection (end of stream), vmcat exits.
source "$(dirname "$0")/lib.sh"
need python3 ip
VMSOCKD=$BIN/vmsockd
[ -x "$VMSOCKD" ] || fail "$VMSOCKD is not built (swift build)"
SOCK=$WORK/vmsockd.sock
HOST=$(ip -4 -o addr show scope global | awk '{ split($4, a, "/"); print a[1]; exit }')
[ -n "$HOST" ] || skip "this host has no global IPv4 address for the guest to dial"

start timeout -s KILL 200 "$VMSOCKD" --socket "$SOCK" --vectors 1 --verbose >"$WORK/vmsockd.out" 2>"$WORK/vmsockd.err"
CLEANUPS+=("pkill -KILL -P $LAST")
wait_contains "$WORK/vmsockd.out" 10 "vmsockd: ready on $SOCK"
PORT=$(free_port)
VMSOCK_IVSHMEM=$SOCK start "$VMCAT" -v -l "$PORT" >"$WORK/received" 2>"$WORK/host.err"
HOSTCAT=$LAST
wait_listening 0.0.0.0 "$PORT"

cat >"$WORK/guest.sh" <<GUEST
export VMSOCK_IVSHMEM=pci
vmcat -v --transport ivshmem $HOST $PORT < /dev/zero
GUEST
start tools/vm/boot.sh --bin "$BIN" --socket "$SOCK" --vfio --pidfile "$WORK/qemu.pid" --timeout 170 "$WORK/guest.sh" \
    >"$WORK/console" 2>&1
BOOT=$LAST
CLEANUPS+=("pkill -KILL -P $BOOT; [ -s $WORK/qemu.pid ] && kill -9 \$(cat $WORK/qemu.pid)")
for _ in $(seq 900); do
    grep -q "Connection received" "$WORK/host.err" 2>/dev/null && break
    kill -0 "$BOOT" 2>/dev/null || break
    sleep 0.1
done
if ! grep -q "Connection received" "$WORK/host.err"; then
    wait "$BOOT" && status=0 || status=$?
    [ "$status" = 77 ] && skip "$(grep SKIP: "$WORK/console" | tail -1)"
    fail "the guest never connected (boot.sh exit $status): $(tr -d '\r' <"$WORK/console" | tail -20)"
fi
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
