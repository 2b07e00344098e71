// A shared-memory connection handed to a new image by exec. The rings cannot go with it: a process's own ring
// is sealed against new writable mappings once it has mapped it (so that the peer can never map it writable),
// and exec takes that mapping away. So the exec wrapper leaves the connection with a relay: a process forked
// for it that keeps the rings and copies between them and a TCP connection of its own, whose other end takes the
// connection's descriptor numbers in the new image. The new image sees a TCP socket that carries the data, in
// order; the peer keeps its shared-memory connection and sees no change. That is what inetd-like servers
// need (the accepted socket moved to stdin and stdout, then exec), and sshd's re-exec, and socat's EXEC.
//
// The relay starts copying only once the exec has happened: it waits for the end of a close-on-exec pipe, and a
// byte on it (exec failed) sends it away without copying, the descriptors back as they were. It is a holder of
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
// VMSOCK_RELAYED, and its constructor puts them in place (exec.c). Only descriptors the parent lets through (not
// close-on-exec) get a relay: one a file action copies from a close-on-exec descriptor ends for the new image.
// Not covered: vfork then exec (the relay would be forked from a child sharing its parent's memory): the new
// image's connection ends there. The new image's socket has the connection's addresses, but ports of its own.
#include "preload.h"

#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

// MARK: In the process that execs

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
            REAL(connect)(client, (struct sockaddr *)&peer, peer_length) == 0) {
            server = REAL(accept4)(listener, NULL, NULL, SOCK_CLOEXEC);
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

static void run_relay(struct vmsp_conn *c, int fd, int sock, int go, ino_t app_inode) __attribute__((noreturn));

// Forks the relay for the connection `fd` names (twice: the new image never sees it as a child). Returns the
// new image's end, or -1.
static int start_relay(struct vmsp_conn *c, int fd, int *go_write) {
    int pair[2], go[2];
    if (relay_pair(fd, pair) != 0) return -1;
    if (pipe2(go, O_CLOEXEC) != 0) {
        REAL(close)(pair[0]);
        REAL(close)(pair[1]);
        return -1;
    }
    struct stat app;
    pid_t first = fstat(pair[0], &app) == 0 ? vmsp_fork_quietly() : -1;
    if (first == 0) {
        if (vmsp_fork_quietly() != 0) _exit(0);
        REAL(close)(go[1]);
        REAL(close)(pair[0]);
        run_relay(c, fd, pair[1], go[0], app.st_ino);
    }
    REAL(close)(pair[1]);
    REAL(close)(go[0]);
    if (first < 0) {
        REAL(close)(pair[0]);
        REAL(close)(go[1]);
        return -1;
    }
    while (waitpid(first, NULL, 0) < 0 && errno == EINTR) {}
    // The new image's socket as the old one was: O_NONBLOCK (its open file description's), TCP_NODELAY.
    if (atomic_load(&c->nonblocking)) REAL(fcntl)(pair[0], F_SETFL, REAL(fcntl)(pair[0], F_GETFL) | O_NONBLOCK);
    if (atomic_load(&c->app_nodelay)) {
        int on = 1;
        (void)REAL(setsockopt)(pair[0], IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    }
    *go_write = go[1];
    return pair[0];
}

void vmsp_relay_prepare(struct vmsp_relays *plan) {
    memset(plan, 0, sizeof *plan);
    if (vmsp_inside || !vmsp_holders_is_self()) return;  // a vfork child shares its parent's memory: not there
    int high = atomic_load(&vmsp_table_high);
    for (int fd = 0; fd <= high && fd < vmsp_table_size; fd++) {
        struct vmsp_ref *r = vmsp_lookup(fd);
        int flags = r ? REAL(fcntl)(fd, F_GETFD) : -1;
        if (flags < 0 || (flags & FD_CLOEXEC) || plan->fds == VMSP_RELAY_FDS) continue;
        int which = 0;
        while (which < plan->count && plan->conn[which] != r->conn) which++;
        if (which == plan->count) {
            if (plan->count == VMSP_RELAYS) continue;
            int go = -1, app = start_relay(r->conn, fd, &go);
            if (app < 0) {
                vmsp_debug("exec: fd %d is a shared-memory connection and no relay could be made for it: it ends for "
                           "the new image", fd);
                continue;
            }
            plan->conn[which] = r->conn;
            plan->app[which] = app;
            plan->go[which] = go;
            plan->count++;
        }
        plan->fd[plan->fds] = fd;
        plan->relay[plan->fds] = which;
        plan->saved[plan->fds] = -1;
        plan->fds++;
    }
}

int vmsp_relay_carries(const struct vmsp_relays *plan, int fd) {
    for (int i = 0; i < plan->fds; i++) if (plan->fd[i] == fd) return 1;
    return 0;
}

void vmsp_relay_swap(struct vmsp_relays *plan) {
    for (int i = 0; i < plan->fds; i++) {
        int fd = plan->fd[i];
        plan->saved[i] = REAL(fcntl)(fd, F_DUPFD_CLOEXEC, 0);
        if (plan->saved[i] < 0 || REAL(dup2)(plan->app[plan->relay[i]], fd) < 0) continue;
        vmsp_debug("exec: fd %d, a shared-memory connection, goes to the new image as a TCP socket through a relay "
                   "process (vmsock-run cannot carry the rings across exec)", fd);
    }
}

// exec failed: the descriptors back, and each relay sent away.
void vmsp_relay_exec_failed(struct vmsp_relays *plan) {
    for (int i = 0; i < plan->fds; i++) {
        if (plan->saved[i] < 0) continue;
        REAL(dup2)(plan->saved[i], plan->fd[i]);
        REAL(close)(plan->saved[i]);
    }
    for (int i = 0; i < plan->count; i++) {
        char byte = 1;
        (void)REAL(write)(plan->go[i], &byte, 1);
        REAL(close)(plan->go[i]);
        REAL(close)(plan->app[i]);
    }
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
void vmsp_relay_spawned(struct vmsp_relays *plan, int started) {
    for (int i = 0; i < plan->count; i++) {
        char byte = 1;
        if (!started) (void)REAL(write)(plan->go[i], &byte, 1);
        REAL(close)(plan->go[i]);
        REAL(close)(plan->app[i]);
    }
}

// MARK: In the relay

// Whether the relay may read the connection: only once no other process holds it. Another holder (the parent
// that forked the exec'd child and kept its copy, a program that leaked the socket into a helper it runs) reads
// it itself, and a relay reading ahead for a new image that may never read would take its bytes. inetd's parent
// closes its copy at once. Once alone, the relay stays alone: only a holder's fork adds one.
static int alone(struct vmsp_conn *c) {
    static int known;
    if (!known) known = !vmsp_holders_others(c);
    return known;
}

// The relay keeps its connection's descriptors and nothing else of the old image's: the others' holds are
// given up as a close would (so that their last close is still seen), and every other descriptor is closed, so
// that no pipe or socket of the program stays open through it.
static void keep_only(struct vmsp_conn *c, int fd, int sock, int go) {
    int high = atomic_load(&vmsp_table_high);
    for (int other = 0; other <= high && other < vmsp_table_size; other++) {
        struct vmsp_ref *r = vmsp_lookup(other);
        if (!r || other == fd) continue;
        if (r->conn == c) { close(other); continue; }  // one more name of ours: the table's count drops
        if (!vmsp_holders_leave(r->conn)) {
            __atomic_or_fetch((uint32_t *)(r->conn->local + 640), 4u, __ATOMIC_SEQ_CST);  // closed
            vmsp_drain_wakeups(r->conn, other);
        }
    }
    int keep[] = { fd, sock, go, c->control_fd, c->space_bell_fd, c->peer_space_bell_fd, c->data_bell_fd,
                   c->peer_data_bell_fd };
    int count = (int)(sizeof keep / sizeof keep[0]);
    for (int i = 1; i < count; i++) {  // sorted, for the gaps between them
        for (int j = i; j > 0 && keep[j - 1] > keep[j]; j--) { int t = keep[j]; keep[j] = keep[j - 1]; keep[j - 1] = t; }
    }
    unsigned int from = 0;
    for (int i = 0; i <= count; i++) {
        unsigned int to = i < count ? (unsigned int)keep[i] : ~0u;
        if (i < count && keep[i] < 0) continue;
        if (to > from && syscall(SYS_close_range, from, to - 1, 0) != 0) {
            for (unsigned int n = from; n < to && n < 65536; n++) REAL(close)((int)n);
        }
        if (i < count) from = (unsigned int)keep[i] + 1;
    }
}

// Whether any process still has the socket `inode` open: the new image (or a child of it) that shut it down
// for writing, rather than closed it. Processes /proc does not show us are not seen.
static int socket_held(ino_t inode) {
    char wanted[48];
    snprintf(wanted, sizeof wanted, "socket:[%llu]", (unsigned long long)inode);
    DIR *proc = opendir("/proc");
    if (!proc) return 0;
    int found = 0;
    for (struct dirent *process; !found && (process = readdir(proc));) {
        if (process->d_name[0] < '1' || process->d_name[0] > '9') continue;
        char path[64];
        snprintf(path, sizeof path, "/proc/%s/fd", process->d_name);
        DIR *fds = opendir(path);
        if (!fds) continue;
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

static void run_relay(struct vmsp_conn *c, int fd, int sock, int go, ino_t app_inode) {
    static struct leg down, up;  // peer to new image, new image to peer
    vmsp_inside = 0;
    setsid();  // a terminal's signals to the program's group are not for the relay
    prctl(PR_SET_NAME, "vmsock-relay");
    signal(SIGPIPE, SIG_IGN);
    keep_only(c, fd, sock, go);
    char byte;
    ssize_t n;
    while ((n = REAL(read)(go, &byte, 1)) < 0 && errno == EINTR) {}
    REAL(close)(go);
    if (n != 0) { close(fd); _exit(0); }  // exec failed: the old image keeps the connection
    REAL(fcntl)(sock, F_SETFL, REAL(fcntl)(sock, F_GETFL) | O_NONBLOCK);
    int up_shut = 0, failed = 0;
    while (!failed && !(up.ended && down.ended)) {
        int moved = 0;
        int reads = !down.ended && down.end == 0 && alone(c);
        if (reads) {
            n = recv(fd, down.bytes, sizeof down.bytes, MSG_DONTWAIT);
            if (n > 0) { down.end = (size_t)n; moved = 1; }
            else if (n == 0) { down.ended = 1; (void)REAL(shutdown)(sock, SHUT_WR); moved = 1; }
            else if (errno != EAGAIN && errno != EINTR) { reset(sock); failed = 1; }
        }
        if (down.end > down.start) {
            n = REAL(send)(sock, down.bytes + down.start, down.end - down.start, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n > 0) { down.start += (size_t)n; moved = 1; }
            else if (errno != EAGAIN && errno != EINTR) failed = 1;  // the new image is gone
            if (down.start == down.end) down.start = down.end = 0;
        }
        if (!up.ended && up.end == 0) {
            n = REAL(recv)(sock, up.bytes, sizeof up.bytes, MSG_DONTWAIT);
            if (n > 0) { up.end = (size_t)n; moved = 1; }
            else if (n == 0) { up.ended = 1; moved = 1; }
            else if (errno != EAGAIN && errno != EINTR) failed = 1;
        }
        if (up.end > up.start) {
            n = send(fd, up.bytes + up.start, up.end - up.start, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n > 0) { up.start += (size_t)n; moved = 1; }
            else if (errno != EAGAIN && errno != EINTR) { reset(sock); failed = 1; }
            if (up.start == up.end) up.start = up.end = 0;
        }
        if (up.ended && up.end == 0 && !up_shut) {
            // Shut down or closed? Closed: nobody reads what the peer sends any more, and our close is the
            // new image's. Shut down: the peer sees the end of stream, and the other way goes on.
            if (down.ended || !socket_held(app_inode)) break;
            shutdown(fd, SHUT_WR);
            up_shut = 1;
        }
        if (moved || failed) continue;
        short on_fd = (short)((reads ? POLLIN : 0) | (up.end ? POLLOUT : 0));
        short on_sock = (short)((!up.ended && up.end == 0 ? POLLIN : 0) | (down.end ? POLLOUT : 0));
        struct pollfd wait[2] = { { .fd = on_fd ? fd : -1, .events = on_fd }, { .fd = on_sock ? sock : -1, .events = on_sock } };
        // Not alone yet: looks again every 50 ms (nothing wakes the relay when another holder closes).
        int ready = poll(wait, 2, alone(c) || down.ended ? -1 : 50);
        if (ready > 0 && (wait[1].revents & (POLLERR | POLLNVAL))) failed = 1;  // the new image reset its socket
    }
    close(fd);
    REAL(close)(sock);
    _exit(0);
}
