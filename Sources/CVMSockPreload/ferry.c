// A shared-memory connection handed to a new image by exec. The rings cannot go with it: a process's own ring
// is sealed against new writable mappings once it has mapped it (so that the peer can never map it writable),
// and exec takes that mapping away. So the exec wrapper leaves the connection with a relay: a process forked
// for it that keeps the rings and copies between them and a TCP connection of its own, whose other end takes the
// connection's descriptor numbers in the new image. The new image sees a TCP socket that carries the data, in
// order; the peer keeps its shared-memory connection and sees no change. That is what inetd-like servers
// need (the accepted socket moved to stdin and stdout, then exec), and sshd's re-exec, and socat's EXEC.
//
// The relay process itself, from its fork to its end: relay.c.
//
// posix_spawn keeps the parent's descriptors as they are: the relays' sockets go to the new image in
// VMSOCK_RELAYED, and its constructor puts them in place (exec.c). Descriptors the parent lets through get a relay:
// those not close-on-exec, and those a file action copies to a number in the new image (actions.c).
// A vfork child of a process with connections is a fork's (real.c); a raw clone's is not covered: the new image's
// connection ends there. The new image's socket has the connection's addresses, but ports of its own.
#include "preload.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

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

void vmsp_relay_forget_image(struct vmsp_conn *c, pid_t image) {
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
    pid_t image = getpid();  // after exec; a spawn's child sends its own with the start (relay.c)
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
        vmsp_run_relay(c, fd, pair[1], go[0], app.st_ino, may_claim, image);
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
// it (relay.c, relay_turn): as its standard input, output or error (this process's, which a spawn's file actions may
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
        if (plan->go[i] >= 0) vmsp_relay_forget_image(plan->conn[i], getpid());
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
