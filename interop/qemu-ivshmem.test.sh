# vmsockd serves an unmodified QEMU (ivshmem-doorbell, Debian's qemu-system-x86): QEMU joins with all its vectors,
# its BAR2 is vmsockd's region (its size, and through the monitor vmsockd's header and a client's byte in it), and
# its death is announced to the other peers. No guest kernel: QEMU reads the server's messages while it realizes
# the device, before the guest starts, and its firmware (SeaBIOS) places BAR2.
source "$(dirname "$0")/lib.sh"
need python3
command -v qemu-system-x86_64 >/dev/null || skip "qemu-system-x86_64 is not installed (tools/setup.sh installs qemu-system-x86)"
VMSOCKD=$BIN/vmsockd
[ -x "$VMSOCKD" ] || fail "$VMSOCKD is not built (swift build)"
SOCK=$WORK/vmsockd.sock
MONITOR=$WORK/monitor.sock
VECTORS=4

# Everything runs under timeout; cleanup kills what timeout runs (by its parent's pid), not only timeout itself.
run_bounded() {
    start timeout -s KILL 120 "$@"
    CLEANUPS+=("pkill -KILL -P $LAST")
}

# One HMP command on QEMU's monitor socket; prints its answer.
monitor() {
    python3 - "$MONITOR" "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
def until_prompt():
    out = b""
    while not out.endswith(b"(qemu) "):
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    return out.decode(errors="replace")
until_prompt()
s.sendall(sys.argv[2].encode() + b"\n")
# The monitor echoes the command with terminal escapes; the answer is what follows the first line.
print(until_prompt().split("\n", 1)[-1].replace("(qemu) ", ""))
PY
}

run_bounded "$VMSOCKD" --socket "$SOCK" --vectors "$VECTORS" --verbose >"$WORK/vmsockd.out" 2>"$WORK/vmsockd.err"
DAEMON=$LAST
wait_contains "$WORK/vmsockd.out" 10 "vmsockd: ready on $SOCK (64 MiB region, $VECTORS vectors)"

# A library client joined first: it writes its id + 1 (1) at the first byte of the region's arena.
run_bounded "$PEER" ivshmem-echo "$SOCK" >"$WORK/client.out" 2>&1
CLIENT=$LAST
wait_contains "$WORK/client.out" 10 "ready"
says "$WORK/client.out" "id 0 vectors $VECTORS slots 65536" "the library client"

run_bounded qemu-system-x86_64 -machine q35 -accel tcg -nographic -nodefaults -display none -m 64 \
    -chardev socket,path="$SOCK",id=ivs -device ivshmem-doorbell,chardev=ivs,vectors="$VECTORS" \
    -monitor unix:"$MONITOR",server=on,wait=off -pidfile "$WORK/qemu.pid" >"$WORK/qemu.out" 2>&1
# The client reports a peer once its last vector has arrived: QEMU joined with all of them.
wait_contains "$WORK/client.out" 30 "joined 1"
for _ in $(seq 100); do [ -s "$WORK/qemu.pid" ] && [ -S "$MONITOR" ] && break; sleep 0.1; done
QEMU=$(cat "$WORK/qemu.pid")
says "$WORK/vmsockd.err" "peer 1 joined (pid $QEMU, uid $(id -u)), epoch 2" "vmsockd"
echo "QEMU (pid $QEMU) joined as peer 1 with $VECTORS vectors"

# BAR2 is the region: 64 MiB, starting with vmsockd's magic "vmsockI\1", and the client's byte in the arena
# (at 4 KiB of header + 4 MiB of slot table).
pci=$(monitor "info pci")
bar=$(echo "$pci" | grep -A6 "PCI device 1af4:1110" | grep "BAR2:") || fail "no ivshmem BAR2 in: $pci"
echo "$bar"
start_hex=$(echo "$bar" | sed -n 's/.* at \(0x[0-9a-f]*\) \[\(0x[0-9a-f]*\)\].*/\1/p')
end_hex=$(echo "$bar" | sed -n 's/.* at \(0x[0-9a-f]*\) \[\(0x[0-9a-f]*\)\].*/\2/p')
[ -n "$start_hex" ] || fail "cannot read BAR2's range from: $bar"
[ $((end_hex - start_hex + 1)) = $((64 << 20)) ] || fail "BAR2 is $((end_hex - start_hex + 1)) bytes, expected 64 MiB"
if [ "$start_hex" = 0xffffffffffffffff ] || [ $((start_hex)) = 0 ]; then
    echo "BAR2 has no address (the firmware did not place it): memory contents not checked"
else
    magic=$(monitor "xp /1gx $start_hex")
    echo "$magic" | grep -q "0x01496b636f736d76" || fail "BAR2 does not start with vmsockd's magic: $magic"
    byte=$(monitor "xp /1bx $(printf '0x%x' $((start_hex + 4096 + (4 << 20))))")
    echo "$byte" | grep -q ": 0x01" || fail "the client's byte is not in QEMU's BAR2: $byte"
    echo "QEMU's BAR2 holds vmsockd's header and the client's byte"
fi

kill -KILL "$QEMU"
wait_contains "$WORK/client.out" 10 "left 1"
wait_contains "$WORK/vmsockd.err" 10 "peer 1 left: it hung up"
echo "QEMU's death (kill -9) was announced"

kill -TERM "$DAEMON"
status=0
wait_for "$DAEMON" 10 || status=$?
[ "$status" = 0 ] || fail "vmsockd exited with status $status: $(cat "$WORK/vmsockd.err")"
[ ! -e "$SOCK" ] || fail "vmsockd left its socket file behind"
wait_contains "$WORK/client.out" 10 "vmsockd gone"
wait_for "$CLIENT" 10 || fail "the client did not end with vmsockd"
echo "ok: QEMU joined vmsockd, shared its region, and its leave was announced; vmsockd left nothing behind"
