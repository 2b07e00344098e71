// The interposed waits: poll, ppoll, select, pselect and epoll. They answer for a shared-memory connection from
// its rings, without a system call, and arm it (ask its writer for a wake-up byte) only when they are about to
// sleep. So a connection whose reader keeps up costs no system call per write on either side, and an idle one
// costs one arm, then nothing until its writer rings.
//
// The kernel still does the sleeping: the connection's TCP socket (where wake-up bytes and FIN arrive) and, for a
// writer waiting for room, its space doorbell, are in the kernel's set. Their kernel readiness is only a wake-up:
// a wake-up byte may be stale (its data already read), so what is reported comes from the rings, plus the
// kernel's hang-up and error bits, which are final.
#include "preload.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <time.h>
#include <unistd.h>

// A call's reference on fd's connection when it is ours and this is not the library's own call.
static struct vmsp_ref *ours(int fd) {
    if (vmsp_inside || !vmsp_lookup(fd)) return NULL;
    return vmsp_enter(fd);
}

// MARK: poll, ppoll, select, pselect

// What poll would report for a connection asked for `events`: from its rings, plus the kernel's final bits.
static short conn_revents(struct vmsp_conn *c, short events, short kernel) {
    short got = 0;
    int ended = (kernel & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
    if ((events & POLLIN) && (vmsp_rx_ready(c) || ended)) got |= POLLIN;
    // A reader that died leaves its ring full: once the kernel says the connection ended, ask whether it did.
    if ((events & POLLOUT) && (vmsp_tx_ready(c) || (ended && vmsp_peer_gone(c)))) got |= POLLOUT;
    if (events & POLLRDHUP) got |= kernel & POLLRDHUP;
    return got | (kernel & (POLLHUP | POLLERR));
}

// The kernel's copy of a poll set, with two slots per connection waiting for room (its space doorbell, and its
// control socket, whose hang-up says the reader's process is gone). Kept per thread and grown as needed: a poll
// allocates only when it is bigger than every earlier one of its thread.
static __thread struct pollfd *scratch;
static __thread nfds_t *scratch_owners;  // for each doorbell slot, the index of its connection
static __thread size_t scratch_capacity;

static struct pollfd *scratch_for(size_t count) {
    if (count <= scratch_capacity) return scratch;
    struct pollfd *grown = realloc(scratch, 3 * count * sizeof *grown);
    if (!grown) return NULL;
    scratch = grown;
    nfds_t *owners = realloc(scratch_owners, 2 * count * sizeof *owners);
    if (!owners) return NULL;
    scratch_owners = owners;
    scratch_capacity = count;
    return grown;
}

// After a sleep (or instead of one): the arms of this poll come off.
static void disarm(struct pollfd *fds, nfds_t n, struct vmsp_conn **conns, const nfds_t *owners, nfds_t bells) {
    for (nfds_t i = 0; i < n; i++) {
        if (conns[i] && (fds[i].events & POLLIN)) vmsp_rx_disarm(conns[i], 0);
    }
    for (nfds_t j = 0; j < bells; j += 2) vmsp_tx_disarm(conns[owners[j]]);
}

// While connections are ready from their rings, the kernel is asked about the other descriptors at most this
// often: a poll that rings keep busy then costs no system call, and the others wait at most 50 µs longer.
enum { KERNEL_EVERY_NS = 50000 };
static __thread int64_t last_kernel_ns;
static __thread struct vmsp_spin poll_spin;  // this thread's poll and select (spin.c)

// The spin peeks at the set's other descriptors (a pipe, a TCP socket, a listening socket) when it starts and every
// SPIN_PEEK_NS, as epoll.c's does at the kernel's set: one of them ready ends the spin, and the kernel is asked
// about everything without waiting. Without the peek they waited for the whole budget (50 µs, learnt up to 200).
// epoll's peek is one descriptor; this one is all the others, so a peek that takes long (a select of hundreds)
// spaces the next ones out to four times as long, and the spin still looks at the rings most of the time.
enum { SPIN_PEEK_NS = 5000 };

// The descriptors that are not connections (and not -1: poll ignores those), into `peek`; how many.
static nfds_t other_descriptors(const struct pollfd *fds, nfds_t n, struct vmsp_conn **conns, struct pollfd *peek) {
    nfds_t m = 0;
    for (nfds_t i = 0; i < n; i++) {
        if (!conns[i] && fds[i].fd >= 0) peek[m++] = (struct pollfd){ .fd = fds[i].fd, .events = fds[i].events };
    }
    return m;
}

// One poll over a set holding connections. `conns[i]` is fds[i]'s connection or NULL.
static int poll_with_rings(struct pollfd *fds, nfds_t n, struct vmsp_conn **conns, int64_t deadline,
                           const sigset_t *mask, struct vmsp_signal_mark mark) {
    struct pollfd *kernel = scratch_for(n);
    if (!kernel) { errno = ENOMEM; return -1; }
    nfds_t *owners = scratch_owners;
    int others = 0;  // descriptors that are not connections: the kernel must be asked even when one is ready
    for (nfds_t i = 0; i < n; i++) others += !conns[i];
    int peeks = others > 0;  // a peek that led to nothing reported is not made again in this call
    for (;;) {
        // Ready from the rings: then the rest is asked without waiting.
        int ready = 0;
        for (nfds_t i = 0; i < n; i++) {
            if (!conns[i]) continue;
            fds[i].revents = conn_revents(conns[i], fds[i].events, 0);
            if (fds[i].revents) ready++;
        }
        // Nothing yet: look at the rings for the spin budget (a reply often comes sooner than a sleep would end),
        // peeking at the other descriptors. One of them ready: the kernel is asked below without waiting.
        int kernel_ready = 0;
        if (ready == 0 && others < (int)n) {
            int64_t now_ns = vmsp_now_ns(), until = now_ns + vmsp_spin_budget(&poll_spin);
            int64_t gap = SPIN_PEEK_NS, peeked = now_ns - gap;
            if (deadline >= 0 && deadline < until) until = deadline;
            // The other descriptors, listed once per spin into `kernel` (rebuilt whole before the real poll).
            nfds_t peekable = peeks && now_ns < until ? other_descriptors(fds, n, conns, kernel) : 0;
            while (ready == 0 && now_ns < until) {  // (VMSOCK_SPIN_US=0: no spin, and no peek either)
                if (peekable > 0 && now_ns - peeked >= gap) {
                    peeked = now_ns;
                    if (REAL(poll)(kernel, peekable, 0) > 0) { kernel_ready = 1; break; }
                    int64_t took = vmsp_now_ns() - peeked;
                    if (4 * took > gap) gap = 4 * took;
                }
                for (nfds_t i = 0; i < n; i++) {
                    if (!conns[i]) continue;
                    fds[i].revents = conn_revents(conns[i], fds[i].events, 0);
                    if (fds[i].revents) ready++;
                }
                now_ns = vmsp_now_ns();  // every turn, as epoll.c's spin
                if (vmsp_signalled(mark, 1)) break;
                vmsp_relax();
            }
        }
        int sleeping = ready == 0 && !kernel_ready;
        // A handler ran while we spun: the kernel would have ended the wait with EINTR (signals.c).
        if (ready == 0 && vmsp_signalled(mark, 1)) { errno = EINTR; return -1; }
        // Still nothing: arm every connection, then look once more (a publish may have come before the arm).
        nfds_t bells = 0;
        int armed = 0;
        if (sleeping) {
            int now = 0;
            armed = 1;
            for (nfds_t i = 0; i < n; i++) {
                struct vmsp_conn *c = conns[i];
                if (!c) continue;
                int tcp_only = 0;
                if (fds[i].events & POLLIN) now |= vmsp_rx_arm(c, fds[i].fd, &tcp_only);
                if (!(fds[i].events & POLLOUT)) continue;
                if (vmsp_tx_arm(c)) { now = 1; continue; }
                owners[bells] = i;
                kernel[n + bells++] = (struct pollfd){ .fd = c->space_bell_fd, .events = POLLIN };
                // A reader that dies leaves its ring full; its TCP socket may say only FIN, as a half-close does.
                owners[bells] = i;
                kernel[n + bells++] = (struct pollfd){ .fd = c->control_fd, .events = POLLIN };
            }
            if (now) {  // ready after all: report it from the rings, on the next turn
                disarm(fds, n, conns, owners, bells);
                continue;
            }
        }
        // All from the rings: no system call, unless the other descriptors have not been asked for a while.
        if (ready > 0 && (others == 0 || vmsp_now_ns() - last_kernel_ns < KERNEL_EVERY_NS)) {
            for (nfds_t i = 0; i < n; i++) {
                if (!conns[i]) fds[i].revents = 0;
            }
            return ready;
        }
        last_kernel_ns = vmsp_now_ns();
        for (nfds_t i = 0; i < n; i++) {
            kernel[i] = fds[i];
            // RDHUP only where it is asked about: a peer's half-close stays reported, and a wait for room alone
            // would return at once for ever (the control socket's slot says when the peer is gone).
            if (conns[i]) kernel[i].events = (fds[i].events & POLLIN) ? POLLIN | POLLRDHUP : (fds[i].events & POLLRDHUP);
        }
        struct timespec zero = { 0, 0 }, left;
        const struct timespec *timeout = &zero;
        if (sleeping && deadline >= 0) {
            int64_t ns = deadline - vmsp_now_ns();
            if (ns < 0) ns = 0;
            left = (struct timespec){ ns / 1000000000, ns % 1000000000 };
            timeout = &left;
        } else if (sleeping) {
            timeout = NULL;
        }
        // Armed for room: look at the rings again at least every VMSP_SPACE_RECHECK_MS (a wake-up for room can be
        // lost to another waiter on the same connection).
        struct timespec recheck = { 0, (long)VMSP_SPACE_RECHECK_MS * 1000000 };
        if (bells > 0 && (timeout == NULL || timeout->tv_sec > 0 || timeout->tv_nsec > recheck.tv_nsec)) timeout = &recheck;
        if (ready == 0 && vmsp_signalled(mark, 1)) {
            if (armed) disarm(fds, n, conns, owners, bells);
            errno = EINTR;
            return -1;
        }
        int64_t slept_from = sleeping ? vmsp_now_ns() : 0;
        int woke = REAL(ppoll)(kernel, n + bells, timeout, mask);
        int saved = errno;
        int64_t slept = sleeping ? vmsp_now_ns() - slept_from : 0;
        for (nfds_t j = 1; woke > 0 && j < bells; j += 2) {
            if (kernel[n + j].revents) vmsp_control_woke(conns[owners[j]]);
        }
        if (armed) disarm(fds, n, conns, owners, bells);
        if (woke < 0) { errno = saved; return -1; }
        int count = 0, from_rings = 0;
        for (nfds_t i = 0; i < n; i++) {
            fds[i].revents = conns[i] ? conn_revents(conns[i], fds[i].events, kernel[i].revents) : kernel[i].revents;
            if (fds[i].revents) count++;
            if (fds[i].revents && conns[i]) from_rings++;
        }
        // What the sleep teaches the spin (a poll teaches nothing): only the connections could have become ready
        // during a spin; the other descriptors end a spin by its peek, so a longer one would not see them sooner.
        int polled = timeout && timeout->tv_sec == 0 && timeout->tv_nsec == 0;
        if (sleeping && !polled && (count > 0 || woke == 0)) vmsp_spin_slept(&poll_spin, slept, from_rings > 0);
        // Nothing but a stale wake-up byte or a bell: wait again for what is left of the timeout.
        if (count > 0 || (deadline >= 0 && vmsp_now_ns() >= deadline)) return count;
        if (kernel_ready) peeks = 0;
    }
}

// poll and ppoll: straight to libc unless a descriptor in the set is a connection.
static int poll_common(struct pollfd *fds, nfds_t n, int64_t deadline, const struct timespec *timeout,
                       const sigset_t *mask) {
    struct vmsp_signal_mark mark = vmsp_signal_mark();
    nfds_t found = 0;
    if (!vmsp_inside) {
        for (nfds_t i = 0; i < n; i++) {
            if (fds[i].fd >= 0 && vmsp_lookup(fds[i].fd)) { found = 1; break; }
        }
    }
    if (!found) return REAL(ppoll)(fds, n, timeout, mask);
    // The calls' references (refs) and the connections they hold (conns), in one allocation when large.
    struct vmsp_conn *small[64];
    struct vmsp_ref *small_refs[64];
    struct vmsp_conn **conns = n <= 64 ? small : calloc(2 * n, sizeof *conns);
    if (!conns) { errno = ENOMEM; return -1; }
    struct vmsp_ref **refs = n <= 64 ? small_refs : (struct vmsp_ref **)(conns + n);
    for (nfds_t i = 0; i < n; i++) {
        refs[i] = fds[i].fd >= 0 ? ours(fds[i].fd) : NULL;
        conns[i] = refs[i] ? refs[i]->conn : NULL;
    }
    int result = poll_with_rings(fds, n, conns, deadline, mask, mark);
    int saved = errno;
    for (nfds_t i = 0; i < n; i++) {
        if (refs[i]) vmsp_leave(refs[i]);
    }
    if (conns != small) free(conns);
    errno = saved;
    return result;
}

int poll(struct pollfd *fds, nfds_t n, int timeout) {
    struct timespec t = { timeout / 1000, (timeout % 1000) * 1000000 };
    return poll_common(fds, n, vmsp_deadline_after_ms(timeout), timeout < 0 ? NULL : &t, NULL);
}

int __poll_chk(struct pollfd *fds, nfds_t n, int timeout, size_t length) {
    if (length / sizeof *fds < n) abort();
    return poll(fds, n, timeout);
}

int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *timeout, const sigset_t *mask) {
    return poll_common(fds, n, vmsp_deadline_after(timeout), timeout, mask);
}

int __ppoll_chk(struct pollfd *fds, nfds_t n, const struct timespec *timeout, const sigset_t *mask, size_t length) {
    if (length / sizeof *fds < n) abort();
    return ppoll(fds, n, timeout, mask);
}

// select and pselect: through poll_common when a connection is in a set (as a poll set), else straight to libc.
static int select_common(int nfds, fd_set *readers, fd_set *writers, fd_set *errors, int64_t deadline,
                         const sigset_t *mask, int *handled) {
    *handled = 0;
    if (vmsp_inside || nfds <= 0) return 0;
    if (nfds > FD_SETSIZE) nfds = FD_SETSIZE;
    int found = 0;
    for (int fd = 0; fd < nfds && !found; fd++) {
        if (((readers && FD_ISSET(fd, readers)) || (writers && FD_ISSET(fd, writers))) && vmsp_lookup(fd)) found = 1;
    }
    if (!found) return 0;
    *handled = 1;
    struct pollfd fds[FD_SETSIZE];
    nfds_t n = 0;
    for (int fd = 0; fd < nfds; fd++) {
        short events = 0;
        if (readers && FD_ISSET(fd, readers)) events |= POLLIN;
        if (writers && FD_ISSET(fd, writers)) events |= POLLOUT;
        if (errors && FD_ISSET(fd, errors)) events |= POLLPRI;
        if (events) fds[n++] = (struct pollfd){ .fd = fd, .events = events };
    }
    struct timespec left, *timeout = NULL;
    if (deadline >= 0) {
        int64_t ns = deadline - vmsp_now_ns();
        if (ns < 0) ns = 0;
        left = (struct timespec){ ns / 1000000000, ns % 1000000000 };
        timeout = &left;
    }
    int result = poll_common(fds, n, deadline, timeout, mask);
    if (result < 0) return -1;
    for (nfds_t i = 0; i < n; i++) {
        if (fds[i].revents & POLLNVAL) { errno = EBADF; return -1; }
    }
    if (readers) FD_ZERO(readers);
    if (writers) FD_ZERO(writers);
    if (errors) FD_ZERO(errors);
    int count = 0;
    for (nfds_t i = 0; i < n; i++) {
        short got = fds[i].revents;
        // As select: a hang-up or an error makes a descriptor readable and writable (the call then says why).
        if (readers && (fds[i].events & POLLIN) && (got & (POLLIN | POLLHUP | POLLERR))) { FD_SET(fds[i].fd, readers); count++; }
        if (writers && (fds[i].events & POLLOUT) && (got & (POLLOUT | POLLERR))) { FD_SET(fds[i].fd, writers); count++; }
        if (errors && (fds[i].events & POLLPRI) && (got & POLLPRI)) { FD_SET(fds[i].fd, errors); count++; }
    }
    return count;
}

int select(int nfds, fd_set *readers, fd_set *writers, fd_set *errors, struct timeval *timeout) {
    int64_t deadline = timeout ? vmsp_now_ns() + (int64_t)timeout->tv_sec * 1000000000 + (int64_t)timeout->tv_usec * 1000 : -1;
    int handled;
    int result = select_common(nfds, readers, writers, errors, deadline, NULL, &handled);
    if (!handled) return REAL(select)(nfds, readers, writers, errors, timeout);
    if (timeout) {  // as Linux: the time not slept
        int64_t left = deadline - vmsp_now_ns();
        if (left < 0) left = 0;
        *timeout = (struct timeval){ left / 1000000000, (left % 1000000000) / 1000 };
    }
    return result;
}

int pselect(int nfds, fd_set *readers, fd_set *writers, fd_set *errors, const struct timespec *timeout,
            const sigset_t *mask) {
    int handled;
    int result = select_common(nfds, readers, writers, errors, vmsp_deadline_after(timeout), mask, &handled);
    if (!handled) return REAL(pselect)(nfds, readers, writers, errors, timeout, mask);
    return result;
}
