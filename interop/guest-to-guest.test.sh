# Two QEMU guests on one vmsockd stream to each other through its region, with no host process in the path:
# guest B (10.0.2.15) sends a file to a vmcat listening in guest A (10.0.2.16) and reads it back from A's second
# listener, sha256-checked; both say they used ivshmem through the PCI device (polling: no IOMMU).
# Both guests boot at once; B retries each connect until A listens (a refused connect is quick).
# Size: VMSOCK_GUEST_MIB (default 64 MiB each way).
source "$(dirname "$0")/lib.sh"
need python3
MIB=${VMSOCK_GUEST_MIB:-64}
A=10.0.2.16
IN=$(free_port)
OUT=$(free_port)

start_vmsockd --vectors 1 --verbose
# Built once here: two boot.sh building the same new initrd at once would race in the cache.
tools/vm/build.sh "$BIN" >/dev/null 2>"$WORK/build.err" || skip "$(grep SKIP: "$WORK/build.err" | tail -1)"

# A receives the file, then serves it back on a second port.
cat >"$WORK/a.sh" <<GUEST
export VMSOCK_IVSHMEM=pci
vmcat -v -l $IN > /tmp/data || exit 1
echo "guest A received: \$(sha256sum < /tmp/data)"
exec vmcat -v -N -l $OUT < /tmp/data
GUEST
# B's connects fail (refused) until A listens: up to 60 s, as A may boot later than B.
cat >"$WORK/b.sh" <<GUEST
export VMSOCK_IVSHMEM=pci
head -c $((MIB << 20)) /dev/urandom > /tmp/data
echo "guest B sent: \$(sha256sum < /tmp/data)"
send() { vmcat -v -N --transport ivshmem $A $IN < /tmp/data; }
fetch() { vmcat -v --transport ivshmem $A $OUT > /tmp/back; }
try() {
    for attempt in \$(seq 300); do
        from=\$(cut -d' ' -f1 /proc/uptime)
        \$1 2>/tmp/err && { cat /tmp/err; echo "guest B: \$1 seconds: \$from \$(cut -d' ' -f1 /proc/uptime)"; return 0; }
        sleep 0.2
    done
    echo "guest B gave up on \$1: \$(cat /tmp/err)"
    return 1
}
try send || exit 1
try fetch || exit 1
echo "guest B got back: \$(sha256sum < /tmp/back)"
GUEST
for guest in a b; do
    ip=$([ $guest = a ] && echo $A || echo 10.0.2.15)
    start tools/vm/boot.sh --bin "$BIN" --socket "$SOCK" --ip "$ip" --pidfile "$WORK/$guest.pid" --timeout 110 \
        "$WORK/$guest.sh" >"$WORK/$guest.console" 2>&1
    eval "BOOT_$guest=$LAST"
    CLEANUPS+=("[ -s $WORK/$guest.pid ] && kill -9 \$(cat $WORK/$guest.pid)")
done
status_a=0 status_b=0
wait_for "$BOOT_b" 120 || status_b=$?
wait_for "$BOOT_a" 20 || status_a=$?
for guest in a b; do
    echo "--- guest $guest:"
    tr -d '\r' <"$WORK/$guest.console" | grep -v "^\[" | grep -E "vmcat|guest|Connection|boot.sh" || true
done
[ "$status_a" = 77 ] && skip "$(grep SKIP: "$WORK/a.console" | tail -1)"
[ "$status_b" = 77 ] && skip "$(grep SKIP: "$WORK/b.console" | tail -1)"
[ "$status_b" = 0 ] || fail "guest B's script failed (exit $status_b): $(tr -d '\r' <"$WORK/b.console" | tail -20)"
[ "$status_a" = 0 ] || fail "guest A's script failed (exit $status_a): $(tr -d '\r' <"$WORK/a.console" | tail -20)"
sent=$(tr -d '\r' <"$WORK/b.console" | sed -n 's/^guest B sent: \([0-9a-f]*\).*/\1/p')
received=$(tr -d '\r' <"$WORK/a.console" | sed -n 's/^guest A received: \([0-9a-f]*\).*/\1/p')
back=$(tr -d '\r' <"$WORK/b.console" | sed -n 's/^guest B got back: \([0-9a-f]*\).*/\1/p')
[ -n "$sent" ] || fail "guest B printed no checksum"
[ "$received" = "$sent" ] || fail "guest A received something else ($received, not $sent)"
[ "$back" = "$sent" ] || fail "guest B got back something else ($back, not $sent)"
says "$WORK/a.console" "via ivshmem (pci, polling)" "guest A's vmcat -v"
says "$WORK/b.console" "via ivshmem (pci, polling)" "guest B's vmcat -v"
# The accepting side sees the connector's own address and a real port, as over TCP.
tr -d '\r' <"$WORK/a.console" | grep -qE "Connection received on 10\.0\.2\.15 [1-9][0-9]* via ivshmem" \
    || fail "guest A did not see guest B's address and port: $(tr -d '\r' <"$WORK/a.console" | grep "Connection received")"
# The successful attempts only (B's clock): the fetch may include a moment until A listens again.
took() { tr -d '\r' <"$WORK/b.console" | sed -n "s/^guest B: $1 seconds: //p" | awk '{ print $2 - $1 }'; }
echo "ok: $MIB MiB guest B -> guest A in $(took send) s, back in $(took fetch) s, through vmsockd's region;" \
    "sha256 equal, ivshmem (pci, polling) on both"
