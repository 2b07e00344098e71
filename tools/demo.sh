#!/usr/bin/env bash
# The main demo (README): set-up, release build, then two processes stream through vmsock shared memory and
# the rate and a 64-byte round trip are printed. Arguments go to vmsock-demo (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
tools/setup.sh
swift build -c release --product vmsock-demo >/dev/null
exec .build/release/vmsock-demo "$@"
