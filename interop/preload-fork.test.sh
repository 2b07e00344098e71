# fork, exec and posix_spawn with shared-memory connections open (programs/preload-fork.c): both processes keep
# working connections, close counts per process, shutdown does not, a child's _exit disturbs nothing, a forked child
# accepts and connects over shared memory, an exec'd image reads and writes the connection through a relay (or,
# where none is made, reads data or end of stream, never wake-up bytes; short of descriptors too), popen's shells
# read and write a connection as over TCP, a socket merely leaked into a spawned child keeps its bytes for the
# parent, a daemon takes its first process's listener over only when no other child shares it, and a listener handed
# to a new image stops its owner's welcomes; descriptors passed in SCM_RIGHTS messages, likewise.
# Run under vmsock-run (shared memory, confirmed by the debug lines) and without it: the output must be the same.
# Then, under vmsock-run only, a fork while another thread is inside the library's set-up: the child uses TCP.
source "$(dirname "$0")/lib.sh"
need nc
# A static build of the same program, which one case spawns: LD_PRELOAD does not reach it.
cc=$(command -v cc || command -v /opt/swift/usr/bin/clang || true)
[ -n "$cc" ] || skip "no C compiler (cc or the Swift toolchain's clang)"
"$cc" -O2 -static -o "$WORK/preload-fork-static" interop/programs/preload-fork.c -lpthread 2>"$WORK/static.err" \
    || fail "cannot build a static program (libc.a, from libc6-dev, which tools/setup.sh installs): $(tail -3 "$WORK/static.err")"
export PRELOAD_FORK_STATIC=$WORK/preload-fork-static
same_under_preload preload-fork ""
count_says "$WORK/debug.txt" 22 "shared memory"
# The accept in the forked child claimed the link its parent's listener thread welcomed.
owner=$(sed -n 's/^vmsock-run\[\([0-9]*\)\]: listen fd .*shared memory offered.*/\1/p' "$WORK/debug.txt" | head -1)
grep -E "accept fd [0-9]+ from .*: shared memory" "$WORK/debug.txt" | grep -vq "^vmsock-run\[$owner\]" \
    || fail "no forked child accepted over shared memory: $(cat "$WORK/debug.txt")"
# A forked child's own connect is shared memory too, as a prefork server's worker reaching its database needs
# (and a grandchild's: the count above has both).
grep -E "connect fd [0-9]+ to .*: shared memory" "$WORK/debug.txt" | grep -vq "^vmsock-run\[$owner\]" \
    || fail "no forked child connected over shared memory: $(cat "$WORK/debug.txt")"
# A daemon (setsid) whose first process listened and exited took the listener over when it was that process's
# only child since the listen, and not when another child shared the listener (the outputs above agree).
[ "$(grep -c "this one takes it over" "$WORK/debug.txt")" -eq 1 ] \
    || fail "expected one take-over (the daemon without a sibling): $(grep -E 'takes it over|daemon' "$WORK/debug.txt")"
grep -q "^daemon: the acceptor read hello, the client got reply" "$WORK/plain.txt" || fail "the daemon case failed"
grep -q "^daemon with a sibling acceptor: the acceptor read hello, the client got reply" "$WORK/plain.txt" \
    || fail "the daemon case with a sibling failed"
# The daemon case again, 10 times: the first process exits right after its fork, and the daemon's fork handler
# may run after that (it took the parent's pid from getppid, then init's, and under load missed the take-over).
timeout 60 "$VMSOCK_RUN" --debug "$WORK/preload-fork" daemon-cases 10 >"$WORK/daemons.txt" 2>"$WORK/daemons-debug.txt" \
    || fail "the repeated daemon case failed: $(cat "$WORK/daemons.txt" "$WORK/daemons-debug.txt")"
[ "$(grep -c "^daemon: the acceptor read hello, the client got reply" "$WORK/daemons.txt")" -eq 10 ] \
    || fail "a repeated daemon case failed: $(cat "$WORK/daemons.txt")"
[ "$(grep -c "this one takes it over" "$WORK/daemons-debug.txt")" -eq 10 ] \
    || fail "a repeated daemon case did not take over: $(grep -E 'over|tcp only here' "$WORK/daemons-debug.txt")"
# exec short of descriptors: the relays could not start (the new images read end of stream), and a new image that
# inherited a full table got an unconnected socket in its place, not the bare one to read wake-up bytes; the
# parents' connections went on (the outputs above agree: a process short of descriptors took its fellow holders
# for gone before).
grep -q "no relay could be made for it: it ends for the new image" "$WORK/debug.txt" \
    || fail "no exec short of descriptors failed to start its relay: $(grep exec "$WORK/debug.txt" | tail -20)"
grep -q "unconnected for this one (no relay was made for it, and no descriptor is left" "$WORK/debug.txt" \
    || fail "the new image with a full table kept the bare socket: $(grep exec "$WORK/debug.txt" | tail -20)"
# A new image that got a registered listening socket (a close-on-exec one copied by a spawn file action) stopped
# its owner's welcomes: the connection it accepted was TCP (its data checked by the outputs above).
grep -q "exec: listening fd [0-9]* goes to the new image, which may accept on it" "$WORK/debug.txt" \
    || fail "handing a listener to a new image did not stop the welcomes: $(tail -20 "$WORK/debug.txt")"
grep -q "^handed-on listener: the new image read  *hello" "$WORK/plain.txt" || fail "the handed-on listener case failed"
# A listener that is not close-on-exec, then popen: the shell is taken not to accept on it (as before popen went
# through the library), so its owner's next connection is still shared memory.
# same_mode MODE: runs `preload-fork MODE` without and with vmsock-run (debug lines in $WORK/MODE-debug.txt); the
# outputs must be the same.
same_mode() {
    timeout 30 "$WORK/preload-fork" "$1" >"$WORK/$1-plain.txt" 2>&1 \
        || fail "$1 without vmsock-run: $(cat "$WORK/$1-plain.txt")"
    timeout 30 "$VMSOCK_RUN" --debug "$WORK/preload-fork" "$1" >"$WORK/$1.txt" 2>"$WORK/$1-debug.txt" \
        || fail "$1 under vmsock-run: $(cat "$WORK/$1.txt" "$WORK/$1-debug.txt")"
    cmp -s "$WORK/$1-plain.txt" "$WORK/$1.txt" || fail "$1 differs under vmsock-run: $(diff "$WORK/$1-plain.txt" "$WORK/$1.txt")"
}
same_mode popen-listener
count_says "$WORK/popen-listener-debug.txt" 2 "shared memory"
! grep -q "offers shared memory on its listeners no more" "$WORK/popen-listener-debug.txt" \
    || fail "popen's shell stopped the listener's welcomes: $(cat "$WORK/popen-listener-debug.txt")"
# A listening socket passed to another process in an SCM_RIGHTS message (haproxy's reload, envoy's hot restart):
# the owner welcomed nobody after it, so the receiver's accept got a TCP connection, and the client's bytes arrived.
same_mode pass-listener
grep -q "olleh" "$WORK/pass-listener.txt" || fail "pass-listener: the client got no answer: $(cat "$WORK/pass-listener.txt")"
grep -q "sendmsg: listening fd [0-9]* goes to another process" "$WORK/pass-listener-debug.txt" \
    || fail "passing a listener did not stop the welcomes: $(cat "$WORK/pass-listener-debug.txt")"
# A daemon whose first process had passed its listener on did not take it over (its new book would have forgotten
# the mark): the receiver's accept was TCP, and the client got its answer.
same_mode daemon-pass
grep -q "tcp only here (a process of its family handed a listener on" "$WORK/daemon-pass-debug.txt" \
    || fail "the daemon took a passed-on listener over: $(cat "$WORK/daemon-pass-debug.txt")"
grep -q "the client got  *olleh" "$WORK/daemon-pass.txt" || fail "daemon-pass: $(cat "$WORK/daemon-pass.txt")"
# A connection passed so (Dovecot's login process handing its client over) went through a relay (the outputs above
# agree: the receiver read the bytes and answered).
grep -q "sendmsg: fd [0-9]*, a shared-memory connection, goes to the receiver as a TCP socket through a relay" \
    "$WORK/debug.txt" || fail "the passed connection got no relay: $(grep sendmsg "$WORK/debug.txt")"
# A forked child's exec handed its connections to relays (exec with the parent keeping its copy, inetd's way, a
# socket leaked into a helper, vfork (fork in a process with connections): 8 descriptors), and so did posix_spawn
# four times (the socket moved to stdin; a close-on-exec socket copied there by the file action; a program
# spawned without LD_PRELOAD; a static program); the new images read and wrote the data (the outputs above
# agree). The relays are gone.
[ "$(grep -c "exec: fd [0-9]*, a shared-memory connection, goes to the new image as a TCP socket through a relay" "$WORK/debug.txt")" -ge 8 ] \
    || fail "the exec'd images did not get relays: $(grep exec "$WORK/debug.txt")"
[ "$(grep -c "exec: fd 0, a shared-memory connection of the previous image, is a TCP socket through a relay process" "$WORK/debug.txt")" -ge 4 ] \
    || fail "the spawned images did not get their relays: $(grep exec "$WORK/debug.txt")"
# A spawn without LD_PRELOAD in its environment, and one of a static program, ran through vmsock-run, which put
# the relay in place (two of the relays above) and ran the program without the library (the outputs above agree).
[ "$(grep -c "will not load vmsock-run's library: it runs through .*/vmsock-run" "$WORK/debug.txt")" -eq 2 ] \
    || fail "the spawns of programs without the library did not run through vmsock-run: $(grep spawn "$WORK/debug.txt")"
# The socket leaked into a spawned child that never reads it got a relay that waited for the parent (its bytes
# stayed for the parent: the outputs above agree); the one whose close-on-exec flag the program cleared did not.
grep -q "not handed over on purpose .*: its relay reads for the new image only once the other holders closed it" \
    "$WORK/debug.txt" || fail "the leaked socket got no waiting relay: $(grep exec "$WORK/debug.txt")"
for _ in $(seq 50); do [ -z "$(live_relays)" ] && break; sleep 0.1; done
[ -z "$(live_relays)" ] || fail "a relay process is left: $(live_relays)"
# Where no relay is made (a raw clone's exec), the new image was told, and its connection ended for it.
grep -q "exec: fd 0 was a shared-memory connection of the previous image: ended" "$WORK/debug.txt" \
    || fail "the raw clone's new image did not end its inherited connection: $(grep exec "$WORK/debug.txt")"
# A fork while another thread is inside the library's set-up (its connect waits for the welcome of a listener
# that is stopped): the child's copy may be half made, so its connect uses TCP, says why, and works.
stopped=$(free_port)
start "$VMSOCK_RUN" --debug nc -l 127.0.0.1 "$stopped" 2>"$WORK/stopped.err"
for _ in $(seq 100); do grep -q "shared memory offered" "$WORK/stopped.err" && break; sleep 0.1; done
grep -q "shared memory offered" "$WORK/stopped.err" || fail "nc under vmsock-run did not register: $(cat "$WORK/stopped.err")"
kill -STOP "$LAST"
timeout 30 "$VMSOCK_RUN" --debug "$WORK/preload-fork" torn-fork "$stopped" >"$WORK/torn.txt" 2>"$WORK/torn-debug.txt" \
    || fail "torn fork: $(cat "$WORK/torn.txt" "$WORK/torn-debug.txt")"
grep -q "tcp (this process was forked while another thread of its parent set up a connection" "$WORK/torn-debug.txt" \
    || fail "the child of a torn fork did not say it uses TCP: $(cat "$WORK/torn-debug.txt")"
{ kill -9 "$LAST" && wait "$LAST"; } 2>/dev/null || true
cat "$WORK/torn.txt"
echo "ok: $(grep -c . "$WORK/plain.txt") observations, the same with and without vmsock-run"
