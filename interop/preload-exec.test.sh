# Programs under vmsock-run that exec another with a shared-memory connection, both ends under vmsock-run, data
# checked by sha256: socat's EXEC with nofork runs cat on the accepted socket itself (inetd's way; 16 MiB through
# cat and back), and its SYSTEM with nofork runs it through system(); bash's /dev/tcp with cat reading it;
# Python's subprocess, with and without the connection.
# The exec hands the connection to a relay process (the new image gets a TCP socket that carries the data: the
# rings cannot go across exec), which ends with the connection.
source "$(dirname "$0")/lib.sh"
need socat python3 bash
[ -x "$VMSOCK_RUN" ] || fail "$VMSOCK_RUN is not built (swift build)"
random_file "$WORK/data" $((16 << 20))
# 16 MiB through socat serving ADDRESS (cat on the accepted connection), both ends under vmsock-run; the
# server's debug lines must say WHAT; the relay ends with the connection: nothing is left behind.
through_socat() {  # ADDRESS LABEL WHAT
    local port server
    port=$(free_port)
    start "$VMSOCK_RUN" --debug socat TCP-LISTEN:"$port",bind=127.0.0.1,reuseaddr "$1" 2>"$WORK/server.err"
    server=$LAST
    wait_listening 127.0.0.1 "$port"
    timeout 60 "$VMSOCK_RUN" --debug socat -t 30 - TCP:127.0.0.1:"$port" <"$WORK/data" >"$WORK/got" 2>"$WORK/client.err" \
        || fail "client of $1 failed: $(cat "$WORK/client.err" "$WORK/server.err")"
    same "$WORK/data" "$WORK/got" "16 MiB through cat, $2"
    says "$WORK/client.err" "connect fd [0-9]* to .*: shared memory" "the client's connect"
    says "$WORK/server.err" "accept fd [0-9]* from .*: shared memory" "the server's accept"
    says "$WORK/server.err" "$3" "$1"
    wait_for "$server" 30 || fail "the server ($1) did not end: $(cat "$WORK/server.err")"
    for _ in $(seq 50); do [ -z "$(live_relays)" ] && break; sleep 0.1; done
    [ -z "$(live_relays)" ] || fail "a relay process is left: $(live_relays)"
}
through_socat EXEC:cat,nofork "exec'd on the connection" "goes to the new image as a TCP socket through a relay process"
# SYSTEM with nofork: system() on the accepted socket, as the shell's standard input and output. libc's system
# spawns the shell out of the library's reach; while a connection would be inherited, the library's own runs it
# through the posix_spawn wrapper, which gives the shell a relay.
through_socat SYSTEM:cat,nofork "run by system() on the connection" "system: the shell inherits a shared-memory connection"

# bash's /dev/tcp: bash keeps the connection (fd 3) and reads nothing while cat, exec'd with it as its standard
# input, reads what the server sends. The relay reads for cat once the bytes have waited unread.
port=$(free_port)
start "$VMSOCK_RUN" --debug socat -u FILE:"$WORK/data" TCP-LISTEN:"$port",bind=127.0.0.1,reuseaddr 2>"$WORK/sender.err"
wait_listening 127.0.0.1 "$port"
timeout 60 "$VMSOCK_RUN" --debug bash -c "exec 3<>/dev/tcp/127.0.0.1/$port; cat <&3 >'$WORK/got'" 2>"$WORK/bash.err" \
    || fail "bash and cat failed: $(cat "$WORK/bash.err" "$WORK/sender.err")"
same "$WORK/data" "$WORK/got" "16 MiB read by cat on bash's /dev/tcp connection"
says "$WORK/bash.err" "connect fd 3 to .*: shared memory" "bash's connect"
says "$WORK/bash.err" "goes to the new image as a TCP socket through a relay process" "cat's exec"

# Python's subprocess: vfork, then dup2 and close_range over every other descriptor, then exec. A server that
# runs subprocesses while it holds a shared-memory connection keeps it (the vfork child's closes were once the
# parent's, and ended it), and cat run on the connection itself, the parent keeping its copy, echoes 4 MiB.
PY=interop/programs/preload-python.py
port=$(free_port)
start "$VMSOCK_RUN" --debug python3 "$PY" keep "$port" 2>"$WORK/py-keep.err"
keeper=$LAST
wait_listening 127.0.0.1 "$port"
timeout 30 "$VMSOCK_RUN" --debug python3 "$PY" keep-client "$port" >"$WORK/py-keep.out" 2>"$WORK/py-keep-client.err" \
    || fail "python client failed: $(cat "$WORK/py-keep-client.err" "$WORK/py-keep.err")"
wait_for "$keeper" 30 || fail "python server failed: $(cat "$WORK/py-keep.err")"
says "$WORK/py-keep.out" "three answers after three subprocesses" "python keep"
says "$WORK/py-keep.err" "accept fd [0-9]* from .*: shared memory" "python's accept"
random_file "$WORK/small" $((4 << 20))
port=$(free_port)
start "$VMSOCK_RUN" --debug python3 "$PY" inetd "$port" 2>"$WORK/py-inetd.err"
inetd=$LAST
wait_listening 127.0.0.1 "$port"
timeout 60 "$VMSOCK_RUN" --debug socat -t 30 - TCP:127.0.0.1:"$port" <"$WORK/small" >"$WORK/got" 2>"$WORK/py-client.err" \
    || fail "client of python's cat failed: $(cat "$WORK/py-client.err" "$WORK/py-inetd.err")"
wait_for "$inetd" 30 || fail "python server (cat) failed: $(cat "$WORK/py-inetd.err")"
same "$WORK/small" "$WORK/got" "4 MiB through cat run by python's subprocess on the connection"
says "$WORK/py-inetd.err" "goes to the new image as a TCP socket through a relay process" "python's cat"
for _ in $(seq 50); do [ -z "$(live_relays)" ] && break; sleep 0.1; done
[ -z "$(live_relays)" ] || fail "a relay process is left: $(live_relays)"
echo "ok: programs exec'd on shared-memory connections (socat's cat by exec and by system(), bash's cat, python's subprocess), relays gone"
