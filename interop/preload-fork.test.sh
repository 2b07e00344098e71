# fork, exec and posix_spawn with shared-memory connections open (programs/preload-fork.c): both processes
# keep working connections, close counts per process, shutdown does not, a child's _exit disturbs nothing, a
# forked child accepts and connects over shared memory, an exec'd image reads data or end of stream, never wake-up bytes.
# Run under vmsock-run (shared memory, confirmed by the debug lines) and without it: the output must be the same.
source "$(dirname "$0")/lib.sh"
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
# The exec'd images (exec, vfork + execve, posix_spawn with the socket moved to stdin) were told.
[ "$(grep -c "exec: fd [0-9]* was a shared-memory connection of the previous image: ended" "$WORK/debug.txt")" -ge 3 ] \
    || fail "the exec'd images did not end their inherited connections: $(cat "$WORK/debug.txt")"
echo "ok: $(grep -c . "$WORK/plain.txt") observations, the same with and without vmsock-run"
