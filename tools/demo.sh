#!/usr/bin/env bash
# The main demo (README): set-up, release build, then `vmperf --compare`: the same workloads over vmsock shared
# memory, TCP loopback and a Unix socket, in one run, against a server process it starts itself. Arguments go to
# vmperf (e.g. `-t 5` seconds per workload, `-J` for JSON; `--help` lists them).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
tools/setup.sh
swift build -c release --product vmperf >/dev/null
exec .build/release/vmperf --compare "$@"
