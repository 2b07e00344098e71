#!/usr/bin/env bash
# vmperf -J, read by code written for iperf3: the TestResult parser of the Python "iperf3" module (PyPI), and a
# key-by-key comparison with the document the real iperf3 writes on this machine (every key iperf3 writes must
# be there with the same JSON type, except those that describe the kernel's TCP stack: rtt, buffers...;
# retransmits is there: the kernel's count over TCP, 0 over shared memory; so is a sender's snd_cwnd: TCP's
# congestion window, the ring's size over shared memory).
source "$(dirname "$0")/lib.sh"
need iperf3 python3
VMPERF=$BIN/vmperf
python3 -c "import iperf3" 2>/dev/null || skip "the Python iperf3 module is missing (tools/setup.sh installs it with pip)"

# The real iperf3's document, for the key list.
port=$(free_port)
start iperf3 -s -1 -B 127.0.0.1 -p "$port" > /dev/null
wait_listening 127.0.0.1 "$port"
iperf3 -c 127.0.0.1 -p "$port" -t 1 -J > "$WORK/iperf3.json" || fail "iperf3 itself failed: $(cat "$WORK/iperf3.json")"

run_vmperf() {  # name, client flags...
    local name=$1; shift
    local port; port=$(free_port)
    start "$VMPERF" -s -1 -p "$port" -J > "$WORK/$name-server.json"
    local server=$LAST
    wait_listening '\*' "$port"  # as iperf3's: IPv6 and IPv4 on one socket
    "$VMPERF" -c 127.0.0.1 -p "$port" -J "$@" > "$WORK/$name.json" || fail "vmperf $* failed: $(cat "$WORK/$name.json")"
    wait_for "$server" 15 || fail "the vmperf server for $name failed"
}
run_vmperf shm -t 1 --transport shm
run_vmperf tcp -t 1 --transport tcp
run_vmperf reverse -t 1 -R -P 2

python3 - "$WORK" <<'PY' || fail "vmperf's JSON does not read as iperf3's"
import json, sys
from iperf3 import TestResult
work = sys.argv[1]
TCP_STACK = {"snd_wnd", "rtt", "rttvar", "pmtu", "max_snd_cwnd", "max_snd_wnd",
             "max_rtt", "min_rtt", "mean_rtt", "sender_tcp_congestion", "receiver_tcp_congestion",
             "tcp_mss_default", "sock_bufsize", "sndbuf_actual", "rcvbuf_actual", "target_bitrate"}

def kind(value):
    if isinstance(value, bool): return "bool"
    if isinstance(value, (int, float)): return "number"
    return type(value).__name__

def paths(value, prefix=""):
    out = {}
    if isinstance(value, dict):
        for key, item in value.items():
            if key in TCP_STACK: continue
            out[prefix + "." + key] = kind(item)
            out.update(paths(item, prefix + "." + key))
    elif isinstance(value, list) and value:
        for item in value: out.update(paths(item, prefix + "[]"))
    return out

reference = paths(json.load(open(f"{work}/iperf3.json")))
problems = []
for name, role in [("shm", "client"), ("tcp", "client"), ("reverse", "client"), ("shm-server", "server")]:
    text = open(f"{work}/{name}.json").read()
    result = TestResult(text)  # what iperf3's Python users call on iperf3's output
    if result.error: problems.append(f"{name}: error {result.error}"); continue
    if result.type != role: problems.append(f"{name}: TestResult.type is {result.type}, want {role}")
    if result.protocol != "TCP": problems.append(f"{name}: protocol {result.protocol}")
    if not result.received_Mbps > 0: problems.append(f"{name}: received_Mbps {result.received_Mbps}")
    if result.reverse != (name == "reverse"): problems.append(f"{name}: reverse is {result.reverse}")
    if role == "client" and not isinstance(result.retransmits, int): problems.append(f"{name}: retransmits {result.retransmits}")
    ours = paths(json.loads(text))
    for path, want in reference.items():
        if role == "server" and path.startswith(".start.connecting_to"): continue
        # iperf3 (and vmperf) write an interval's retransmits and snd_cwnd on the sending side only.
        if name in ("reverse", "shm-server") and path.startswith(".intervals") and path.endswith((".retransmits", ".snd_cwnd")): continue
        if path not in ours: problems.append(f"{name}: no {path}")
        elif ours[path] != want: problems.append(f"{name}: {path} is a {ours[path]}, iperf3 writes a {want}")
    # A sender's intervals name its window as iperf3's snd_cwnd: TCP's congestion window, or the ring's 4 MiB.
    if name in ("shm", "tcp"):
        windows = [stream.get("snd_cwnd") for interval in json.loads(text)["intervals"] for stream in interval["streams"]]
        want = (lambda w: w == 4 << 20) if name == "shm" else (lambda w: isinstance(w, int) and w > 0)
        if not windows or not all(want(w) for w in windows): problems.append(f"{name}: snd_cwnd {windows}")
    vmsock = json.loads(text)["start"]["vmsock"]
    print(f"{name}: TestResult read it; received {result.received_Mbps:.0f} Mbit/s; transport {vmsock['transport_description']}")
for problem in problems: print("  " + problem)
sys.exit(1 if problems else 0)
PY
grep -q '"transport":	"shared memory"' "$WORK/shm.json" || fail "the shm run did not say shared memory"
grep -q '"transport":	"TCP"' "$WORK/tcp.json" || fail "the tcp run did not say TCP"
echo "PASS: iperf3's Python TestResult reads vmperf -J (client and server), with every key iperf3 writes"
