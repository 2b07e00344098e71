// The data path of a shared-memory connection under vmsock-run: the rings carry the bytes, the application's own
// TCP socket carries only wake-up bytes, so that poll, select and epoll on it tell the truth without being
// interposed.
//
// Words this file uses in each side's region (offsets in RingLayout.swift; each on its own cache lines):
//
//   128  producer position   (ours: stored after copying in; the peer's: read, checked against a window)
//   256  consumer position   (ours: stored after copying out)
//   384  arm word            the reader's, 64 bits: a generation bumped each time it finds the ring empty and
//                            wants a wake-up, and how many waits sleep (how many of them on the data doorbell)
//   512  waiting for space   the writer's: a 32-bit flag, set while it sleeps on its space doorbell
//
// These two words are this data path's own: both ends of a vmsock-run link run this file, never the library's
// engine, whose words at 384 and 512 are 64-bit announcement counters rung for once each (WaitWord.swift).
//   640  shutdown bits       1 write shut, 2 read shut, 4 closed
//   768  bell word           the writer's: (generation rung << 32) | wake-up bytes sent, stored before each send
//
// The readiness rule, which poll on the TCP socket then reports exactly: a wake-up byte is in the socket (or on
// its way) whenever the ring has data. The writer sends at most one byte per reader generation: after
// publishing (a sequentially consistent store), it reads the reader's generation and, if it has not rung for
// that one, stores the bell word and sends a byte. The reader drains bytes only when it has found the ring empty
// *after* arming a new generation (store, full fence, re-check: Dekker's order against the writer's publish then
// read), and then only the bytes the bell word says were rung for older generations. A byte for the current
// generation means data published after the arm, so it stays and keeps the socket readable. If the re-check
// after arming finds data, nothing is drained: the byte that announced it is still there.
//
// When the one wait sleeping on the connection is an epoll set that has the connection's data doorbell (a Unix
// socketpair of the link) in its kernel set, the writer rings that instead: a byte on a Unix socket costs about a
// third of a loopback TCP byte, sending and draining (1.8 against 5.1 µs here), and leaves the TCP socket alone.
// Only a wait that arms while nobody else sleeps on the connection may ask for the doorbell, and only it drains
// it: another set that holds the doorbell (the connection deleted from it, or in two sets) could otherwise drain
// a ring before the kernel reports it to the sleeper, which would sleep on. If the doorbell is full, the writer
// sends the TCP byte after all.
#include "preload.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

enum { OFF_PRODUCER = 128, OFF_CONSUMER = 256, OFF_ARM = 384, OFF_WAIT_SPACE = 512, OFF_SHUTDOWN = 640,
       OFF_BELL = 768, DATA = 4096 };
enum { SHUT_WRITE_BIT = 1, SHUT_READ_BIT = 2, CLOSED_BIT = 4 };

static inline uint64_t load_u64(const uint8_t *base, int offset) {
    return __atomic_load_n((const uint64_t *)(base + offset), __ATOMIC_ACQUIRE);
}
static inline uint32_t load_u32(const uint8_t *base, int offset) {
    return __atomic_load_n((const uint32_t *)(base + offset), __ATOMIC_SEQ_CST);
}
static inline void store_u64(uint8_t *base, int offset, uint64_t value) {
    __atomic_store_n((uint64_t *)(base + offset), value, __ATOMIC_SEQ_CST);
}
static inline void store_u32(uint8_t *base, int offset, uint32_t value) {
    __atomic_store_n((uint32_t *)(base + offset), value, __ATOMIC_SEQ_CST);
}

// How long this thread's blocking reads look at the ring before they sleep (spin.c).
static __thread struct vmsp_spin recv_spin;

// SO_RCVTIMEO / SO_SNDTIMEO in milliseconds, -1 for none: read only on the way to sleep.
static int socket_timeout_ms(int fd, int option) {
    struct timeval tv;
    socklen_t length = sizeof tv;
    if (getsockopt(fd, SOL_SOCKET, option, &tv, &length) != 0 || (tv.tv_sec == 0 && tv.tv_usec == 0)) return -1;
    long long ms = (long long)tv.tv_sec * 1000 + (tv.tv_usec + 999) / 1000;
    return ms > 0x7fffffff ? 0x7fffffff : (int)ms;
}

// Whether a wait interrupted by a signal should go on, as the kernel restarts a socket call: only when every
// handler this process installed has SA_RESTART (we cannot tell which signal came; a program with a handler
// without it must expect EINTR anyway). Handlers of faults are left out (those signals never interrupt a call), and
// of SIGQUIT: the Swift runtime's backtracer installs all of them, without SA_RESTART, unless SWIFT_BACKTRACE says
// otherwise (vmsock-run turns it off). Asked only after EINTR.
static int restarts_after_signal(void) {
    for (int sig = 1; sig < NSIG; sig++) {
        if (vmsp_is_fault_signal(sig) || sig == SIGABRT || sig == SIGQUIT) continue;
        struct sigaction action;
        if (sigaction(sig, NULL, &action) != 0) continue;
        if (action.sa_handler == SIG_DFL || action.sa_handler == SIG_IGN) continue;
        if (!(action.sa_flags & SA_RESTART)) return 0;
    }
    return 1;
}

// Whether a wait a signal handler interrupted ends with EINTR, as the kernel's socket call would: when a handler
// without SA_RESTART ran on this thread since `mark` (signals.c), or the socket has a timeout for this direction
// (signal(7): such a call is never restarted). When no handler the library saw ran (one set with the raw system
// call), every handler's flags decide, as above. A caller that goes on takes a new mark.
static int interrupted_since(struct vmsp_signal_mark mark, int fd, int timeout_option) {
    if (vmsp_signalled(mark, 0)) return 1;
    if (!vmsp_signalled(mark, 1) && !restarts_after_signal()) return 1;
    return socket_timeout_ms(fd, timeout_option) >= 0;
}

// A connector's TCP connection may still be in progress (a non-blocking connect): TCP does not take data then,
// and a wake-up byte sent now would be lost. Waits for it as a TCP write would (EAGAIN when non-blocking), once.
static int tcp_established(struct vmsp_conn *c, int fd, int dontwait) {
    if (__builtin_expect(atomic_load_explicit(&c->tcp_ready, memory_order_relaxed), 1)) return 0;
    for (;;) {
        struct pollfd p = { .fd = fd, .events = POLLOUT };
        int ready = REAL(poll)(&p, 1, dontwait ? 0 : -1);
        if (ready < 0 && errno == EINTR) { if (restarts_after_signal()) continue; return -1; }
        if (ready == 0) { errno = EAGAIN; return -1; }
        if (ready < 0) return -1;
        int error = 0;
        socklen_t length = sizeof error;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) == 0 && error != 0) { errno = error; return -1; }
        if (p.revents & POLLOUT) { atomic_store(&c->tcp_ready, 1); return 0; }
        errno = EPIPE;
        return -1;
    }
}

// MARK: Reader

// Reads the peer's producer position once, checks it stays in [last seen, consumed + capacity], and returns the
// readable bytes; -1 (the connection broken with EPROTO) when the peer broke the rule.
static int64_t rx_refresh(struct vmsp_conn *c) {
    uint64_t seen = load_u64(c->peer, OFF_PRODUCER);
    uint64_t limit = c->rx_pos + c->rx_cap;  // wraps after 2^64 bytes, as the positions do
    if (seen - c->rx_seen > limit - c->rx_seen) {
        atomic_store(&c->broken, EPROTO);
        return -1;
    }
    c->rx_seen = seen;
    return (int64_t)(seen - c->rx_pos);
}

static void ring_peer_space(struct vmsp_conn *c) {
    if (load_u32(c->peer, OFF_WAIT_SPACE)) {
        char byte = 0;
        (void)REAL(send)(c->peer_space_bell_fd, &byte, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
    }
}

// Receives exactly `count` stale wake-up bytes (they are in the socket, or about to be: the writer stores the
// bell word just before its send). Gives up after 100 ms, keeping the rest as a debt for next time.
static void drain_stale(struct vmsp_conn *c, int fd, uint32_t count) {
    char sink[256];
    int64_t deadline = 0;
    while (count > 0) {
        ssize_t n = REAL(recv)(fd, sink, count < sizeof sink ? count : sizeof sink, MSG_DONTWAIT);
        if (n > 0) { c->drained += (uint32_t)n; count -= (uint32_t)n; continue; }
        if (n == 0) { c->eof = 1; return; }
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) { c->eof = 1; c->eof_error = errno; return; }
        if (deadline == 0) deadline = vmsp_now_ns() + 100000000;
        if (vmsp_now_ns() > deadline) return;
        struct pollfd p = { .fd = fd, .events = POLLIN };
        (void)REAL(poll)(&p, 1, 1);
    }
}

// The arm word: a generation (bits 0-31), whether the one sleeping wait listens on the data doorbell (bit 32),
// and how many waits sleep on it (bits 40-47). A writer rings only while a wait sleeps, once per generation;
// each wait arms before it sleeps (a new generation, one more sleeper) and disarms when it wakes, so that writes
// to a reader that is awake cost no system call. A wait gets the doorbell only if it is the first sleeper; the
// writer rings it only while that wait is the only one, and sends the TCP byte, which wakes every kind of wait,
// whenever another sleeps too.
#define GEN_MASK 0xffffffffull
enum { BELL_SHIFT = 32, SLEEPERS_SHIFT = 40 };
static inline uint64_t arm_bell(uint64_t word) { return (word >> BELL_SHIFT) & 1; }
static inline uint64_t arm_sleepers(uint64_t word) { return (word >> SLEEPERS_SHIFT) & 0xff; }

// `*bell` asks for the doorbell, and says whether this arm got it.
static void arm_word(struct vmsp_conn *c, int *bell) {
    vmsp_note_reader(&c->reader_pid);
    uint64_t *word = (uint64_t *)(c->local + OFF_ARM);
    uint64_t old = __atomic_load_n(word, __ATOMIC_RELAXED), new;
    int got;
    do {
        uint64_t sleepers = arm_sleepers(old);
        got = *bell && sleepers == 0;
        new = ((sleepers < 255 ? sleepers + 1 : 255) << SLEEPERS_SHIFT) | (old & (1ull << BELL_SHIFT)) |
              ((uint64_t)got << BELL_SHIFT) | (((old & GEN_MASK) + 1) & GEN_MASK);
    } while (!__atomic_compare_exchange_n(word, &old, new, 1, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
    *bell = got;
    c->gen = (uint32_t)(new & GEN_MASK);
}

// A wait that armed woke up: one sleeper less, and the doorbell's bit cleared if it had it (the generation stays,
// so a byte already rung is accounted).
void vmsp_rx_disarm(struct vmsp_conn *c, int bell) {
    uint64_t *word = (uint64_t *)(c->local + OFF_ARM);
    uint64_t old = __atomic_load_n(word, __ATOMIC_RELAXED), new;
    do {
        uint64_t sleepers = arm_sleepers(old);
        if (sleepers == 0) return;
        new = ((sleepers - 1) << SLEEPERS_SHIFT) | (bell ? 0 : old & (1ull << BELL_SHIFT)) | (old & GEN_MASK);
    } while (!__atomic_compare_exchange_n(word, &old, new, 1, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
}

// The ring was found empty: arm a new generation and re-check. Returns >0 when data is there after all, 0 when
// the ring is empty and armed (no stale byte left in the socket), -1 when the peer broke the ring.
static int64_t rx_settle(struct vmsp_conn *c, int fd, int *on_data_bell) {
    arm_word(c, on_data_bell);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);  // the store above before the re-check below (Dekker)
    int64_t avail = rx_refresh(c);
    if (avail != 0) return avail;
    uint64_t bell = __atomic_load_n((const uint64_t *)(c->peer + OFF_BELL), __ATOMIC_SEQ_CST);
    uint32_t rung_for = (uint32_t)(bell >> 32), sent = (uint32_t)bell;
    uint32_t stale = sent - c->drained - (rung_for == c->gen && sent != c->drained ? 1 : 0);
    // A peer claiming more than a ring's worth of bytes in flight is lying; never wait for them.
    if (stale > 0 && stale < (1u << 20) && !c->eof) drain_stale(c, fd, stale);
    return rx_refresh(c);
}

// Whether the stream has ended for the reader (the ring is empty): the peer's write-shut bit, or the TCP socket's
// own end (FIN or RST, from a close, a shutdown or the peer's death). Asked of the kernel with POLLRDHUP, which
// sees the FIN behind wake-up bytes not yet drained. Costs a syscall only when asked by a caller about to return
// EAGAIN or sleep.
static int rx_ended(struct vmsp_conn *c, int fd) {
    if (c->eof) return 1;
    if (load_u32(c->peer, OFF_SHUTDOWN) & (SHUT_WRITE_BIT | CLOSED_BIT)) { c->eof = 1; return 1; }
    struct pollfd p = { .fd = fd, .events = POLLRDHUP };
    if (REAL(poll)(&p, 1, 0) != 1) return 0;
    if (p.revents & POLLERR) {
        int error = 0;
        socklen_t length = sizeof error;
        (void)getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length);
        c->eof = 1;
        c->eof_error = error ? error : ECONNRESET;
        return 1;
    }
    if (p.revents & (POLLRDHUP | POLLHUP)) { c->eof = 1; return 1; }
    return 0;
}

static size_t iov_total(const struct iovec *iov, int iovcnt) {
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++) total += iov[i].iov_len;
    return total;
}

// Copies `count` ring bytes from stream offset `skip` after our position into the iovecs, at `done` bytes in.
static void copy_out(struct vmsp_conn *c, const struct iovec *iov, int iovcnt, size_t done, uint64_t skip, size_t count) {
    const uint8_t *data = c->peer + DATA;
    uint64_t mask = c->rx_cap - 1;
    for (int i = 0; i < iovcnt && count > 0; i++) {
        if (done >= iov[i].iov_len) { done -= iov[i].iov_len; continue; }
        size_t n = iov[i].iov_len - done;
        if (n > count) n = count;
        // The data area is mapped twice back to back: any slice of up to one capacity is contiguous.
        if (iov[i].iov_base) memcpy((uint8_t *)iov[i].iov_base + done, data + ((c->rx_pos + skip) & mask), n);
        skip += n;
        count -= n;
        done = 0;
    }
}

ssize_t vmsp_recv(struct vmsp_conn *c, int fd, const struct iovec *iov, int iovcnt, int flags) {
    int broken = atomic_load(&c->broken);
    if (broken) { errno = broken; return -1; }
    size_t total = iov_total(iov, iovcnt);
    if (flags & MSG_OOB) { errno = EINVAL; return -1; }  // no urgent data travels the rings
    int peek = flags & MSG_PEEK;
    int dontwait = (flags & MSG_DONTWAIT) || atomic_load(&c->nonblocking);
    int waitall = (flags & MSG_WAITALL) && !peek;
    if (total == 0) return 0;
    vmsp_note_reader(&c->reader_pid);
    struct vmsp_signal_mark mark = vmsp_signal_mark();
    pthread_mutex_lock(&c->rx_lock);
    size_t copied = 0;
    ssize_t result;
    int64_t avail = c->rx_seen - c->rx_pos;
    if (avail == 0) avail = rx_refresh(c);
    for (;;) {
        if (avail < 0) { errno = EPROTO; result = -1; break; }
        if (atomic_load(&c->read_shut)) { result = (ssize_t)copied; break; }
        if (avail > 0) {
            size_t n = total - copied < (uint64_t)avail ? total - copied : (size_t)avail;
            if (!(flags & MSG_TRUNC)) copy_out(c, iov, iovcnt, copied, peek ? copied : 0, n);
            if (!peek) {
                c->rx_pos += n;  // only grows; wraps after 2^64 bytes, as meant
                store_u64(c->local, OFF_CONSUMER, c->rx_pos);
                ring_peer_space(c);
            }
            copied += n;
            avail -= (int64_t)n;
            // Bytes published meanwhile go in the same read, as TCP gives all it has.
            if (avail == 0) {
                avail = rx_refresh(c);  // counted from our position: a peek has not moved it past `copied`
                if (peek && avail > 0) avail -= (int64_t)copied;
            }
            if (copied == total || (!waitall && avail <= 0)) { result = (ssize_t)copied; break; }
            continue;
        }
        // Empty. Not armed here: only a wait arms (the interposed poll, select and epoll, or the sleep below), so
        // that a writer whose reader keeps up sends no wake-up byte.
        avail = rx_refresh(c);
        if (avail != 0) continue;
        if (rx_ended(c, fd)) {
            // Every byte published before the end is visible now: the FIN (or the bit) came after it.
            avail = rx_refresh(c);
            if (avail != 0) continue;
            if (copied > 0 || !c->eof_error) { result = (ssize_t)copied; break; }
            errno = c->eof_error;
            c->eof_error = 0;  // TCP reports a reset once, then end of stream
            result = -1;
            break;
        }
        if (copied > 0 && !waitall) { result = (ssize_t)copied; break; }
        if (dontwait) {
            if (copied > 0) { result = (ssize_t)copied; break; }
            errno = EAGAIN;
            result = -1;
            break;
        }
        // Block: spin on the ring a little (a wake-up costs more), then sleep until a wake-up byte, FIN or RST.
        int64_t spin_until = vmsp_now_ns() + vmsp_spin_budget(&recv_spin);
        int interrupted = 0;
        for (int turn = 1; avail == 0; turn++) {
            avail = rx_refresh(c);
            if (avail != 0 || vmsp_now_ns() > spin_until) break;
            if ((turn & 63) == 0) {
                if (vmsp_signalled(mark, 1)) {
                    if ((interrupted = interrupted_since(mark, fd, SO_RCVTIMEO))) break;
                    mark = vmsp_signal_mark();  // restarted: the wait goes on
                }
                sched_yield();
            }
        }
        if (avail != 0) continue;
        if (!interrupted) {
            int tcp_only = 0;
            avail = rx_settle(c, fd, &tcp_only);  // arm, so that the next publish rings; drains the bytes of older arms
            if (avail != 0) { vmsp_rx_disarm(c, 0); continue; }
            if (vmsp_signalled(mark, 1) && interrupted_since(mark, fd, SO_RCVTIMEO)) { vmsp_rx_disarm(c, 0); interrupted = 1; }
        }
        // A handler without SA_RESTART ran while we spun or armed: the kernel would have said EINTR (signals.c).
        if (interrupted) {
            if (copied > 0) { result = (ssize_t)copied; break; }
            errno = EINTR;
            result = -1;
            break;
        }
        struct pollfd p = { .fd = fd, .events = POLLIN | POLLRDHUP };
        int timeout = socket_timeout_ms(fd, SO_RCVTIMEO);
        pthread_mutex_unlock(&c->rx_lock);
        int64_t slept_from = vmsp_now_ns();
        int ready = REAL(poll)(&p, 1, timeout);
        int saved = errno;
        if (ready >= 0) vmsp_spin_slept(&recv_spin, vmsp_now_ns() - slept_from, ready > 0);
        vmsp_rx_disarm(c, 0);
        pthread_mutex_lock(&c->rx_lock);
        if (ready < 0 && saved == EINTR) {
            if (copied > 0) { result = (ssize_t)copied; break; }
            if (!interrupted_since(mark, fd, SO_RCVTIMEO)) { mark = vmsp_signal_mark(); avail = rx_refresh(c); continue; }
            errno = EINTR;
            result = -1;
            break;
        }
        if (ready == 0) {
            if (copied > 0) { result = (ssize_t)copied; break; }
            errno = EAGAIN;
            result = -1;
            break;
        }
        avail = rx_refresh(c);
    }
    pthread_mutex_unlock(&c->rx_lock);
    return result;
}

int vmsp_readable_bytes(struct vmsp_conn *c) {
    pthread_mutex_lock(&c->rx_lock);
    int64_t avail = rx_refresh(c);
    pthread_mutex_unlock(&c->rx_lock);
    if (avail < 0) return 0;
    return avail > 0x7fffffff ? 0x7fffffff : (int)avail;
}

void vmsp_drain_wakeups(struct vmsp_conn *c, int fd) {
    pthread_mutex_lock(&c->rx_lock);
    char sink[256];
    while (REAL(recv)(fd, sink, sizeof sink, MSG_DONTWAIT) > 0) {}
    pthread_mutex_unlock(&c->rx_lock);
}

// MARK: Writer

static int64_t tx_refresh(struct vmsp_conn *c) {
    uint64_t seen = load_u64(c->peer, OFF_CONSUMER);
    if (seen - c->tx_seen > c->tx_pos - c->tx_seen) {  // must stay in [last seen, produced]
        atomic_store(&c->broken, EPROTO);
        return -1;
    }
    c->tx_seen = seen;
    return (int64_t)(c->tx_cap - (c->tx_pos - seen));
}

int64_t vmsp_writable_bytes(struct vmsp_conn *c) {
    pthread_mutex_lock(&c->tx_lock);
    int64_t space = tx_refresh(c);
    pthread_mutex_unlock(&c->tx_lock);
    return space;
}

// Wake-ups this process sent to sleeping readers, by way: for --debug's line at exit, which shows that the doorbell
// path is the one taken (interop/preload-epoll.test.sh asks). A relaxed add next to a system call.
static atomic_ullong wakeups_on_doorbells, wakeups_on_sockets;

void vmsp_forget_wakeups(void) {
    atomic_store_explicit(&wakeups_on_doorbells, 0, memory_order_relaxed);
    atomic_store_explicit(&wakeups_on_sockets, 0, memory_order_relaxed);
}

void vmsp_wakeups_sent(unsigned long long *bells, unsigned long long *sockets) {
    *bells = atomic_load_explicit(&wakeups_on_doorbells, memory_order_relaxed);
    *sockets = atomic_load_explicit(&wakeups_on_sockets, memory_order_relaxed);
}

// After publishing: one wake-up per reader generation (see the top of the file).
static void ring_reader(struct vmsp_conn *c, int fd) {
    // Sequentially consistent, as the publish before it: Dekker's order against the reader's arm and re-check.
    uint64_t word = __atomic_load_n((const uint64_t *)(c->peer + OFF_ARM), __ATOMIC_SEQ_CST);
    uint64_t sleepers = arm_sleepers(word);
    uint32_t gen = (uint32_t)(word & GEN_MASK);
    if (sleepers == 0 || (uint64_t)gen == c->last_rung) return;  // nobody sleeps, or rung already
    c->last_rung = gen;
    char byte = 0;
    if (sleepers == 1 && arm_bell(word) && c->peer_data_bell_fd >= 0 &&
        REAL(send)(c->peer_data_bell_fd, &byte, 1, MSG_DONTWAIT | MSG_NOSIGNAL) == 1) {
        atomic_fetch_add_explicit(&wakeups_on_doorbells, 1, memory_order_relaxed);
        return;  // the one sleeper is an epoll set, and the doorbell wakes it
    }
    c->sent += 1;
    store_u64(c->local, OFF_BELL, ((uint64_t)gen << 32) | c->sent);
    if (REAL(send)(fd, &byte, 1, MSG_DONTWAIT | MSG_NOSIGNAL) == 1) {
        atomic_fetch_add_explicit(&wakeups_on_sockets, 1, memory_order_relaxed);
        return;
    }
    if (errno == EPIPE || errno == ECONNRESET) { atomic_store(&c->peer_gone, 1); return; }
    // Not sent (a full socket buffer cannot happen with one byte per generation; this is a socket that is not
    // connected yet): take the bell back, so that the next publish rings again. A reader that counted it meanwhile
    // waits for it a little, then keeps it as a debt it never receives more than was sent.
    c->sent -= 1;
    c->last_rung = ~(uint64_t)0;
    store_u64(c->local, OFF_BELL, ((uint64_t)gen << 32) | c->sent);
}

// Whether writes must fail with EPIPE: we shut our side, the peer closed or shut its reading side, or it is gone.
static int tx_closed(struct vmsp_conn *c) {
    if (atomic_load(&c->write_shut) || atomic_load(&c->peer_gone)) return 1;
    return (load_u32(c->peer, OFF_SHUTDOWN) & (SHUT_READ_BIT | CLOSED_BIT)) != 0;
}

// Receives the rings on our space doorbell, at most 16 receives' worth: a peer that floods it costs a wait a
// spurious wake-up, not a writer held here. End of stream means the ringing end was shut down, or closed by its
// last holder (in a claimed sibling or after exec, the set-up's copy is gone): only a peer that is gone or ends
// the connection does that, and a wait for room would find the bell readable for ever. Returns 0 then (the peer
// is taken for gone, and writes fail with EPIPE).
static int drain_space_bell(struct vmsp_conn *c) {
    char sink[64];
    ssize_t got = -1;
    for (int i = 0; i < 16 && (got = REAL(recv)(c->space_bell_fd, sink, sizeof sink, MSG_DONTWAIT)) > 0; i++) {}
    if (got != 0) return 1;
    atomic_store(&c->peer_gone, 1);
    return 0;
}

// The peer process's last copy of the control socket closed (death included): the full-ring path asks.
static int peer_hung_up(struct vmsp_conn *c) {
    struct pollfd p = { .fd = c->control_fd, .events = POLLIN };
    if (REAL(poll)(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR))) {
        atomic_store(&c->peer_gone, 1);
        return 1;
    }
    return 0;
}

// Whether the peer process is gone. Asked by the waits for room only once the kernel said the TCP connection
// ended: a FIN alone may be a half-close by a live peer, and a dead reader leaves its ring full, so without this a
// wait for room on a dead peer's connection would never end.
int vmsp_peer_gone(struct vmsp_conn *c) {
    return atomic_load(&c->peer_gone) || peer_hung_up(c);
}

// A wait that polled the control socket found it ready: the peer process is gone (hang-up), or it sent something
// after the handshake, which breaks the protocol (EPROTO from then on, rather than a wait that returns at once).
void vmsp_control_woke(struct vmsp_conn *c) {
    if (!peer_hung_up(c)) atomic_store(&c->broken, EPROTO);
}

static ssize_t broken_pipe(int flags) {
    // As TCP: EPIPE, and SIGPIPE to this thread unless MSG_NOSIGNAL (a disposition of SIG_IGN discards it).
    if (!(flags & MSG_NOSIGNAL)) pthread_kill(pthread_self(), SIGPIPE);
    errno = EPIPE;
    return -1;
}

int vmsp_tx_refuses(struct vmsp_conn *c) {
    if (!tx_closed(c)) return 0;
    broken_pipe(0);
    return 1;
}

// Waits for room. 1: there may be room; 0: timed out or interrupted (errno set); -1: the peer is gone.
// `deadline` carries SO_SNDTIMEO across the calls of one send (0 until the first sleep, -1 for none); each sleep
// lasts at most VMSP_SPACE_RECHECK_MS, after which the caller looks at the ring again.
static int tx_wait(struct vmsp_conn *c, int fd, int64_t need, int64_t *deadline, struct vmsp_signal_mark *mark) {
    int64_t spin_until = vmsp_now_ns() + vmsp_spin_ns();
    for (int turn = 1;; turn++) {
        int64_t space = tx_refresh(c);
        if (space < 0 || space >= need) return 1;
        if (vmsp_now_ns() > spin_until) break;
        if ((turn & 63) == 0) {
            // A handler ran: EINTR where the kernel's send would have said it (signals.c), else go on.
            if (vmsp_signalled(*mark, 1)) {
                if (interrupted_since(*mark, fd, SO_SNDTIMEO)) { errno = EINTR; return 0; }
                *mark = vmsp_signal_mark();
            }
            sched_yield();
        }
    }
    if (vmsp_signalled(*mark, 1)) {
        if (interrupted_since(*mark, fd, SO_SNDTIMEO)) { errno = EINTR; return 0; }
        *mark = vmsp_signal_mark();
    }
    if (*deadline == 0) *deadline = vmsp_deadline_after_ms(socket_timeout_ms(fd, SO_SNDTIMEO));
    store_u32(c->local, OFF_WAIT_SPACE, 1);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);  // the flag before the re-check (Dekker, against the consumer)
    int64_t space = tx_refresh(c);
    if (space < 0 || space >= need || tx_closed(c)) { store_u32(c->local, OFF_WAIT_SPACE, 0); return 1; }
    struct pollfd p[3] = {
        { .fd = c->space_bell_fd, .events = POLLIN },
        { .fd = c->control_fd, .events = POLLIN },
        { .fd = fd, .events = POLLRDHUP },
    };
    int wait_ms = vmsp_ms_until(*deadline);
    if (wait_ms < 0 || wait_ms > VMSP_SPACE_RECHECK_MS) wait_ms = VMSP_SPACE_RECHECK_MS;
    int ready;
    for (;;) {
        ready = REAL(poll)(p, 3, wait_ms);
        if (ready >= 0 || errno != EINTR || interrupted_since(*mark, fd, SO_SNDTIMEO)) break;
        *mark = vmsp_signal_mark();
    }
    int saved = errno;
    store_u32(c->local, OFF_WAIT_SPACE, 0);
    if (!drain_space_bell(c)) return -1;
    if (ready < 0) { errno = saved; return 0; }
    if (ready == 0) {
        if (*deadline >= 0 && vmsp_now_ns() >= *deadline) { errno = EAGAIN; return 0; }
        return 1;  // the longest sleep between looks: look again
    }
    if (p[1].revents & (POLLHUP | POLLERR)) { atomic_store(&c->peer_gone, 1); return -1; }
    if (p[2].revents & (POLLERR | POLLHUP)) { atomic_store(&c->peer_gone, 1); return -1; }
    return 1;
}

// Copies from the iovecs, starting `done` bytes in, `count` bytes into our ring after our position.
static void copy_in(struct vmsp_conn *c, const struct iovec *iov, int iovcnt, size_t done, size_t count) {
    uint8_t *data = c->local + DATA;
    uint64_t mask = c->tx_cap - 1;
    uint64_t at = c->tx_pos;
    for (int i = 0; i < iovcnt && count > 0; i++) {
        if (done >= iov[i].iov_len) { done -= iov[i].iov_len; continue; }
        size_t n = iov[i].iov_len - done;
        if (n > count) n = count;
        memcpy(data + (at & mask), (const uint8_t *)iov[i].iov_base + done, n);
        at += n;
        count -= n;
        done = 0;
    }
}

static void publish(struct vmsp_conn *c, int fd, size_t n) {
    c->tx_pos += n;  // only grows; wraps after 2^64 bytes, as meant
    store_u64(c->local, OFF_PRODUCER, c->tx_pos);  // sequentially consistent: before the generation read below
    ring_reader(c, fd);
}

ssize_t vmsp_send(struct vmsp_conn *c, int fd, const struct iovec *iov, int iovcnt, int flags, int from_write) {
    int signal_flags = from_write ? 0 : flags;
    int broken = atomic_load(&c->broken);
    if (broken) { errno = broken; return -1; }
    if (flags & MSG_OOB) { errno = EOPNOTSUPP; return -1; }
    size_t total = iov_total(iov, iovcnt);
    int dontwait = (flags & MSG_DONTWAIT) || atomic_load(&c->nonblocking);
    if (tcp_established(c, fd, dontwait) != 0) return -1;
    pthread_mutex_lock(&c->tx_lock);
    size_t written = 0;
    ssize_t result;
    int64_t deadline = 0;  // SO_SNDTIMEO's, set at the first sleep
    struct vmsp_signal_mark mark = vmsp_signal_mark();
    for (;;) {
        if (tx_closed(c)) {
            pthread_mutex_unlock(&c->tx_lock);
            if (written > 0) return (ssize_t)written;
            return broken_pipe(signal_flags);
        }
        if (written == total) { result = (ssize_t)written; break; }
        int64_t space = c->tx_cap - (c->tx_pos - c->tx_seen);
        if (space == 0) space = tx_refresh(c);
        if (space < 0) { errno = EPROTO; result = written ? (ssize_t)written : -1; break; }
        if (space > 0) {
            size_t n = total - written < (uint64_t)space ? total - written : (size_t)space;
            copy_in(c, iov, iovcnt, written, n);
            publish(c, fd, n);
            written += n;
            continue;
        }
        // Full.
        if (dontwait) {
            if (written > 0) { result = (ssize_t)written; break; }
            // A poller is told POLLOUT by the TCP socket at all times: look a little before answering EAGAIN,
            // so that it does not spin on us at full speed, and learn whether the peer is still there.
            int64_t spin_until = vmsp_now_ns() + vmsp_spin_ns();
            for (int turn = 1; space == 0 && vmsp_now_ns() < spin_until; turn++) {
                space = tx_refresh(c);
                if ((turn & 63) == 0) sched_yield();
            }
            if (space != 0) { c->full_since = 0; continue; }
            // Whether the peer still lives costs a poll: asked once the ring has stayed full for 10 ms, and
            // every 10 ms after, not at each EAGAIN of a poller that spins on POLLOUT.
            int64_t now = vmsp_now_ns();
            if (c->full_since == 0) {
                c->full_since = now;
            } else if (now - c->full_since > 10000000) {
                c->full_since = now;
                if (peer_hung_up(c)) continue;  // EPIPE above
            }
            errno = EAGAIN;
            result = -1;
            break;
        }
        int waited = tx_wait(c, fd, 1, &deadline, &mark);
        if (waited < 0) continue;  // EPIPE above
        if (waited == 0) { result = written ? (ssize_t)written : -1; break; }
    }
    pthread_mutex_unlock(&c->tx_lock);
    return result;
}

// sendfile to a shared-memory socket: the file's bytes are read straight into the ring.
ssize_t vmsp_sendfile(struct vmsp_conn *c, int fd, int in_fd, off_t *offset, size_t count) {
    int broken = atomic_load(&c->broken);
    if (broken) { errno = broken; return -1; }
    int dontwait = atomic_load(&c->nonblocking);
    if (tcp_established(c, fd, dontwait) != 0) return -1;
    pthread_mutex_lock(&c->tx_lock);
    size_t written = 0;
    ssize_t result;
    int64_t deadline = 0;  // SO_SNDTIMEO's, set at the first sleep
    struct vmsp_signal_mark mark = vmsp_signal_mark();
    off_t position = offset ? *offset : 0;
    for (;;) {
        if (tx_closed(c)) {
            pthread_mutex_unlock(&c->tx_lock);
            if (written > 0) { if (offset) *offset = position; return (ssize_t)written; }
            return broken_pipe(0);
        }
        if (written == count) { result = (ssize_t)written; break; }
        int64_t space = tx_refresh(c);
        if (space < 0) { errno = EPROTO; result = written ? (ssize_t)written : -1; break; }
        if (space > 0) {
            size_t n = count - written < (uint64_t)space ? count - written : (size_t)space;
            uint8_t *at = c->local + DATA + (c->tx_pos & (c->tx_cap - 1));
            ssize_t got = offset ? pread(in_fd, at, n, position) : REAL(read)(in_fd, at, n);
            if (got < 0) { result = written ? (ssize_t)written : -1; break; }
            if (got == 0) { result = (ssize_t)written; break; }  // end of file
            position += got;
            publish(c, fd, (size_t)got);
            written += (size_t)got;
            continue;
        }
        if (dontwait) {
            if (written > 0) { result = (ssize_t)written; break; }
            if (peer_hung_up(c)) continue;
            errno = EAGAIN;
            result = -1;
            break;
        }
        int waited = tx_wait(c, fd, 1, &deadline, &mark);
        if (waited < 0) continue;
        if (waited == 0) { result = written ? (ssize_t)written : -1; break; }
    }
    if (offset && result >= 0) *offset = position;
    pthread_mutex_unlock(&c->tx_lock);
    return result;
}

void vmsp_shutdown_bits(struct vmsp_conn *c, int how) {
    uint32_t bits = 0;
    if (how == SHUT_WR || how == SHUT_RDWR) { bits |= SHUT_WRITE_BIT; atomic_store(&c->write_shut, 1); }
    if (how == SHUT_RD || how == SHUT_RDWR) { bits |= SHUT_READ_BIT; atomic_store(&c->read_shut, 1); }
    if (bits) __atomic_or_fetch((uint32_t *)(c->local + OFF_SHUTDOWN), bits, __ATOMIC_SEQ_CST);
}

// MARK: Readiness, for the interposed waits (wait.c): no lock, no system call.

// Whether a read would not wait: ring bytes, the end of the stream, or an error to report.
int vmsp_rx_ready(struct vmsp_conn *c) {
    if (atomic_load_explicit(&c->broken, memory_order_relaxed) || atomic_load_explicit(&c->read_shut, memory_order_relaxed)) return 1;
    if (__atomic_load_n(&c->eof, __ATOMIC_RELAXED)) return 1;
    if (load_u64(c->peer, OFF_PRODUCER) != load_u64(c->local, OFF_CONSUMER)) return 1;
    return (load_u32(c->peer, OFF_SHUTDOWN) & (SHUT_WRITE_BIT | CLOSED_BIT)) != 0;
}

// Changes whenever new bytes arrive or the stream ends: what an edge-triggered waiter compares.
// Whether the peer shut its writing side or closed (EPOLLRDHUP, before its FIN reaches the socket).
int vmsp_rx_shut(struct vmsp_conn *c) { return (load_u32(c->peer, OFF_SHUTDOWN) & (SHUT_WRITE_BIT | CLOSED_BIT)) != 0; }

uint64_t vmsp_rx_mark(struct vmsp_conn *c) {
    uint64_t ended = (load_u32(c->peer, OFF_SHUTDOWN) & (SHUT_WRITE_BIT | CLOSED_BIT)) ? 1ull << 63 : 0;
    return load_u64(c->peer, OFF_PRODUCER) ^ ended;
}

// Whether a write would not wait: room in the ring, or an error (EPIPE, EPROTO) to report.
int vmsp_tx_ready(struct vmsp_conn *c) {
    if (atomic_load_explicit(&c->broken, memory_order_relaxed) || tx_closed(c)) return 1;
    uint64_t produced = load_u64(c->local, OFF_PRODUCER), consumed = load_u64(c->peer, OFF_CONSUMER);
    return produced - consumed < c->tx_cap || consumed - produced < (1ull << 62);  // room, or a lying peer
}

uint64_t vmsp_tx_mark(struct vmsp_conn *c) { return load_u64(c->peer, OFF_CONSUMER); }

// Before a wait sleeps for data: arms a new generation (the writer's next publish sends a wake-up byte, or rings
// the data doorbell if `*bell` asked for it and got it), drains the bytes of older ones, and returns whether a
// read would not wait after all. Armed either way: the caller disarms (vmsp_rx_disarm, with `*bell` as it came
// back) once it no longer sleeps on the connection.
int vmsp_rx_arm(struct vmsp_conn *c, int fd, int *bell) {
    pthread_mutex_lock(&c->rx_lock);
    int64_t avail = rx_settle(c, fd, bell);
    pthread_mutex_unlock(&c->rx_lock);
    return avail != 0 || vmsp_rx_ready(c);
}

// Before a wait sleeps for room: asks the peer's reader to ring our space doorbell when it consumes, and returns
// whether there is room already (then disarmed).
int vmsp_tx_arm(struct vmsp_conn *c) {
    store_u32(c->local, OFF_WAIT_SPACE, 1);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);  // the flag before the re-check (Dekker, against the consumer)
    if (!vmsp_tx_ready(c)) return 0;
    store_u32(c->local, OFF_WAIT_SPACE, 0);
    return 1;
}

// After the wait: no more space rings wanted, and the rung bytes drained.
void vmsp_tx_disarm(struct vmsp_conn *c) {
    store_u32(c->local, OFF_WAIT_SPACE, 0);
    (void)drain_space_bell(c);
}

void vmsp_data_bell_drain(struct vmsp_conn *c) {
    char sink[64];
    while (REAL(recv)(c->data_bell_fd, sink, sizeof sink, MSG_DONTWAIT) == (ssize_t)sizeof sink) {}
}
