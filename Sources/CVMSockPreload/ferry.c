// A shared-memory connection handed to a new image by exec. The rings cannot go with it: a process's own ring
// is sealed against new writable mappings once it has mapped it (so that the peer can never map it writable),
// and exec takes that mapping away. So the exec wrapper leaves the connection with a relay: a process forked
// for it that keeps the rings and copies between them and a TCP connection of its own, whose other end takes the
// connection's descriptor numbers in the new image. The new image sees a TCP socket that carries the data, in
// order; the peer keeps its shared-memory connection and sees no change. That is what inetd-like servers
// need (the accepted socket moved to stdin and stdout, then exec), and sshd's re-exec, and socat's EXEC.
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
//
// posix_spawn keeps the parent's descriptors as they are: the relays' sockets go to the new image in
// VMSOCK_RELAYED, and its constructor puts them in place (exec.c). Descriptors the parent lets through get a relay:
// those not close-on-exec, and those a file action copies to a number in the new image (actions.c).
// A vfork child of a process with connections is a fork's (real.c); a raw clone's is not covered: the new image's
// connection ends there. The new image's socket has the connection's addresses, but ports of its own.
#include "preload.h"

#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

// MARK: In the process that execs

// The connection from `expected` on `listener`: another process could have connected first.
static int accept_from(int listener, const struct sockaddr *expected, socklen_t length) {
    struct sockaddr_storage from;
    socklen_t from_length = sizeof from;
    int server = REAL(accept4)(listener, (struct sockaddr *)&from, &from_length, SOCK_CLOEXEC);
    if (server >= 0 && (from_length != length || memcmp(&from, expected, length) != 0)) {
        REAL(close)(server);
        return -1;
    }
    return server;
}

// A connected pair of TCP sockets with the addresses of `like` but their ports: the new image's end (pair[0],
// bound to `like`'s local address) and the relay's (listening on `like`'s peer address), both close-on-exec.
// Both addresses are this host's: a shared-memory connection never leaves it.
static int relay_pair(int like, int pair[2]) {
    struct sockaddr_storage local, peer;
    socklen_t local_length = sizeof local, peer_length = sizeof peer;
    if (getsockname(like, (struct sockaddr *)&local, &local_length) != 0 ||
        getpeername(like, (struct sockaddr *)&peer, &peer_length) != 0 || local.ss_family != peer.ss_family ||
        (local.ss_family != AF_INET && local.ss_family != AF_INET6)) {
        return -1;
    }
    int family = local.ss_family;
    if (family == AF_INET) {
        ((struct sockaddr_in *)&local)->sin_port = 0;
        ((struct sockaddr_in *)&peer)->sin_port = 0;
    } else {
        ((struct sockaddr_in6 *)&local)->sin6_port = 0;
        ((struct sockaddr_in6 *)&peer)->sin6_port = 0;
    }
    int listener = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0), client = -1, server = -1;
    if (listener >= 0 && bind(listener, (struct sockaddr *)&peer, peer_length) == 0 &&
        REAL(listen)(listener, 1) == 0 && getsockname(listener, (struct sockaddr *)&peer, &peer_length) == 0) {
        client = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (client >= 0 && bind(client, (struct sockaddr *)&local, local_length) == 0 &&
            REAL(connect)(client, (struct sockaddr *)&peer, peer_length) == 0 &&
            getsockname(client, (struct sockaddr *)&local, &local_length) == 0) {
            server = accept_from(listener, (struct sockaddr *)&local, local_length);
        }
    }
    if (listener >= 0) REAL(close)(listener);
    if (server < 0) {
        if (client >= 0) REAL(close)(client);
        return -1;
    }
    int on = 1;
    (void)REAL(setsockopt)(server, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    pair[0] = client;
    pair[1] = server;
    return 0;
}

static void run_relay(struct vmsp_conn *c, int fd, int sock, int go, ino_t app_inode, int may_claim, pid_t image)
    __attribute__((noreturn));

static void send_relay(int go, char byte) {
    if (go < 0) return;  // an ended socket (below), no relay
    (void)REAL(send)(go, &byte, 1, MSG_NOSIGNAL);
    REAL(close)(go);
}

// The new image `image` writes through a relay of `c`: its slot, cleared by the relay once everything it wrote
// is in the ring (or when the relay ends). No free slot: the wait after it is not ordered (as before).
static void note_image(struct vmsp_conn *c, pid_t image) {
    for (int i = 0; image > 0 && i < VMSP_RELAY_IMAGES; i++) {
        int32_t expected = 0;
        if (atomic_compare_exchange_strong(&c->relay_images[i], &expected, (int32_t)image)) return;
    }
}

static void forget_image(struct vmsp_conn *c, pid_t image) {
    for (int i = 0; image > 0 && i < VMSP_RELAY_IMAGES; i++) {
        int32_t expected = (int32_t)image;
        if (atomic_compare_exchange_strong(&c->relay_images[i], &expected, 0)) return;
    }
}

void vmsp_relays_settle(pid_t child) {
    if (child <= 0 || vmsp_inside) return;
    int64_t deadline = vmsp_now_ns() + 2000000000;  // a relay whose peer reads nothing may never finish
    int high = atomic_load(&vmsp_table_high);
    for (int fd = 0; fd <= high && fd < vmsp_table_size; fd++) {
        if (!vmsp_lookup(fd)) continue;
        struct vmsp_ref *r = vmsp_enter(fd);  // held: another thread may close it meanwhile
        if (!r) continue;
        for (int i = 0; i < VMSP_RELAY_IMAGES; i++) {
            while (atomic_load(&r->conn->relay_images[i]) == (int32_t)child) {
                if (vmsp_now_ns() >= deadline) {
                    // Its relay is gone, or cannot finish: not waited for again.
                    int32_t expected = (int32_t)child;
                    atomic_compare_exchange_strong(&r->conn->relay_images[i], &expected, 0);
                    break;
                }
                struct timespec pause = { 0, 200000 };
                nanosleep(&pause, NULL);
            }
        }
        vmsp_leave(r);
    }
}

// Forks the relay for the connection `fd` names: twice, so that the new image never sees it as a child. Returns
// the new image's end, or -1. `*go_write` starts the relay: its end (at exec, which closes it), or a 'g' (after
// posix_spawn); any other byte sends it away.
static int start_relay(struct vmsp_conn *c, int fd, int *go_write, int may_claim) {
    int pair[2], go[2];
    if (relay_pair(fd, pair) != 0) return -1;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, go) != 0) {
        REAL(close)(pair[0]);
        REAL(close)(pair[1]);
        return -1;
    }
    struct stat app;
    pid_t image = getpid();  // after exec; a spawn's child sends its own with the start (run_relay)
    pid_t first = fstat(pair[0], &app) == 0 ? vmsp_fork_quietly() : -1;
    if (first == 0) {
        // The relay waits for this process's end (the pipe's): until then it may still be added to the holders
        // of every connection here (vmsp_fork_quietly does, as fork does), and its leaving them must come after.
        int gone[2];
        if (pipe2(gone, O_CLOEXEC) != 0) _exit(1);
        pid_t relay = vmsp_fork_quietly();
        if (relay != 0) _exit(relay > 0 ? 0 : 1);
        REAL(close)(gone[1]);
        char byte;
        while (REAL(read)(gone[0], &byte, 1) < 0 && errno == EINTR) {}
        REAL(close)(gone[0]);
        REAL(close)(go[1]);
        REAL(close)(pair[0]);
        run_relay(c, fd, pair[1], go[0], app.st_ino, may_claim, image);
    }
    REAL(close)(pair[1]);
    REAL(close)(go[0]);
    // Its status says whether the relay was forked. ECHILD: the program reaped it (a SIGCHLD handler) or ignores
    // SIGCHLD; then the relay is taken to be there.
    int status = 0, waited = -1;
    // The kernel's wait, not the interposed one (which would look for relays of this pid).
    while (first > 0 && (waited = (int)syscall(SYS_wait4, first, &status, 0, NULL)) < 0 && errno == EINTR) {}
    int made = first > 0 && (waited < 0 ? errno == ECHILD : WIFEXITED(status) && WEXITSTATUS(status) == 0);
    if (!made) {  // no relay (one that was forked after all is sent away)
        REAL(close)(pair[0]);
        send_relay(go[1], 'x');
        return -1;
    }
    // The new image's socket as the old one was: O_NONBLOCK (its open file description's), TCP_NODELAY.
    if (atomic_load(&c->nonblocking)) REAL(fcntl)(pair[0], F_SETFL, REAL(fcntl)(pair[0], F_GETFL) | O_NONBLOCK);
    if (atomic_load(&c->app_nodelay)) {
        int on = 1;
        (void)REAL(setsockopt)(pair[0], IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    }
    *go_write = go[1];
    return pair[0];
}

// Whether the new image gets the connection as its standard input, output or error (not close-on-exec, nor
// replaced by a spawn's file `actions`): handed over on purpose (inetd, Python's subprocess, a shell's
// redirection), not leaked.
static int stdio_of(struct vmsp_conn *c, const posix_spawn_file_actions_t *actions) {
    for (int fd = 0; fd <= 2; fd++) {
        struct vmsp_ref *r = vmsp_spawn_takes(actions, fd) ? NULL : vmsp_lookup(fd);
        int flags = r && r->conn == c ? REAL(fcntl)(fd, F_GETFD) : -1;
        if (flags >= 0 && !(flags & FD_CLOEXEC)) return 1;
    }
    return 0;
}

// Whether the connection goes to the new image on purpose, so that its relay may read for it while others hold
// it (relay_turn): as its standard input, output or error (this process's, which a spawn's file actions may
// still replace), made inheritable by the program itself (`handed`: its close-on-exec flag cleared), or copied
// by one of posix_spawn's file `actions`. Not merely because the spawn has file actions: a socket leaked into a
// child that never reads it would lose to the relay the bytes its parent reads after (they would go with it).
static int on_purpose(struct vmsp_ref *r, const posix_spawn_file_actions_t *actions) {
    if (stdio_of(r->conn, actions) || atomic_load(&r->handed)) return 1;
    if (!actions) return 0;
    int high = atomic_load(&vmsp_table_high);
    for (int fd = 0; fd <= high && fd < vmsp_table_size; fd++) {
        struct vmsp_ref *other = vmsp_lookup(fd);
        if (other && other->conn == r->conn && vmsp_spawn_copies(actions, fd)) return 1;
    }
    return 0;
}

// One end of a socket pair whose other end is closed (close-on-exec), or -1.
int vmsp_ended_socket(void) {
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) return -1;
    REAL(close)(pair[1]);
    return pair[0];
}

// `actions`: posix_spawn's file actions (NULL for exec and for a spawn without them).
static void prepare(struct vmsp_relays *plan, const posix_spawn_file_actions_t *actions, int spawning) {
    memset(plan, 0, sizeof *plan);
    if (vmsp_inside || !vmsp_holders_is_self()) return;  // a raw clone's child, sharing its parent's memory: not there
    int high = atomic_load(&vmsp_table_high);
    for (int fd = 0; fd <= high && fd < vmsp_table_size; fd++) {
        struct vmsp_ref *r = vmsp_lookup(fd);
        int flags = r ? REAL(fcntl)(fd, F_GETFD) : -1;
        int inherited = flags >= 0 && (!(flags & FD_CLOEXEC) || vmsp_spawn_copies(actions, fd)) &&
                        !vmsp_spawn_takes(actions, fd);
        plan->inherited += inherited;
        if (!inherited || plan->fds == VMSP_RELAY_FDS) continue;
        int saved = REAL(fcntl)(fd, F_DUPFD_CLOEXEC, 0);  // put back if exec fails
        if (saved < 0) continue;
        int which = 0;
        while (which < plan->count && plan->conn[which] != r->conn) which++;
        if (which == plan->count) {
            if (plan->count == VMSP_RELAYS) {
                REAL(close)(saved);
                continue;
            }
            int claim = on_purpose(r, actions), go = -1, app = start_relay(r->conn, fd, &go, claim);
            if (app >= 0 && !claim) {
                vmsp_debug("exec: fd %d, a shared-memory connection not handed over on purpose (not standard input, "
                           "output or error, nor made inheritable or copied by the program): its relay reads for "
                           "the new image only once the other holders closed it", fd);
            }
            if (app < 0) {
                // The new image gets a socket whose peer is gone in its place: end of stream, never a wake-up byte
                // read as data, even in a program that does not load this library.
                app = vmsp_ended_socket();
                if (app < 0) {
                    REAL(close)(saved);
                    continue;
                }
                vmsp_debug("exec: fd %d is a shared-memory connection and no relay could be made for it: it ends for "
                           "the new image", fd);
            }
            plan->conn[which] = r->conn;
            plan->app[which] = app;
            plan->go[which] = go;
            plan->count++;
            if (go >= 0 && !spawning) note_image(r->conn, getpid());  // exec keeps the pid (a spawn's: spawned)
        }
        plan->fd[plan->fds] = fd;
        plan->relay[plan->fds] = which;
        plan->saved[plan->fds] = saved;
        plan->fds++;
    }
}

void vmsp_relay_prepare(struct vmsp_relays *plan) { prepare(plan, NULL, 0); }

void vmsp_relay_prepare_spawn(struct vmsp_relays *plan, const posix_spawn_file_actions_t *actions) {
    prepare(plan, actions, 1);
}

int vmsp_relay_carries(const struct vmsp_relays *plan, int fd) {
    for (int i = 0; i < plan->fds; i++) if (plan->fd[i] == fd) return 1;
    return 0;
}

void vmsp_relay_swap(struct vmsp_relays *plan) {
    for (int i = 0; i < plan->fds; i++) {
        int fd = plan->fd[i];
        if (REAL(dup2)(plan->app[plan->relay[i]], fd) < 0 || plan->go[plan->relay[i]] < 0) continue;
        vmsp_debug("exec: fd %d, a shared-memory connection, goes to the new image as a TCP socket through a relay "
                   "process (vmsock-run cannot carry the rings across exec)", fd);
    }
}

// exec failed: the descriptors back, and each relay sent away.
void vmsp_relay_exec_failed(struct vmsp_relays *plan) {
    for (int i = 0; i < plan->fds; i++) {
        REAL(dup2)(plan->saved[i], plan->fd[i]);
        REAL(close)(plan->saved[i]);
    }
    for (int i = 0; i < plan->count; i++) {
        if (plan->go[i] >= 0) forget_image(plan->conn[i], getpid());
        send_relay(plan->go[i], 'x');
        REAL(close)(plan->app[i]);
    }
}

// A connection passed in an SCM_RIGHTS message (passing.c): its relay, which reads for the receiver as for a new
// image handed the connection on purpose. The socket to pass, or -1; `*go` for vmsp_relay_passed.
int vmsp_relay_for_passing(struct vmsp_conn *c, int fd, int *go) {
    int app = start_relay(c, fd, go, 1);
    if (app >= 0) REAL(fcntl)(app, F_SETFD, FD_CLOEXEC);
    return app;
}

// After the message: the relay starts (the receiver's process is not known: no order after its wait), or is
// sent away when the message was not sent.
void vmsp_relay_passed(int go, int sent) {
    if (go < 0) return;
    if (!sent) return send_relay(go, 'x');
    char start[1 + sizeof(pid_t)] = { 'g' };  // pid 0: none
    (void)REAL(send)(go, start, sizeof start, MSG_NOSIGNAL);
    REAL(close)(go);
}

// posix_spawn: the parent keeps its descriptors, so the new image's constructor puts each relay's socket in place
// (exec.c). Writes "VMSOCK_RELAYED=inode:fd:inode,..." (the connection's socket, the relay socket's number and
// its own inode, which file actions may have replaced) into `out`, and lets the relay sockets through the spawn.
int vmsp_relay_entry(struct vmsp_relays *plan, char *out, size_t capacity) {
    size_t length = (size_t)snprintf(out, capacity, "VMSOCK_RELAYED=");
    int count = 0;
    for (int i = 0; i < plan->fds; i++) {
        int app = plan->app[plan->relay[i]];
        struct stat socket_info, app_info;
        if (fstat(plan->fd[i], &socket_info) != 0 || fstat(app, &app_info) != 0) continue;
        int n = snprintf(out + length, capacity - length, "%s%llu:%d:%llu", count ? "," : "",
                         (unsigned long long)socket_info.st_ino, app, (unsigned long long)app_info.st_ino);
        if (n < 0 || (size_t)n >= capacity - length) break;
        length += (size_t)n;
        count++;
    }
    for (int i = 0; count && i < plan->count; i++) REAL(fcntl)(plan->app[i], F_SETFD, 0);
    return count;
}

// After posix_spawn: each relay starts (the new image has its socket) or is sent away; ours are closed.
void vmsp_relay_spawned(struct vmsp_relays *plan, int started, pid_t image) {
    for (int i = 0; i < plan->fds; i++) REAL(close)(plan->saved[i]);
    for (int i = 0; i < plan->count; i++) {
        if (started && plan->go[i] >= 0) {
            note_image(plan->conn[i], image);
            char start[1 + sizeof image] = { 'g' };
            memcpy(start + 1, &image, sizeof image);
            (void)REAL(send)(plan->go[i], start, sizeof start, MSG_NOSIGNAL);
            REAL(close)(plan->go[i]);
        } else {
            send_relay(plan->go[i], 'x');
        }
        REAL(close)(plan->app[i]);
    }
}

// MARK: In the relay

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

static void run_relay(struct vmsp_conn *c, int fd, int sock, int go, ino_t app_inode, int may_claim, pid_t image) {
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
        if (up.ended && up.end == 0) forget_image(c, image);  // all it wrote is in the ring
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
    forget_image(c, image);
    vmsp_debug("relay for fd %d ends: %s%s%s", fd, why, failed ? ": " : "", failed ? strerrorname_np(failed) : "");
    close(fd);
    REAL(close)(sock);
    _exit(0);
}
