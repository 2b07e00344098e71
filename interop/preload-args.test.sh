# vmsock-run's command line: a missing command, an unknown option and a command that does not exist fail with a
# message and a non-zero status; --help succeeds; --debug sets VMSOCK_DEBUG=1 and LD_PRELOAD names the library;
# --stats sets VMSOCK_STATS=1 and counts no failed connect; the command's exit status is passed on.
source "$(dirname "$0")/lib.sh"
[ -x "$VMSOCK_RUN" ] || fail "$VMSOCK_RUN is not built (swift build)"
status=0; "$VMSOCK_RUN" 2>"$WORK/err" || status=$?
[ "$status" = 2 ] || fail "no command: status $status"
says "$WORK/err" "missing COMMAND" "no command"
status=0; "$VMSOCK_RUN" --bogus true 2>"$WORK/err" || status=$?
[ "$status" = 2 ] || fail "unknown option: status $status"
says "$WORK/err" "unknown option --bogus" "unknown option"
status=0; "$VMSOCK_RUN" /nonexistent/command 2>"$WORK/err" || status=$?
[ "$status" = 127 ] || fail "missing program: status $status"
says "$WORK/err" "/nonexistent/command: No such file or directory" "missing program"
"$VMSOCK_RUN" --help >"$WORK/out" || fail "--help failed"
says "$WORK/out" "usage: vmsock-run" "--help"
"$VMSOCK_RUN" --debug sh -c 'echo "$VMSOCK_DEBUG $LD_PRELOAD"' >"$WORK/out"
says "$WORK/out" "^1 .*libvmsock-preload.so" "--debug"
"$VMSOCK_RUN" --stats sh -c 'echo "$VMSOCK_STATS"' >"$WORK/out"
says "$WORK/out" "^1$" "--stats"
# A connect that fails is counted as neither transport: a refused one leaves nothing to print.
"$VMSOCK_RUN" --stats python3 -c 'import socket, sys; print(socket.socket().connect_ex(("127.0.0.1", int(sys.argv[1]))))' \
    "$(free_port)" >"$WORK/out" 2>"$WORK/err"
says "$WORK/out" "^111$" "a refused connect under --stats"
grep -q "connects:" "$WORK/err" && fail "a refused connect was counted: $(cat "$WORK/err")"
status=0; "$VMSOCK_RUN" -- sh -c 'exit 3' || status=$?
[ "$status" = 3 ] || fail "the command's status 3 came back as $status"
echo "ok: vmsock-run's arguments and errors"
