// The relay process that keeps a shared-memory connection for a new image (ferry.c forks it at exec, posix_spawn
// and SCM_RIGHTS passing), from its fork to its end.
//
// The relay starts copying only once the exec has happened: it waits for the end of a close-on-exec socket pair
// (or a 'g', after posix_spawn), and any other byte (exec failed) sends it away without copying, the descriptors
// back as they were. It reads for the new image only while no other process reads (relay_turn). It is a holder of
// the connection (holders.c) from its fork on, so the old image's leaving is not the last close. It ends when
// the new image and the peer are done with the connection:
// - the new image shuts its socket down for writing: the connection is shut down for writing too (as TCP's
//   FIN); when no process holds that socket any more (it was closed, not shut down), the relay closes its hold
//   on the connection (the last holder's close ends it, as the last close of a TCP socket does);
// - the peer's end of stream shuts the relay's socket down for writing; a reset, or a ring rule broken, resets
//   it (SO_LINGER 0);
// - the new image gone while the peer still writes: the relay closes its hold, and the peer's writes fail.
#include "preload.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

// Whether the relay reads the connection for the new image, which cannot say when it wants bytes. Another
// process may hold the connection too, and bytes the relay takes are gone for it: the parent that forked the
// exec'd child and kept its copy (Python's subprocess keeps it while the child runs: it reads nothing), or a
// program that leaked the socket into a helper it runs and goes on reading it itself. So the relay reads
// - when no other process holds the connection (inetd closes its copy at once; a relay alone stays alone, since
//   only a holder's fork adds one), looked at every 50 ms (nothing wakes the relay when another holder closes);
// - or, while others hold it, once bytes have waited in the ring for 20 ms with none of them reading or waiting
//   to read since the relay started (each read and each wait to read names its process in the connection's
//   page: vmsp_note_reader), if the connection was handed over on purpose (on_purpose): it is the new image's
//   standard input, output or error, the program cleared its close-on-exec flag, or a posix_spawn file action
//   copies it. A socket merely leaked into a helper waits for its other holders to close it. Once another
//   process reads or waits, the relay leaves the bytes to it until it is alone.
enum { LOOK_MS = 50, CLAIM_MS = 20 };
int vmsp_relay_process;
enum turn { HOLD, WATCH, READ };  // leave the ring alone; wait for bytes there; read it
struct claim {
    int may_claim;        // handed over on purpose (above)
    int alone, others_read, claimed;
    int woke;             // a wait for bytes ended (bytes, or the peer's end the rings do not show yet)
    int64_t next_look, pending_since;
};

static enum turn relay_turn(struct vmsp_conn *c, struct claim *k, int *timeout_ms) {
    int64_t now = vmsp_now_ns();
    *timeout_ms = -1;
    if (!k->alone && now >= k->next_look) {
        k->alone = !vmsp_holders_others(c);
        k->next_look = now + (int64_t)LOOK_MS * 1000000;
    }
    if (k->alone) return READ;
    *timeout_ms = (int)((k->next_look - now + 999999) / 1000000);
    if (atomic_load(&c->reader_pid) != vmsp_self_pid) k->others_read = 1;
    if (k->others_read || !k->may_claim) return HOLD;
    if (k->claimed) return READ;
    if (!vmsp_rx_ready(c) && !k->woke) {
        k->pending_since = 0;
        return WATCH;
    }
    if (!k->pending_since) k->pending_since = now;
    int64_t left = k->pending_since + (int64_t)CLAIM_MS * 1000000 - now;
    if (left <= 0) {
        k->claimed = 1;
        return READ;
    }
    int left_ms = (int)((left + 999999) / 1000000);
    if (left_ms < *timeout_ms) *timeout_ms = left_ms;
    return HOLD;
}

// The relay's hold on the connections it does not keep: every live one (in the table or not: a name another
// thread closed while a call still held the connection), each left once, as a close would (the last holder sets
// its closed bit, and drains its wake-up bytes, or the kernel would answer the close with RST), then its rings
// unmapped, so that its memory goes with its last holder. A process holding both ends of a connection maps each
// region once, as one end's own ring and the other's peer ring: `keep`'s (the relay's own) stay mapped.
struct others {
    struct vmsp_conn **conn;
    unsigned char *last;  // this process was its last holder
    size_t count, size;   // `size`: of the mapping that holds both arrays
};

static int by_address(const void *a, const void *b) {
    uintptr_t x = (uintptr_t)*(struct vmsp_conn *const *)a, y = (uintptr_t)*(struct vmsp_conn *const *)b;
    return x < y ? -1 : x > y;
}

// Each live connection but `keep`, once, sorted; in memory from mmap (malloc's lock may be held by a thread the
// fork left behind). count 0 when there is none or no memory.
static struct others others_of(struct vmsp_conn *keep) {
    struct others o = { 0 };
    size_t n = vmsp_live_connections(NULL, 0);
    if (n == 0) return o;
    size_t size = n * (sizeof(struct vmsp_conn *) + 1);
    void *memory = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) return o;
    o.conn = memory;
    o.size = size;
    o.last = (unsigned char *)(o.conn + n);
    n = vmsp_live_connections(o.conn, n);
    qsort(o.conn, n, sizeof o.conn[0], by_address);
    for (size_t i = 0; i < n; i++) {
        if (o.conn[i] != keep && (o.count == 0 || o.conn[o.count - 1] != o.conn[i])) o.conn[o.count++] = o.conn[i];
    }
    return o;
}

static int last_holder(const struct others *o, struct vmsp_conn *x) {
    struct vmsp_conn **found = bsearch(&x, o->conn, o->count, sizeof o->conn[0], by_address);
    return found && o->last[found - o->conn];
}

static void leave_others(struct vmsp_conn *c, int fd) {
    struct others o = others_of(c);
    for (size_t i = 0; i < o.count; i++) {
        o.last[i] = !vmsp_holders_leave(o.conn[i]);
        if (o.last[i]) __atomic_or_fetch((uint32_t *)(o.conn[i]->local + 640), 4u, __ATOMIC_SEQ_CST);  // closed
    }
    int high = atomic_load(&vmsp_table_high);
    for (int other = 0; other <= high && other < vmsp_table_size; other++) {
        struct vmsp_ref *r = vmsp_lookup(other);
        if (!r || other == fd) continue;
        if (r->conn == c) { close(other); continue; }  // one more name of ours: the table's count drops
        if (last_holder(&o, r->conn)) vmsp_drain_wakeups(r->conn, other);
        (void)vmsp_remove(other);  // never touched again: a later close of the number is not a close of it
    }
    for (size_t i = 0; i < o.count; i++) {
        struct vmsp_conn *x = o.conn[i];
        if (x->local != (const uint8_t *)c->peer) munmap(x->local, 4096 + 2 * (size_t)x->tx_cap);
        if (x->peer != c->local) munmap((void *)x->peer, 4096 + 2 * (size_t)x->rx_cap);
    }
    if (o.conn) munmap(o.conn, o.size);
}

// The relay keeps its connection's descriptors and nothing else of the old image's: the other connections are
// left (above), and every other descriptor is closed, so that no pipe or socket of the program stays open through
// it.
static void keep_only(struct vmsp_conn *c, int fd, int sock, int go) {
    leave_others(c, fd);
    // Standard error only under --debug, for the relay's last line: it may be a pipe whose reader waits for its end.
    int keep[] = { vmsp_debug_enabled() ? 2 : -1, fd, sock, go, c->control_fd, c->space_bell_fd, c->peer_space_bell_fd, c->data_bell_fd,
                   c->peer_data_bell_fd };
    int count = (int)(sizeof keep / sizeof keep[0]);
    for (int i = 1; i < count; i++) {  // sorted, for the gaps between them
        for (int j = i; j > 0 && keep[j - 1] > keep[j]; j--) { int t = keep[j]; keep[j] = keep[j - 1]; keep[j - 1] = t; }
    }
    unsigned int from = 0;
    for (int i = 0; i <= count; i++) {
        unsigned int to = i < count ? (unsigned int)keep[i] : ~0u;
        if (i < count && keep[i] < 0) continue;
        // The kernel's close_range: the interposed one would close the numbers' connections once more.
        if (to > from && REAL(syscall)(SYS_close_range, from, to - 1, 0) != 0) {
            for (unsigned int n = from; n < to && n < 65536; n++) REAL(close)((int)n);
        }
        if (i < count) from = (unsigned int)keep[i] + 1;
    }
}

// Whether any process still has the socket `inode` open: the new image (or a child of it) that shut it down
// for writing, rather than closed it. A process whose descriptors /proc does not show us may: it counts.
static int socket_held(ino_t inode) {
    char wanted[48];
    snprintf(wanted, sizeof wanted, "socket:[%llu]", (unsigned long long)inode);
    DIR *proc = opendir("/proc");
    if (!proc) return 1;
    int found = 0;
    for (struct dirent *process; !found && (process = readdir(proc));) {
        if (process->d_name[0] < '1' || process->d_name[0] > '9') continue;
        char path[64];
        snprintf(path, sizeof path, "/proc/%s/fd", process->d_name);
        DIR *fds = opendir(path);
        if (!fds) {
            found = errno == EACCES;
            continue;
        }
        for (struct dirent *entry; !found && (entry = readdir(fds));) {
            char link[300], target[64];
            snprintf(link, sizeof link, "%s/%s", path, entry->d_name);
            ssize_t n = readlink(link, target, sizeof target - 1);
            if (n > 0) { target[n] = 0; found = strcmp(target, wanted) == 0; }
        }
        closedir(fds);
    }
    closedir(proc);
    return found;
}

// One direction's bytes in flight.
struct leg { char bytes[65536]; size_t start, end; int ended; };

static void reset(int sock) {
    struct linger now = { 1, 0 };
    (void)REAL(setsockopt)(sock, SOL_SOCKET, SO_LINGER, &now, sizeof now);
}

// The program's signal handlers are not the relay's (a pidfile's clean-up, a reload), nor its blocked signals
// (a stop's SIGTERM must end it). A broken pipe is an error, not a signal.
static void own_signals(void) {
    for (int sig = 1; sig < NSIG; sig++) {
        struct sigaction action;
        if (REAL(sigaction)(sig, NULL, &action) != 0 || action.sa_handler == SIG_DFL || action.sa_handler == SIG_IGN) {
            continue;
        }
        memset(&action, 0, sizeof action);
        action.sa_handler = SIG_DFL;
        (void)REAL(sigaction)(sig, &action, NULL);
    }
    struct sigaction ignore = { .sa_handler = SIG_IGN };
    (void)REAL(sigaction)(SIGPIPE, &ignore, NULL);
    sigset_t none;
    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, NULL);
}

void vmsp_run_relay(struct vmsp_conn *c, int fd, int sock, int go, ino_t app_inode, int may_claim, pid_t image) {
    static struct leg down, up;  // peer to new image, new image to peer
    vmsp_inside = 0;
    own_signals();
    setsid();  // a terminal's signals to the program's group are not for the relay
    prctl(PR_SET_NAME, "vmsock-relay");
    keep_only(c, fd, sock, go);
    char start[1 + sizeof image] = { 0 };
    ssize_t n;
    while ((n = REAL(read)(go, start, sizeof start)) < 0 && errno == EINTR) {}
    REAL(close)(go);
    if (n != 0 && start[0] != 'g') { close(fd); _exit(0); }  // exec failed: the old image keeps the connection
    if (n == (ssize_t)sizeof start) memcpy(&image, start + 1, sizeof image);  // a spawn's child
    REAL(fcntl)(sock, F_SETFL, REAL(fcntl)(sock, F_GETFL) | O_NONBLOCK);
    vmsp_relay_process = 1;
    atomic_store(&c->reader_pid, vmsp_self_pid);  // what others read from here on is theirs
    struct claim claim = { .may_claim = may_claim };
    // up_unread: the peer reads no more (EPIPE); what the new image writes is dropped, as TCP's peer would
    // answer it with a reset, while what the peer sent still reaches it.
    int up_shut = 0, up_unread = 0, failed = 0;
    const char *why = "both ways ended";
    while (!failed && !(up.ended && down.ended)) {
        int moved = 0, timeout_ms = -1;
        enum turn turn = !down.ended && down.end == 0 ? relay_turn(c, &claim, &timeout_ms) : HOLD;
        if (turn == READ) {
            n = recv(fd, down.bytes, sizeof down.bytes, MSG_DONTWAIT);
            if (n > 0) { down.end = (size_t)n; moved = 1; }
            else if (n == 0) { down.ended = 1; (void)REAL(shutdown)(sock, SHUT_WR); moved = 1; }
            else if (errno != EAGAIN && errno != EINTR) { why = "the connection broke"; reset(sock); failed = errno; }
        }
        if (down.end > down.start) {
            n = REAL(send)(sock, down.bytes + down.start, down.end - down.start, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n > 0) { down.start += (size_t)n; moved = 1; }
            else if (errno != EAGAIN && errno != EINTR) { why = "the new image's socket refused data"; failed = errno; }
            if (down.start == down.end) down.start = down.end = 0;
        }
        if (!up.ended && up.end == 0) {
            n = REAL(recv)(sock, up.bytes, sizeof up.bytes, MSG_DONTWAIT);
            if (n > 0) { up.end = up_unread ? 0 : (size_t)n; moved = 1; }
            else if (n == 0) { up.ended = 1; moved = 1; }
            else if (errno != EAGAIN && errno != EINTR) { why = "the new image's socket failed"; failed = errno; }
        }
        if (up.end > up.start) {
            n = send(fd, up.bytes + up.start, up.end - up.start, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n > 0) { up.start += (size_t)n; moved = 1; }
            else if (errno == EPIPE) { up_unread = 1; up.start = up.end; moved = 1; }
            else if (errno != EAGAIN && errno != EINTR) { why = "the connection refused data"; reset(sock); failed = errno; }
            if (up.start == up.end) up.start = up.end = 0;
        }
        if (up.ended && up.end == 0) vmsp_relay_forget_image(c, image);  // all it wrote is in the ring
        if (up.ended && up.end == 0 && !up_shut) {
            // Shut down or closed? Closed: nobody reads what the peer sends any more, and our close is the
            // new image's. Shut down: the peer sees the end of stream, and the other way goes on.
            if (down.ended || !socket_held(app_inode)) {
                why = down.ended ? "both ways ended" : "the new image closed its socket";
                break;
            }
            if (!up_unread) shutdown(fd, SHUT_WR);
            up_shut = 1;
        }
        if (moved || failed) continue;
        short on_fd = (short)((turn != HOLD ? POLLIN : 0) | (up.end ? POLLOUT : 0));
        short on_sock = (short)((!up.ended && up.end == 0 ? POLLIN : 0) | (down.end ? POLLOUT : 0));
        struct pollfd wait[2] = { { .fd = on_fd ? fd : -1, .events = on_fd }, { .fd = on_sock ? sock : -1, .events = on_sock } };
        if (poll(wait, 2, timeout_ms) > 0 && turn == WATCH &&
            (wait[0].revents & (POLLIN | POLLHUP | POLLERR | POLLRDHUP))) {
            claim.woke = 1;  // from here the claim's 20 ms run, and then a read says what it was
        }
    }
    vmsp_relay_forget_image(c, image);
    vmsp_debug("relay for fd %d ends: %s%s%s", fd, why, failed ? ": " : "", failed ? strerrorname_np(failed) : "");
    close(fd);
    REAL(close)(sock);
    _exit(0);
}
