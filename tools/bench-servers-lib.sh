# Sourced by the benchmarks that run real servers under vmsock-run against plain TCP (tools/bench-servers.sh,
# tools/bench-proxy.sh): NAME (for messages) and the tools each needs, set before sourcing. Checks the tools,
# builds vmsock-run and its library in release (SCRATCH=.build, the --scratch-path; BUILD=0 skips it), and gives
# RUN (vmsock-run --stats), WORK (removed at exit), SERVERS (pids stopped at exit), free_port, wait_listening,
# stop_servers and transports.
# RUN counts rather than prints: --debug's line per connection (formatted and written as the connection is made)
# cost nginx about 7 us of CPU per request when it proxies with a new upstream connection per request, a tenth of
# the whole; --stats prints one line per process at exit, which stop_servers waits for.
# Usage: NAME=bench-x; TOOLS="nginx wrk"; source "$(dirname "$0")/bench-servers-lib.sh"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="/opt/swift/usr/bin:$PATH:/usr/sbin"
SCRATCH=${SCRATCH:-.build}
for tool in $TOOLS python3 ss; do
    command -v "$tool" >/dev/null || { echo "$NAME: needs $tool (tools/setup.sh)" >&2; exit 1; }
done
if [ "${BUILD:-1}" = 1 ]; then
    swift build -c release --scratch-path "$SCRATCH" --product vmsock-preload >/dev/null
    swift build -c release --scratch-path "$SCRATCH" --product vmsock-run >/dev/null
fi
RUN="$(realpath "$SCRATCH/release/vmsock-run") --stats"
WORK=$(mktemp -d "/tmp/vmsock-$NAME.XXXXXX")
SERVERS=()
cleanup() {
    for pid in "${SERVERS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
        sleep 0.2
        pkill -9 -P "$pid" 2>/dev/null || true
        kill -9 "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Stops the servers with SIGTERM and waits up to 10 s for them, so that their --stats lines are written (a
# process killed, or one that called _exit, writes none: its counts are missing from the sums).
stop_servers() {
    local pid left=()
    for pid in "${SERVERS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq 100); do
        left=()
        for pid in "${SERVERS[@]}"; do kill -0 "$pid" 2>/dev/null && left+=("$pid"); done
        [ ${#left[@]} = 0 ] && break
        sleep 0.1
    done
    [ ${#left[@]} = 0 ] || echo "$NAME: ${#left[@]} server(s) still running 10 s after SIGTERM: their counts are missing" >&2
    SERVERS=("${left[@]}")  # the rest for cleanup; pids that exited are not ours to signal any more
}
# What the --stats lines in FILES say, summed over processes: "N of M shared memory" for KIND connects or accepts.
transports() {  # KIND FILES...
    local kind=$1; shift
    cat "$@" 2>/dev/null | sed -n "s/.*$kind: \([0-9]*\) shared memory, \([0-9]*\) tcp.*/\1 \2/p" |
        awk '{ shm += $1; all += $1 + $2 } END { printf "%d of %d shared memory", shm, all }'
}
wait_listening() {
    for _ in $(seq 100); do ss -ltn | grep -q "127.0.0.1:$1 " && return 0; sleep 0.1; done
    echo "$NAME: nothing on port $1" >&2
    exit 1
}
