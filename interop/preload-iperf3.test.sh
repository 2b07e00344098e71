# Unmodified iperf3 under vmsock-run, both ends (select loop, TCP_INFO, non-blocking sends): a normal run, -P 4,
# -R, --bidir, and -J parsed as JSON; every data connection confirmed as shared memory (issue 18).
source "$(dirname "$0")/lib.sh"
need iperf3 ss python3
[ -x "$VMSOCK_RUN" ] || fail "$VMSOCK_RUN is not built (swift build)"
R="$VMSOCK_RUN --debug"

run() {
    local label=$1 streams=$2; shift 2
    port=$(free_port)
    start $R iperf3 -s -1 -p "$port" >"$WORK/server.out" 2>"$WORK/server.err"
    local pid=$LAST
    wait_listening "" "$port"
    timeout 30 $R iperf3 -c 127.0.0.1 -p "$port" -t 1 "$@" >"$WORK/client.out" 2>"$WORK/client.err" \
        || fail "$label: iperf3 -c failed: $(cat "$WORK/client.out" "$WORK/client.err")"
    wait_for "$pid" 30 || fail "$label: iperf3 -s failed: $(cat "$WORK/server.out" "$WORK/server.err")"
    # The control connection and one per stream, on each side.
    count_says "$WORK/client.err" $((streams + 1)) "shared memory"
    count_says "$WORK/server.err" $((streams + 1)) "shared memory"
}

run "normal" 1
grep -q "receiver" "$WORK/client.out" || fail "normal: no summary: $(cat "$WORK/client.out")"
run "-P 4" 4 -P 4
grep -q "SUM.*receiver" "$WORK/client.out" || fail "-P 4: no sum: $(cat "$WORK/client.out")"
run "-R" 1 -R
grep -q "receiver" "$WORK/client.out" || fail "-R: no summary: $(cat "$WORK/client.out")"
run "--bidir" 2 --bidir
grep -q "RX-C.*receiver" "$WORK/client.out" || fail "--bidir: no receiving stream: $(cat "$WORK/client.out")"
run "-J" 1 -J
python3 - "$WORK/client.out" <<'PY' || fail "-J: $(cat "$WORK/client.out")"
import json, sys
doc = json.load(open(sys.argv[1]))
received = doc["end"]["sum_received"]["bytes"]
assert received > 0 and "error" not in doc, doc.get("error")
print("iperf3 -J: %d bytes, %.1f Gbit/s" % (received, doc["end"]["sum_received"]["bits_per_second"] / 1e9))
PY
echo "ok: iperf3 normal, -P 4, -R, --bidir, -J over shared memory"
