#!/usr/bin/env bash
# Installs what a fresh machine lacks to build and test vmsock: libevent-dev (and pkg-config) from Debian, and
# the programs the interop tests run against: nc (netcat-openbsd), socat, iperf3, curl, sockperf, ip and ss
# (iproute2), setpriv, redis-server and redis-benchmark/redis-cli (redis-tools), nginx, haproxy, memcached, wrk and ab
# (apache2-utils) for the real-server tests and tools/bench-servers.sh, liburing-dev (a server on io_uring under
# vmsock-run), openssh-server (sshd re-execs itself on each connection), and qemu-system-x86_64 (vmsockd's QEMU test; it skips without it).
# Idempotent and quiet when everything is there. Needs root for apt-get (CI and the dev machines run as root).
set -euo pipefail

if ! command -v swift >/dev/null 2>&1; then
    if [ -x /opt/swift/usr/bin/swift ]; then
        echo "setup: swift is not on PATH; use: export PATH=/opt/swift/usr/bin:\$PATH" >&2
    else
        echo "setup: no Swift toolchain found (expected /opt/swift); install Swift 6 first" >&2
    fi
    exit 1
fi

missing=()
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
pkg-config --exists libevent_pthreads 2>/dev/null || missing+=(libevent-dev)
command -v nc >/dev/null 2>&1 || missing+=(netcat-openbsd)
command -v socat >/dev/null 2>&1 || missing+=(socat)
command -v ss >/dev/null 2>&1 && command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v setpriv >/dev/null 2>&1 || missing+=(util-linux)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v iperf3 >/dev/null 2>&1 || missing+=(iperf3)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v sockperf >/dev/null 2>&1 || missing+=(sockperf)  # vmsock-run's ping-pong benchmark (BENCHMARKS.md)
# Real servers under vmsock-run (issue 19). The tests start their own instances on free ports; a distribution
# service the packages may start is left alone.
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-benchmark >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)  # interop/preload-haproxy
command -v memcached >/dev/null 2>&1 || missing+=(memcached)  # interop/preload-memcached
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v ab >/dev/null 2>&1 || missing+=(apache2-utils)  # ab: tools/bench-servers.sh's second HTTP client
command -v qemu-system-x86_64 >/dev/null 2>&1 || missing+=(qemu-system-x86)
[ -f /usr/include/liburing.h ] || missing+=(liburing-dev)  # interop/preload-uring: a server that uses io_uring
# interop/preload-sshd: sshd re-execs itself on each accepted connection (its client, ssh, comes with it)
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
# interop/preload-fork spawns a static build of its program (libc.a)
[ -f "$(cc -print-file-name=libc.a 2>/dev/null)" ] || missing+=(libc6-dev)
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The Python "iperf3" module: its TestResult is a real consumer of iperf3's JSON, which vmperf -J must satisfy
# (interop/vmperf-iperf3-json.test.sh). Only its JSON parser is used; a failed install makes that test skip.
if ! python3 -c "import iperf3" >/dev/null 2>&1; then
    echo "setup: installing the Python iperf3 module (pip)"
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "iperf3==0.1.11" >/dev/null 2>&1 \
        || echo "setup: could not install the Python iperf3 module; its interop test will skip" >&2
fi
