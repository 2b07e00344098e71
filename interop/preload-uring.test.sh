# A program that moves its connection's bytes with io_uring (issue 19): those reads and writes never pass
# through libc, so the library cannot route them to the rings. programs/preload-uring.c, with liburing, accepts,
# receives and sends through its ring, echoing 1 MiB a client thread sends with plain calls. Under vmsock-run its
# listen must stay TCP-only and its connect use TCP, and the output must be what it is without vmsock-run.
source "$(dirname "$0")/lib.sh"
[ -f /usr/include/liburing.h ] || skip "liburing.h is missing (Debian liburing-dev; tools/setup.sh installs it)"
same_under_preload preload-uring "-Wl,--no-as-needed -luring"
grep -q '^io_uring unavailable' "$WORK/plain.txt" && skip "this kernel refuses io_uring: $(cat "$WORK/plain.txt")"
grep -q 'echoed through io_uring: 1048576 bytes, 0 wrong' "$WORK/plain.txt" || fail "the echo was wrong: $(cat "$WORK/plain.txt")"
grep -qE "listen fd [0-9]+ on .*: tcp only \(liburing is loaded" "$WORK/debug.txt" \
    || fail "the listen was not TCP-only: $(cat "$WORK/debug.txt")"
grep -qE "connect fd [0-9]+ to .*: tcp \(liburing is loaded" "$WORK/debug.txt" \
    || fail "the connect was not TCP: $(cat "$WORK/debug.txt")"
echo "ok: 1 MiB echoed through io_uring under vmsock-run, over TCP, as without it"
