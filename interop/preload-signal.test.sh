# Signal handlers that run while an interposed wait spins on the rings (issue 19): a C program
# (programs/preload-signal.c) takes SIGALRM 250 ms into poll, epoll_wait, select and recv on an idle connection,
# with a handler without and with SA_RESTART; then recv with SO_RCVTIMEO, a handler that runs on another thread
# (it must not end this thread's poll), sysv_signal's one-shot handler, sigset (System V: its handler, SIG_HOLD) and
# sigignore, and what sigaction and siginterrupt report. Under vmsock-run the spin budget is
# 2 s (VMSOCK_SPIN_US), so each signal lands in the spin; the output must equal the run without vmsock-run
# (EINTR, or a restarted recv). Without the trampoline the waits slept in the kernel after the spin, for ever.
source "$(dirname "$0")/lib.sh"
same_under_preload preload-signal "" VMSOCK_SPIN_US=2000000
count_says "$WORK/debug.txt" 1 "shared memory"
cat "$WORK/plain.txt"
echo "ok: $(grep -c . "$WORK/plain.txt") observations, the same with and without vmsock-run"
