#!/usr/bin/env bash
# The test command (README): set-up, debug build, every test, then a check that no test left anything behind.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
tools/setup.sh
swift build --build-tests
swift test

# Tests stop what they start and free what they map; say so loudly if one did not.
left=0
if pgrep -x vmsock-testpeer >/dev/null; then
    echo "test.sh: vmsock-testpeer processes were left running:" >&2
    pgrep -a -x vmsock-testpeer >&2
    pkill -9 -x vmsock-testpeer || true
    left=1
fi
if ls /dev/shm 2>/dev/null | grep -q -i vmsock; then
    echo "test.sh: files were left in /dev/shm: $(ls /dev/shm | grep -i vmsock)" >&2
    left=1
fi
exit $left
