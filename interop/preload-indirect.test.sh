# Ways into the kernel other than the named calls (issue 19): a C program (programs/preload-indirect.c) reads,
# writes, waits (poll, ppoll, pselect6, epoll), duplicates and shuts down a connection through libc's
# syscall(), uses preadv2 and pwritev2 at offset -1, and moves 4 MiB by raw write and read; then it wraps a
# connection in stdio streams (fdopen, fprintf, fgets, getline, dprintf), whose reads and writes libc makes
# internally, and a forked child moves one onto its standard input and output and uses stdin and stdout. Run under vmsock-run (its connections
# over shared memory, confirmed by the debug lines) and without it, the output must be the same, built plain and
# fortified (dprintf is then __dprintf_chk). Then a forked worker, and after it the program, call io_uring_setup
# through syscall(): the connections its listener (registered before) accepts from another process and from it,
# and its own, must be TCP, since io_uring moves a socket's bytes past the library.
source "$(dirname "$0")/lib.sh"
same_under_preload preload-indirect "-D_FORTIFY_SOURCE=2"
count_says "$WORK/debug.txt" 6 "shared memory"
same_under_preload preload-indirect ""
count_says "$WORK/debug.txt" 6 "shared memory"
grep -q '4 MiB by raw write and read *4194304 bytes, 0 wrong' "$WORK/plain.txt" || fail "the raw transfer was wrong"
grep -q 'getline after the writer.s fclose *20000 lines, 0 wrong, eof 1' "$WORK/plain.txt" || fail "the stdio transfer was wrong"
# bash's builtins on /dev/tcp: `echo >&3` moves the connection onto standard output for the builtin's printf,
# and moves it back. Both ends under vmsock-run; every line must arrive, in order.
need socat bash
port=$(free_port)
start "$VMSOCK_RUN" socat -u TCP-LISTEN:"$port",bind=127.0.0.1,reuseaddr - >"$WORK/bash-got" 2>"$WORK/bash-server.err"
reader=$LAST
wait_listening 127.0.0.1 "$port"
timeout 30 "$VMSOCK_RUN" --debug bash -c "exec 3<>/dev/tcp/127.0.0.1/$port; for i in \$(seq 1000); do echo \"line \$i\" >&3; printf 'printf %d\\n' \$i >&3; done; exec 3>&-" \
    2>"$WORK/bash.err" || fail "bash failed: $(cat "$WORK/bash.err")"
wait_for "$reader" 30 || fail "the reader did not end: $(cat "$WORK/bash-server.err")"
for i in $(seq 1000); do echo "line $i"; echo "printf $i"; done >"$WORK/bash-want"
same "$WORK/bash-want" "$WORK/bash-got" "2,000 lines from bash's echo and printf builtins"
says "$WORK/bash.err" "connect fd 3 to .*: shared memory" "bash's connect"
says "$WORK/bash.err" "stdout is the library's stream" "bash's standard output"
# bash's echo around cat, exec'd with the connection through a relay: bash writes again as soon as its wait for
# cat returns, and must come after all of cat's bytes (the wait waits for the relay to have moved them).
random_file "$WORK/blob" $((2 << 20))
base64 -w 100 "$WORK/blob" >"$WORK/text"
port=$(free_port)
start "$VMSOCK_RUN" socat -u TCP-LISTEN:"$port",bind=127.0.0.1,reuseaddr - >"$WORK/order-got" 2>"$WORK/order-server.err"
reader=$LAST
wait_listening 127.0.0.1 "$port"
timeout 60 "$VMSOCK_RUN" bash -c "exec 3<>/dev/tcp/127.0.0.1/$port; for i in 1 2 3 4; do echo \"start \$i\" >&3; cat '$WORK/text' >&3; echo \"end \$i\" >&3; done; exec 3>&-" \
    2>"$WORK/order.err" || fail "bash and cat failed: $(cat "$WORK/order.err")"
wait_for "$reader" 30 || fail "the reader did not end: $(cat "$WORK/order-server.err")"
for i in 1 2 3 4; do echo "start $i"; cat "$WORK/text"; echo "end $i"; done >"$WORK/order-want"
same "$WORK/order-want" "$WORK/order-got" "bash's echo lines around four cats, in order"
if grep -q "^io_uring_setup  *refused" "$WORK/plain.txt"; then
    echo "ok: $(grep -c . "$WORK/plain.txt") observations, the same with and without vmsock-run, plain and fortified;" \
        "io_uring's part not checked: this kernel refuses io_uring_setup"
    exit 0
fi
# The worker's ring: every connection after it (the spawned client's to the listener it inherited, then the
# program's own) is TCP.
grep -qE "this process called io_uring_setup" "$WORK/debug.txt" || fail "no process noticed io_uring: $(cat "$WORK/debug.txt")"
grep -qE "connect fd [0-9]+ to .*: tcp \(this process called io_uring_setup" "$WORK/debug.txt" \
    || fail "the connect after io_uring_setup was not TCP: $(grep -E 'connect|accept|io_uring' "$WORK/debug.txt")"
after=$(sed -n '/called io_uring_setup/,$p' "$WORK/debug.txt" | grep -cE "(connect|accept) fd [0-9]+ .*: shared memory" || true)
[ "$after" -eq 0 ] || fail "$after connections used shared memory after io_uring_setup: $(cat "$WORK/debug.txt")"
echo "ok: $(grep -c . "$WORK/plain.txt") observations, the same with and without vmsock-run, plain and fortified;" \
    "TCP once a worker, then the program, set up io_uring"
