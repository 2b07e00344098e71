#!/usr/bin/env bash
# vmperf from inside a QEMU guest (tools/vm) to a vmperf server on the host, in one run (issue 17; BENCHMARKS.md,
# "vmperf from a QEMU guest to the host"): through vmsockd's ivshmem region (`--transport ivshmem`) against the
# guest's network card (QEMU user networking, e1000; `--transport tcp` to the same host address), at 4 KiB and
# 128 KiB writes and the 64 B round trip (--latency). Prints one table, with the ratio per row.
# Usage: tools/bench-guest.sh [--vfio] [SECONDS]
#   SECONDS   each measurement's -t (default 5); six measurements, one after the other, in one guest
#   --vfio    the guest has an IOMMU and binds the ivshmem device to vfio-pci (interrupts); default: polling
# Builds vmperf and vmsockd in release first (swift build -c release); BIN=DIR uses binaries already built there.
# VMSOCK_VM_ACCEL=kvm on a real KVM host (tools/vm/boot.sh; the default, TCG, emulates the guest's CPU, so its
# absolute figures say little). REGION: vmsockd's --size (default 1G: 4 MiB rings, as vmperf's memfd rings).
# Under a minute under TCG on the 2-core VM (about 10 s of it the guest's boot, with an 88 MB initrd: vmperf
# brings Foundation and ICU). Leaves nothing running and no files but tools/vm's cache (VMSOCK_VM_CACHE), which
# then holds vmperf's initrd instead of the tests' (build.sh keeps one; the next test rebuilds its own).
#
# No vhost-vsock column: it cannot be measured on the machine this was written on. QEMU's
# `-device vhost-vsock-pci,guest-cid=3` needs the host kernel's vhost-vsock (/dev/vhost-vsock), and that kernel
# (6.18.44-fc-v1045) is built with "# CONFIG_VHOST_VSOCK is not set" and "# CONFIG_MODULES is not
# set" (/proc/config.gz): there is no module to load, and QEMU stops with "vhost-vsock: failed to open vhost
# device: No such file or directory". (vhost-user-vsock-pci would need a user-space backend, vhost-device-vsock,
# which Debian 12 does not package, and would measure that backend, not vhost-vsock.) The published vhost-vsock
# figures to set beside this table: about 6 Gbit/s at 4 KiB writes, 20 to 40 Gbit/s at 64 KiB and more.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH:/usr/sbin"
VFIO=0
SECONDS_EACH=5
while [ $# -gt 0 ]; do
    case $1 in
        --vfio) VFIO=1; shift ;;
        [0-9]*) SECONDS_EACH=$1; shift ;;
        *) echo "usage: tools/bench-guest.sh [--vfio] [SECONDS]" >&2; exit 2 ;;
    esac
done
REGION=${REGION:-1G}
for tool in qemu-system-x86_64 python3 ip ss; do
    command -v $tool >/dev/null || { echo "bench-guest: needs $tool (tools/setup.sh)" >&2; exit 1; }
done
if [ -z "${BIN:-}" ]; then
    swift build -c release --product vmperf >/dev/null
    swift build -c release --product vmsockd >/dev/null
    BIN=.build/release
fi
BIN=$(realpath "$BIN")
for binary in vmperf vmsockd; do
    [ -x "$BIN/$binary" ] || { echo "bench-guest: $BIN/$binary is not built" >&2; exit 1; }
done
# The guest dials the host's own address: a host listener publishes those in the region (10.0.2.2, QEMU's alias
# for the host, is published by nobody). Over the NIC the same address goes through user networking's NAT.
HOST=$(ip -4 -o addr show scope global | awk '{ split($4, a, "/"); print a[1]; exit }')
[ -n "$HOST" ] || { echo "bench-guest: this host has no global IPv4 address for the guest to dial" >&2; exit 1; }

WORK=$(mktemp -d /tmp/vmsock-bench-guest.XXXXXX)
PIDS=()
cleanup() {
    [ -s "$WORK/qemu.pid" ] && kill -9 "$(cat "$WORK/qemu.pid")" 2>/dev/null
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    sleep 0.2
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("0.0.0.0",0)); print(s.getsockname()[1])'; }
started=$(date +%s)

SOCK=$WORK/vmsockd.sock
: >"$WORK/vmsockd.out"  # before vmsockd's shell opens it: the wait below reads it at once
"$BIN/vmsockd" --socket "$SOCK" --size "$REGION" --vectors 1 >"$WORK/vmsockd.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do grep -q "ready on" "$WORK/vmsockd.out" && break; sleep 0.1; done
grep -q "ready on" "$WORK/vmsockd.out" || { echo "bench-guest: vmsockd did not start: $(cat "$WORK/vmsockd.out")" >&2; exit 1; }
# One server for every measurement (vmperf -s serves one client at a time; the guest runs them in turn). It is a
# vmsock listener in the region and on TCP at once.
PORT=$(free_port)
VMSOCK_IVSHMEM=$SOCK "$BIN/vmperf" -s -p "$PORT" >"$WORK/server.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do ss -ltn | grep -q ":$PORT " && break; sleep 0.1; done
ss -ltn | grep -q ":$PORT " || { echo "bench-guest: the host's vmperf server did not listen: $(cat "$WORK/server.out")" >&2; exit 1; }

# The guest prints each result as one line (JSON has no raw newlines inside its strings), after the others
# so that the serial console carries nothing while a measurement runs. ivshmem and the NIC alternate.
cat >"$WORK/guest.sh" <<GUEST
export VMSOCK_IVSHMEM=pci
measure() {  # NAME vmperf-options...
    name=\$1; shift
    echo "bench-guest: \$name"
    vmperf -c $HOST -p $PORT -J -i 0 -t $SECONDS_EACH "\$@" > /tmp/\$name.json 2>/tmp/\$name.err
    echo "\$?" > /tmp/\$name.status
}
measure ivshmem-4K --transport ivshmem -l 4K
measure tcp-4K --transport tcp -l 4K
measure tcp-128K --transport tcp -l 128K
measure ivshmem-128K --transport ivshmem -l 128K
measure ivshmem-rtt --transport ivshmem --latency -l 64
measure tcp-rtt --transport tcp --latency -l 64
for name in ivshmem-4K tcp-4K ivshmem-128K tcp-128K ivshmem-rtt tcp-rtt; do
    echo "bench-result \$name \$(cat /tmp/\$name.status) \$(tr -d '\n' < /tmp/\$name.json)"
    [ -s /tmp/\$name.err ] && echo "bench-stderr \$name \$(head -c 400 /tmp/\$name.err | tr '\n' ' ')"
done
true
GUEST

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores; guest: ${VMSOCK_VM_ACCEL:-tcg}," \
    "$([ "$VFIO" = 1 ] && echo "vfio interrupts" || echo "polling"); host $HOST, region $REGION; ${SECONDS_EACH} s each"
status=0
# The console goes to a file; the guest's progress lines are shown as they come.
{ VMSOCK_VM_BINARIES=vmperf tools/vm/boot.sh --bin "$BIN" --socket "$SOCK" $([ "$VFIO" = 1 ] && echo --vfio) \
    --pidfile "$WORK/qemu.pid" --timeout $((150 + 6 * (SECONDS_EACH + 20))) "$WORK/guest.sh" 2>&1 \
    || echo "bench-guest-boot-status $?"; } \
    | tee "$WORK/console" | grep --line-buffered -aE "^bench-guest: |SKIP" \
    | while read -r line; do echo "${line%$'\r'} ($(($(date +%s) - started)) s)"; done || true
if [ -n "${KEEP:-}" ]; then cp "$WORK/console" "$KEEP"; fi  # KEEP=FILE: the guest's console, for a closer look
status=$(tr -d '\r' <"$WORK/console" | sed -n 's/^bench-guest-boot-status \([0-9]*\)$/\1/p')
[ "$status" = 77 ] && { echo "bench-guest: no guest can be booted here: $(grep SKIP "$WORK/console" | tail -1)" >&2; exit 1; }
[ -z "$status" ] || { echo "bench-guest: the guest failed (boot.sh exit $status):" >&2; tr -d '\r' <"$WORK/console" | tail -20 >&2; exit 1; }

tr -d '\r' <"$WORK/console" | python3 -c '
import json, sys
results, errors, notes = {}, [], []
for line in sys.stdin:
    if line.startswith("bench-stderr "):  # shown, but only a failed vmperf fails the run
        notes.append(line.split(" ", 1)[1].strip())
    if not line.startswith("bench-result "):
        continue
    _, name, status, document = line.rstrip("\n").split(" ", 3)
    try:
        results[name] = json.loads(document) if status == "0" else None
    except ValueError:
        results[name] = None
    if results[name] is None:
        errors.append("%s: vmperf exit %s" % (name, status))

def transport(name):
    d = results.get(name)
    return d["start"]["vmsock"]["transport_description"] if d else "failed"

def rate(name):  # Gbit/s, as the receiver counted it
    d = results.get(name)
    return d["end"]["sum_received"]["bits_per_second"] / 1e9 if d else None

def rtt(name, key):
    d = results.get(name)
    if not d: return None
    latency = d["end"]["latency"]
    return latency[key] if key == "mean" else latency["percentiles"][key]

for name in ("ivshmem-4K", "tcp-4K"):
    d = results.get(name)
    if d:
        v = d["start"]["vmsock"]
        ring = ", ring %d bytes" % v["ring_size"] if v.get("ring_size") else ""
        print("guest vmperf -V, --transport %s: transport: %s%s" % (name.split("-")[0], v["transport_description"], ring))
for e in errors:
    print("error: " + e)
for n in notes:
    print("the guest vmperf\x27s standard error, " + n)

mode = transport("ivshmem-4K").replace("ivshmem (", "").rstrip(")")
fmt = lambda x, unit: "failed" if x is None else ("%.0f %s" % (x, unit) if x >= 100 else "%.3g %s" % (x, unit))
print()
print("| workload | ivshmem (%s) | guest NIC (e1000, user networking) | ivshmem / NIC |" % mode)
print("|---|---|---|---|")
for size in ("4K", "128K"):
    a, b = rate("ivshmem-" + size), rate("tcp-" + size)
    ratio = "%.1fx" % (a / b) if a and b else "-"
    print("| %s writes | %s | %s | %s |" % (size.replace("K", " KiB"), fmt(a, "Gbit/s"), fmt(b, "Gbit/s"), ratio))
for key, label in (("mean", "mean"), ("50", "p50"), ("99", "p99")):
    a, b = rtt("ivshmem-rtt", key), rtt("tcp-rtt", key)
    times = lambda x: "%.0fx" % x if x >= 10 else "%.1fx" % x
    ratio = "-" if not (a and b) else (times(b / a) + " lower" if b >= a else times(a / b) + " higher")
    print("| 64 B round trip, %s | %s | %s | %s |" % (label, fmt(a, "us"), fmt(b, "us"), ratio))
# How often a wait slept, on each side (a sleeping guest in polling mode looks again only after 1 ms): what
# explains a round trip whose mean is far above its median.
def sleeps(name):
    d = results.get(name)
    if not d or "streams" not in d["end"]["vmsock"]: return "-"
    count = lambda w: w["read_sleeps"] + w["write_sleeps"]
    streams = d["end"]["vmsock"]["streams"]
    return "%d / %d" % (sum(count(s["sender_waits"]) for s in streams), sum(count(s["receiver_waits"]) for s in streams))
print("ivshmem waits that slept (guest / host): 4 KiB %s, 128 KiB %s, round trip %s" % (
    sleeps("ivshmem-4K"), sleeps("ivshmem-128K"), sleeps("ivshmem-rtt")))
sys.exit(1 if errors else 0)
' || status=1
[ -e /dev/vhost-vsock ] || echo "vhost-vsock: not measured; this host has no /dev/vhost-vsock (see the header of $0)"
echo "run time: $(($(date +%s) - started)) s; load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
exit "${status:-0}"
