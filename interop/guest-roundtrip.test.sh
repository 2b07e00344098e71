# A vmcat inside a QEMU guest (tools/vm) sends a file to a vmcat on the host through vmsockd's region and gets it
# back, sha256-checked; both sides say they used ivshmem, the guest through its PCI device (polling: no IOMMU).
# The host joins vmsockd through its socket, the guest through QEMU's ivshmem-doorbell device on the same socket.
# Size: VMSOCK_GUEST_MIB (default 64 MiB each way). VMSOCK_GUEST_VFIO=1: the guest has an IOMMU and binds the device
# to vfio-pci, and must say "vfio interrupts" instead.
source "$(dirname "$0")/lib.sh"
MIB=${VMSOCK_GUEST_MIB:-64}
VFIO=${VMSOCK_GUEST_VFIO:-0}
MODE=$([ "$VFIO" = 1 ] && echo "pci, vfio interrupts" || echo "pci, polling")
# The guest dials the host's own address: a host listener publishes those in the region (10.0.2.2 reaches the host
# listeners only through `vmsockd --host-alias`, which this test does not give).
guest_host_address
start_vmsockd --vectors 1 --verbose
IN=$(free_port)
OUT=$(free_port)
# The host: receives the guest's file, then serves it back on a second port.
(
    export VMSOCK_IVSHMEM=$SOCK
    "$VMCAT" -v -l "$IN" >"$WORK/received" 2>"$WORK/host-in.err"
    exec "$VMCAT" -v -N -l "$OUT" <"$WORK/received" 2>"$WORK/host-out.err"
) &
HOSTSIDE=$!
PIDS+=("$HOSTSIDE")
CLEANUPS+=("pkill -KILL -P $HOSTSIDE")
wait_listening 0.0.0.0 "$IN"

cat >"$WORK/guest.sh" <<GUEST
export VMSOCK_IVSHMEM=pci
head -c $((MIB << 20)) /dev/urandom > /tmp/data
echo "guest sent: \$(sha256sum < /tmp/data)"
start=\$(cut -d' ' -f1 /proc/uptime)
vmcat -v -N --transport ivshmem $HOST $IN < /tmp/data || exit 1
for attempt in \$(seq 50); do
    vmcat -v --transport ivshmem $HOST $OUT > /tmp/back && break
    sleep 0.2
done
end=\$(cut -d' ' -f1 /proc/uptime)
echo "guest got back: \$(sha256sum < /tmp/back)"
echo "guest transfer seconds: \$start \$end"
GUEST
status=0
tools/vm/boot.sh --bin "$BIN" --socket "$SOCK" $([ "$VFIO" = 1 ] && echo --vfio) --timeout 170 "$WORK/guest.sh" >"$WORK/console" 2>&1 || status=$?
[ "$status" = 77 ] && skip "$(grep SKIP: "$WORK/console" | tail -1)"
tr -d '\r' <"$WORK/console" | grep -v "^\[" | grep -E "vmcat|guest|Connection" || true
[ "$status" = 0 ] || fail "the guest's script failed (exit $status): $(tail -20 "$WORK/console")"
wait_for "$HOSTSIDE" 20 || fail "the host side failed: $(cat "$WORK"/host-*.err)"
sent=$(tr -d '\r' <"$WORK/console" | sed -n 's/^guest sent: \([0-9a-f]*\).*/\1/p')
back=$(tr -d '\r' <"$WORK/console" | sed -n 's/^guest got back: \([0-9a-f]*\).*/\1/p')
[ -n "$sent" ] || fail "the guest printed no checksum"
[ "$(sha256sum <"$WORK/received" | cut -d' ' -f1)" = "$sent" ] || fail "the host received $(stat -c %s "$WORK/received") bytes that differ from the guest's $MIB MiB"
[ "$back" = "$sent" ] || fail "the guest got back something else ($back, not $sent)"
says "$WORK/console" "via ivshmem ($MODE)" "the guest's vmcat -v"
says "$WORK/host-in.err" "via ivshmem (vmsockd socket)" "the host's vmcat -v"
echo "host: $(cat "$WORK/host-in.err")"
echo "ok: $MIB MiB guest -> host -> guest through vmsockd's region, sha256 equal, ivshmem on both sides"
