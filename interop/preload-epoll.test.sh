# The waits vmsock-run answers from the rings (issue 19): a C program (programs/preload-epoll.c) checks epoll
# (level, EPOLLET, EPOLLONESHOT, EPOLLRDHUP, EPOLLOUT, sets mixing connections with a pipe, an eventfd and a
# timerfd, a set inside a set, a connection added while another thread sleeps in the set, a socket added to two
# sets before it connects, as nginx adds its upstream, a registration deleted and added again at every turn, a
# set and a blocking read asleep on one connection, a registration left by a close whose number and memory a new
# connection takes ten seconds on, closes racing waits in other threads, forks while a thread waits), poll and
# select, and moves 16 MiB twice through
# non-blocking writers that wait for EPOLLOUT or POLLOUT. Run under vmsock-run (its
# connections over shared memory, confirmed by the debug lines) and without it, the output must be the same.
source "$(dirname "$0")/lib.sh"
same_under_preload preload-epoll ""
grep -q 'CORRUPT' "$WORK/plain.txt" && fail "a transfer was corrupted"
count_says "$WORK/debug.txt" 22 "shared memory"
# A registration left by a close (as haproxy closes) must not pass for a new connection that took its number
# and, once the old one's memory was freed ten seconds on, its address: the case runs on its own (11 s).
PRELOAD_EPOLL_CASE=reused same_under_preload preload-epoll ""
grep -q "the number given again *yes" "$WORK/plain.txt" || fail "the case did not reuse the number: $(cat "$WORK/plain.txt")"
count_says "$WORK/debug.txt" 6 "shared memory"
# Threads that close registered connections while others wait in the set (the waits must not read rings a close
# unmapped), and forks while a thread waits (each child must end: none may inherit a set's lock held).
PRELOAD_EPOLL_CASE=closers same_under_preload preload-epoll "" VMSOCK_SHORT_TCP=0
count_says "$WORK/debug.txt" 100 "shared memory"
PRELOAD_EPOLL_CASE=fork same_under_preload preload-epoll ""
grep -q "children that ended *20 of 20" "$WORK/preloaded.txt" || fail "a forked child hung: $(cat "$WORK/preloaded.txt")"
count_says "$WORK/debug.txt" 1 "shared memory"
# Again with every wait asleep at once (no spinning): wake-ups on the data doorbell and on the TCP socket, and
# the sets that drain the doorbell, on every turn.
same_under_preload preload-epoll "" VMSOCK_SPIN_US=0
count_says "$WORK/debug.txt" 22 "shared memory"
# The data doorbell (an epoll set the only sleeper) was the way taken, not only a way that exists. (The TCP socket's
# wake-ups are counted too; the cases that need them rest on short windows, so only the doorbell is required.)
sent() { sed -n "s/.*wake-ups sent: \([0-9]*\) on data doorbells, \([0-9]*\) on TCP sockets/\\$1/p" "$WORK/debug.txt" | awk '{s += $1} END {print s + 0}'; }
[ "$(sent 1)" -gt 0 ] || fail "no wake-up went through a data doorbell: $(grep 'wake-ups sent' "$WORK/debug.txt")"
echo "ok: $(grep -c . "$WORK/plain.txt") observations, the same with and without vmsock-run, spinning and not; wake-ups without spinning: $(sent 1) on data doorbells, $(sent 2) on TCP sockets"
