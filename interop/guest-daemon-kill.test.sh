# The host vmcat a guest streams to is frozen (SIGSTOP), then vmsockd is killed (kill -9), mid-transfer. Nothing
# is left to clear the host peer's slot, to close its ring or to announce anything, and QEMU keeps the region
# mapped: the guest learns it only from vmsockd's heartbeat in the region's header, which stops. Its vmcat must end (within the 2 s heartbeat timeout
# and a pass) with an error that names vmsockd, and a vmcat started afterwards must fail with a clear error too,
# not hang.
source "$(dirname "$0")/lib.sh"
guest_host_address

start_vmsockd --vectors 1
PORT=$(free_port)
VMSOCK_IVSHMEM=$SOCK start "$VMCAT" -v -l "$PORT" >/dev/null 2>"$WORK/host.err"
HOSTCAT=$LAST
wait_listening 0.0.0.0 "$PORT"

cat >"$WORK/guest.sh" <<GUEST
export VMSOCK_IVSHMEM=pci
vmcat -v --transport ivshmem $HOST $PORT < /dev/zero
echo "guest: first vmcat exit \$?"
start=\$(cut -d' ' -f1 /proc/uptime)
timeout 20 vmcat -v --transport ivshmem $HOST $PORT < /dev/null
echo "guest: second vmcat exit \$? after \$start \$(cut -d' ' -f1 /proc/uptime)"
GUEST
boot_guest --timeout 170 "$WORK/guest.sh"
await_guest "$WORK/host.err" "Connection received" "the guest never connected"
says "$WORK/host.err" "via ivshmem (vmsockd socket)" "the host's vmcat -v"
sleep 1.5
kill -STOP "$HOSTCAT"  # so that it cannot close its end when it sees vmsockd go
kill -9 "$DAEMON"
killed=$(date +%s%N)
while ! grep -q "guest: first vmcat exit" "$WORK/console" && [ $(( $(date +%s%N) - killed )) -lt 6000000000 ]; do sleep 0.05; done
grep -q "guest: first vmcat exit" "$WORK/console" || fail "the guest's vmcat still streams 6 s after vmsockd and its partner were killed"
ms=$(( ($(date +%s%N) - killed) / 1000000 ))
wait "$BOOT" && status=0 || status=$?
tr -d '\r' <"$WORK/console" | grep -E "^(guest|vmcat)" || true
first=$(tr -d '\r' <"$WORK/console" | sed -n 's/^guest: first vmcat exit \([0-9]*\)/\1/p')
[ "$first" != 0 ] || fail "the guest's first vmcat exited 0 though its partner was killed"
tr -d '\r' <"$WORK/console" | grep -q "vmcat: .*vmsockd stopped" || fail "the guest's vmcat did not say vmsockd stopped"
second=$(tr -d '\r' <"$WORK/console" | sed -n 's/^guest: second vmcat exit \([0-9]*\) .*/\1/p')
[ -n "$second" ] || fail "the guest's second vmcat did not finish: $(tr -d '\r' <"$WORK/console" | tail -10)"
[ "$second" != 0 ] && [ "$second" != 124 ] || fail "the guest's second vmcat exited $second (0: it cannot have connected; 124: it hung)"
kill -9 "$HOSTCAT"
echo "ok: the guest's vmcat ended ${ms} ms (console time) after vmsockd was killed, naming it; a later one failed with exit $second"
