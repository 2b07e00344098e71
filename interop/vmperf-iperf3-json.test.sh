#!/usr/bin/env bash
# vmperf -J, read by code written for iperf3: the TestResult parser of the Python "iperf3" module (PyPI), and a
# key-by-key comparison with the documents the real iperf3 writes on this machine, plain and with the flags that
# add keys (-O, -b, -T, --extra-data, --get-server-output) (every key iperf3 writes must
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
# And with the flags that add keys: a warm-up (-O: omitted intervals), a rate, a title, extra data, the server's output.
EXTRAS=(-t 1 -O 1 -b 500M -T mine --extra-data more --get-server-output)
port=$(free_port)
start iperf3 -s -1 -B 127.0.0.1 -p "$port" > /dev/null
wait_listening 127.0.0.1 "$port"
iperf3 -c 127.0.0.1 -p "$port" -J "${EXTRAS[@]}" > "$WORK/iperf3-extras.json" || fail "iperf3 itself failed: $(cat "$WORK/iperf3-extras.json")"

run_vmperf() {  # name, client flags... (SERVER_JSON= for a server that writes lines)
    local name=$1; shift
    local port; port=$(free_port)
    start "$VMPERF" -s -1 -p "$port" ${SERVER_JSON--J} > "$WORK/$name-server.json"
    local server=$LAST
    wait_listening '\*' "$port"  # as iperf3's: IPv6 and IPv4 on one socket
    "$VMPERF" -c 127.0.0.1 -p "$port" -J "$@" > "$WORK/$name.json" || fail "vmperf $* failed: $(cat "$WORK/$name.json")"
    wait_for "$server" 15 || fail "the vmperf server for $name failed"
}
run_vmperf shm -t 1 --transport shm
run_vmperf tcp -t 1 --transport tcp
run_vmperf reverse -t 1 -R -P 2
SERVER_JSON= run_vmperf extras "${EXTRAS[@]}"  # as the iperf3 server above: its output as text

python3 - "$WORK" <<'PY' || fail "vmperf's JSON does not read as iperf3's"
import json, sys
from iperf3 import TestResult
work = sys.argv[1]
TCP_STACK = {"snd_wnd", "rtt", "rttvar", "pmtu", "max_snd_cwnd", "max_snd_wnd",
             "max_rtt", "min_rtt", "mean_rtt", "sender_tcp_congestion", "receiver_tcp_congestion",
             "tcp_mss_default", "sock_bufsize", "sndbuf_actual", "rcvbuf_actual"}

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

references = {"plain": paths(json.load(open(f"{work}/iperf3.json"))),
              "extras": paths(json.load(open(f"{work}/iperf3-extras.json")))}
problems = []
for name, role in [("shm", "client"), ("tcp", "client"), ("reverse", "client"), ("shm-server", "server"), ("extras", "client")]:
    reference = references["extras" if name == "extras" else "plain"]
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
    if name == "extras":
        document, theirs = json.loads(text), json.load(open(f"{work}/iperf3-extras.json"))
        for key in ("title", "extra_data"):
            if document.get(key) != theirs.get(key): problems.append(f"extras: {key} is {document.get(key)!r}, iperf3 wrote {theirs.get(key)!r}")
        omitted = [interval["sum"]["omitted"] for interval in document["intervals"]]
        if not omitted or not omitted[0] or omitted[-1]: problems.append(f"extras: omitted flags {omitted}")
        if document["start"]["test_start"]["target_bitrate"] != 500000000: problems.append("extras: target_bitrate")
        if not document.get("server_output_text", "").startswith("Accepted connection from"):
            problems.append(f"extras: server_output_text {document.get('server_output_text', '')[:60]!r}")
    vmsock = json.loads(text)["start"]["vmsock"]
    print(f"{name}: TestResult read it; received {result.received_Mbps:.0f} Mbit/s; transport {vmsock['transport_description']}")
for problem in problems: print("  " + problem)
sys.exit(1 if problems else 0)
PY
grep -q '"transport":	"shared memory"' "$WORK/shm.json" || fail "the shm run did not say shared memory"
grep -q '"transport":	"TCP"' "$WORK/tcp.json" || fail "the tcp run did not say TCP"
echo "PASS: iperf3's Python TestResult reads vmperf -J (client and server), with every key iperf3 writes (also with -O, -b, -T, --extra-data, --get-server-output)"
