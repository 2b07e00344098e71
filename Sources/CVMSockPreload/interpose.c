// The interposed libc entry points. A descriptor that is not a shared-memory connection (a NULL slot in the
// table) goes straight to libc: one bounds check and one atomic load. So does every call made while the
// library's own code runs on this thread (vmsp_inside), which keeps the Swift set-up from re-entering itself.
#include "preload.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <time.h>
#include <linux/close_range.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/syscall.h>
#include <unistd.h>

void __chk_fail(void) __attribute__((noreturn));

#define OURS(fd) (__builtin_expect(vmsp_lookup(fd) != NULL, 0) && !vmsp_inside)

static ssize_t recv_ours(int fd, const struct iovec *iov, int iovcnt, int flags, int *handled) {
    struct vmsp_ref *r = vmsp_enter(fd);
    if (!r) { *handled = 0; return 0; }
    *handled = 1;
    ssize_t n = vmsp_recv(r->conn, fd, iov, iovcnt, flags);
    int saved = errno;
    vmsp_leave(r);
    errno = saved;
    return n;
}

static ssize_t send_ours(int fd, const struct iovec *iov, int iovcnt, int flags, int from_write, int *handled) {
    struct vmsp_ref *r = vmsp_enter(fd);
    if (!r) { *handled = 0; return 0; }
    *handled = 1;
    ssize_t n = vmsp_send(r->conn, fd, iov, iovcnt, flags, from_write);
    int saved = errno;
    vmsp_leave(r);
    errno = saved;
    return n;
}

// MARK: Data

ssize_t read(int fd, void *buf, size_t count) {
    if (OURS(fd)) {
        struct iovec v = { buf, count };
        int handled;
        ssize_t n = recv_ours(fd, &v, 1, 0, &handled);
        if (handled) return n;
    }
    return REAL(read)(fd, buf, count);
}

ssize_t __read_chk(int fd, void *buf, size_t count, size_t buflen) {
    if (count > buflen) __chk_fail();
    if (OURS(fd)) return read(fd, buf, count);
    return REAL(read_chk)(fd, buf, count, buflen);
}

ssize_t write(int fd, const void *buf, size_t count) {
    if (OURS(fd)) {
        struct iovec v = { (void *)buf, count };
        int handled;
        ssize_t n = send_ours(fd, &v, 1, 0, 1, &handled);
        if (handled) return n;
    }
    return REAL(write)(fd, buf, count);
}

ssize_t readv(int fd, const struct iovec *iov, int iovcnt) {
    if (OURS(fd)) {
        if (iovcnt < 0 || iovcnt > IOV_MAX) { errno = EINVAL; return -1; }
        int handled;
        ssize_t n = recv_ours(fd, iov, iovcnt, 0, &handled);
        if (handled) return n;
    }
    return REAL(readv)(fd, iov, iovcnt);
}

ssize_t writev(int fd, const struct iovec *iov, int iovcnt) {
    if (OURS(fd)) {
        if (iovcnt < 0 || iovcnt > IOV_MAX) { errno = EINVAL; return -1; }
        int handled;
        ssize_t n = send_ours(fd, iov, iovcnt, 0, 1, &handled);
        if (handled) return n;
    }
    return REAL(writev)(fd, iov, iovcnt);
}

// preadv2 and pwritev2 at offset -1 (the current position) are readv and writev on a socket, with RWF_NOWAIT as
// MSG_DONTWAIT; the other flags mean nothing there. An offset, or a flag the kernel does not know, is its error.
#ifndef RWF_NOAPPEND
#define RWF_NOAPPEND 0x20
#endif
enum { KNOWN_RWF = RWF_HIPRI | RWF_DSYNC | RWF_SYNC | RWF_NOWAIT | RWF_APPEND | RWF_NOAPPEND };

ssize_t preadv2(int fd, const struct iovec *iov, int iovcnt, off_t offset, int flags) {
    if (offset == -1 && !(flags & ~KNOWN_RWF) && OURS(fd)) {
        if (iovcnt < 0 || iovcnt > IOV_MAX) { errno = EINVAL; return -1; }
        int handled;
        ssize_t n = recv_ours(fd, iov, iovcnt, (flags & RWF_NOWAIT) ? MSG_DONTWAIT : 0, &handled);
        if (handled) return n;
    }
    return REAL(preadv2)(fd, iov, iovcnt, offset, flags);
}

ssize_t pwritev2(int fd, const struct iovec *iov, int iovcnt, off_t offset, int flags) {
    if (offset == -1 && !(flags & ~KNOWN_RWF) && OURS(fd)) {
        if (iovcnt < 0 || iovcnt > IOV_MAX) { errno = EINVAL; return -1; }
        int handled;
        ssize_t n = send_ours(fd, iov, iovcnt, (flags & RWF_NOWAIT) ? MSG_DONTWAIT : 0, 1, &handled);
        if (handled) return n;
    }
    return REAL(pwritev2)(fd, iov, iovcnt, offset, flags);
}

ssize_t preadv64v2(int fd, const struct iovec *iov, int iovcnt, off_t offset, int flags) {
    return preadv2(fd, iov, iovcnt, offset, flags);
}

ssize_t pwritev64v2(int fd, const struct iovec *iov, int iovcnt, off_t offset, int flags) {
    return pwritev2(fd, iov, iovcnt, offset, flags);
}

ssize_t recv(int fd, void *buf, size_t len, int flags) {
    if (OURS(fd)) {
        struct iovec v = { buf, len };
        int handled;
        ssize_t n = recv_ours(fd, &v, 1, flags, &handled);
        if (handled) return n;
    }
    return REAL(recv)(fd, buf, len, flags);
}

ssize_t __recv_chk(int fd, void *buf, size_t len, size_t buflen, int flags) {
    if (len > buflen) __chk_fail();
    if (OURS(fd)) return recv(fd, buf, len, flags);
    return REAL(recv_chk)(fd, buf, len, buflen, flags);
}

ssize_t send(int fd, const void *buf, size_t len, int flags) {
    if (OURS(fd)) {
        struct iovec v = { (void *)buf, len };
        int handled;
        ssize_t n = send_ours(fd, &v, 1, flags, 0, &handled);
        if (handled) return n;
    }
    return REAL(send)(fd, buf, len, flags);
}

// A connected TCP socket reports no source address: the length comes back 0, as the kernel does.
ssize_t recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *from, socklen_t *fromlen) {
    if (OURS(fd)) {
        struct iovec v = { buf, len };
        int handled;
        ssize_t n = recv_ours(fd, &v, 1, flags, &handled);
        if (handled) {
            if (n >= 0 && from && fromlen) *fromlen = 0;
            return n;
        }
    }
    return REAL(recvfrom)(fd, buf, len, flags, from, fromlen);
}

ssize_t __recvfrom_chk(int fd, void *buf, size_t len, size_t buflen, int flags, struct sockaddr *from, socklen_t *fromlen) {
    if (len > buflen) __chk_fail();
    if (OURS(fd)) return recvfrom(fd, buf, len, flags, from, fromlen);
    return REAL(recvfrom_chk)(fd, buf, len, buflen, flags, from, fromlen);
}

// The destination is ignored on a connected stream socket, as Linux TCP does.
ssize_t sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *to, socklen_t tolen) {
    if (OURS(fd)) {
        struct iovec v = { (void *)buf, len };
        int handled;
        ssize_t n = send_ours(fd, &v, 1, flags, 0, &handled);
        if (handled) return n;
    }
    return REAL(sendto)(fd, buf, len, flags, to, tolen);
}

ssize_t recvmsg(int fd, struct msghdr *msg, int flags) {
    if (OURS(fd)) {
        if (msg->msg_iovlen > IOV_MAX) { errno = EMSGSIZE; return -1; }
        int handled;
        ssize_t n = recv_ours(fd, msg->msg_iov, (int)msg->msg_iovlen, flags, &handled);
        if (handled) {
            if (n >= 0) {
                msg->msg_namelen = 0;
                msg->msg_controllen = 0;
                msg->msg_flags = 0;
            }
            return n;
        }
    }
    return REAL(recvmsg)(fd, msg, flags);
}

ssize_t sendmsg(int fd, const struct msghdr *msg, int flags) {
    if (OURS(fd)) {
        if (msg->msg_iovlen > IOV_MAX) { errno = EMSGSIZE; return -1; }
        int handled;
        ssize_t n = send_ours(fd, msg->msg_iov, (int)msg->msg_iovlen, flags, 0, &handled);
        if (handled) return n;
    }
    if (msg && msg->msg_controllen) return vmsp_sendmsg_passing(fd, msg, flags);  // descriptors passed (passing.c)
    return REAL(sendmsg)(fd, msg, flags);
}

ssize_t sendfile(int out_fd, int in_fd, off_t *offset, size_t count) {
    if (OURS(out_fd)) {
        struct vmsp_ref *r = vmsp_enter(out_fd);
        if (r) {
            ssize_t n = vmsp_sendfile(r->conn, out_fd, in_fd, offset, count);
            int saved = errno;
            vmsp_leave(r);
            errno = saved;
            return n;
        }
    }
    return REAL(sendfile)(out_fd, in_fd, offset, count);
}

ssize_t sendfile64(int out_fd, int in_fd, off_t *offset, size_t count) { return sendfile(out_fd, in_fd, offset, count); }

// recvmmsg and sendmmsg on a stream socket: one message after another, as the kernel does for TCP (a later
// message is tried only while the earlier ones were complete; the first failure is returned only alone).
int recvmmsg(int fd, struct mmsghdr *messages, unsigned int count, int flags, struct timespec *timeout) {
    if (!OURS(fd)) return REAL(recvmmsg)(fd, messages, count, flags, timeout);
    unsigned int done = 0;
    int first_flags = flags & ~MSG_WAITFORONE;
    while (done < count) {
        ssize_t n = recvmsg(fd, &messages[done].msg_hdr, done > 0 && (flags & MSG_WAITFORONE) ? first_flags | MSG_DONTWAIT : first_flags);
        if (n < 0) { if (done > 0) break; return -1; }
        messages[done++].msg_len = (unsigned int)n;
        if (n == 0) break;
    }
    return (int)done;
}

int sendmmsg(int fd, struct mmsghdr *messages, unsigned int count, int flags) {
    int passing = 0;
    for (unsigned int i = 0; i < count && !OURS(fd) && !passing; i++) {
        passing = messages[i].msg_hdr.msg_controllen != 0 && vmsp_passes_ours(&messages[i].msg_hdr);
    }
    if (!OURS(fd) && !passing) return REAL(sendmmsg)(fd, messages, count, flags);
    unsigned int done = 0;
    while (done < count) {
        ssize_t n = sendmsg(fd, &messages[done].msg_hdr, flags);
        if (n < 0) { if (done > 0) break; return -1; }
        messages[done++].msg_len = (unsigned int)n;
    }
    return (int)done;
}

// MARK: Connections

// The socket's TCP state (TCP_CLOSE before any connect or listen), or -1 when it is not a TCP socket, in two calls.
// SO_PROTOCOL keeps out everything but protocol number 6 (UDP, SCTP, Unix, MPTCP's 262); of those, only TCP
// answers TCP_INFO: raw IPPROTO_TCP sockets and other families' protocol 6 (AF_PACKET) refuse the level. (Four calls
// before: SO_DOMAIN, SO_TYPE, SO_PROTOCOL, then TCP_INFO; ab's connect is interposed twice per connection.)
static int tcp_state(int fd) {
    int protocol;
    socklen_t length = sizeof protocol;
    if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &protocol, &length) != 0 || protocol != IPPROTO_TCP) return -1;
    struct tcp_info info;
    length = sizeof info;
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &length) != 0) return -1;
    return info.tcpi_state;
}

// A connect that goes to TCP: the kernel's. --stats counts the connections it begins, also for one made without a
// look at the socket (a short-lived destination, brief.c): EINPROGRESS (or EINTR) begins one, and marks the
// descriptor; 0 is a blocking connect's success, or the call that completes a marked one (ab asks so), or a UDP
// socket's connect, which SO_TYPE tells apart. A failed connect counts in neither. (close clears the mark; a
// descriptor closed another way may leave one, and a later blocking connect on its number goes uncounted.)
static int tcp_connect(int fd, const struct sockaddr *address, socklen_t length) {
    int result = REAL(connect)(fd, address, length);
    if (!vmsp_counting() || (result != 0 && errno != EINPROGRESS && errno != EINTR)) return result;
    int saved = errno, type = 0;
    socklen_t size = sizeof type;
    if (result != 0) {
        atomic_store_explicit(&vmsp_connect_began[fd], 1, memory_order_relaxed);
        vmsp_tally(VMSP_CONNECT_TCP);
    } else if (atomic_exchange_explicit(&vmsp_connect_began[fd], 0, memory_order_relaxed) == 0 &&
               getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &size) == 0 && type == SOCK_STREAM) {
        vmsp_tally(VMSP_CONNECT_TCP);
    }
    errno = saved;
    return result;
}

int connect(int fd, const struct sockaddr *address, socklen_t length) {
    if (vmsp_inside || !address || (address->sa_family != AF_INET && address->sa_family != AF_INET6) ||
        (unsigned)fd >= (unsigned)vmsp_table_size || vmsp_lookup(fd)) {
        return REAL(connect)(fd, address, length);
    }
    // A short-lived destination first: its connects go to TCP without the two getsockopt calls that tell a TCP
    // socket's first connect (ab makes a second connect per connection, to learn how its first ended). --debug
    // looks first, so that it prints a line only for a first connect.
    uint64_t key = vmsp_brief_key(address, length);
    int run = 0, looked = vmsp_debug_enabled();
    if (!looked && vmsp_brief_prefers_tcp(key, &run)) return tcp_connect(fd, address, length);
    if (tcp_state(fd) != TCP_CLOSE) {
        // Not TCP, or connected (or connecting) already: a socket whose earlier connect went to TCP stays TCP, as
        // the listener took it so. A probe of shared memory the line above granted goes to the next connect.
        if (!looked) vmsp_brief_probe_next(key);
        return REAL(connect)(fd, address, length);
    }
    char where[64] = "", reason[256] = "";
    if (vmsp_debug_enabled()) vmsp_format_address(address, length, where, sizeof where);
    if (!vmsp_connects_allowed()) {
        vmsp_debug("connect fd %d to %s: tcp (this process was forked while another thread of its parent set "
                   "up a connection, so its copy of that state may be half made)", fd, where);
        return tcp_connect(fd, address, length);
    }
    const char *uring = vmsp_uring_reason();
    if (uring) {
        vmsp_debug("connect fd %d to %s: tcp (%s, and io_uring moves a socket's bytes past this library)", fd, where, uring);
        return tcp_connect(fd, address, length);
    }
    if (looked && vmsp_brief_prefers_tcp(key, &run)) {
        vmsp_debug("connect fd %d to %s: tcp (short-lived: this process's last %d shared-memory connections there "
                   "each ended within %d ms having moved under 1 MiB, and TCP sets such connections up faster)",
                   fd, where, run, vmsp_brief_limit_ms());
        return tcp_connect(fd, address, length);
    }
    int flags = REAL(fcntl)(fd, F_GETFL);
    vmsp_link_info info;
    int saved = errno;
    vmsp_inside = 1;
    int welcomed = vmsock_preload_connect(fd, address, length, &info, reason, sizeof reason);
    vmsp_inside = 0;
    errno = saved;
    if (!welcomed) {
        vmsp_debug("connect fd %d to %s: tcp (%s)", fd, where, reason);
        return tcp_connect(fd, address, length);
    }
    // Agreed: from here this connection is shared memory or nothing. The TCP connection is made as the
    // application asked (blocking, or EINPROGRESS and then POLLOUT/SO_ERROR); the listener waits for it.
    struct vmsp_ref *r = vmsp_conn_new(&info, flags >= 0 && (flags & O_NONBLOCK));
    if (!r) {
        vmsp_inside = 1;
        vmsock_preload_release(info.owner);
        vmsp_inside = 0;
        vmsp_debug("connect fd %d to %s: tcp (out of memory after the welcome; the listener drops it)", fd, where);
        errno = saved;
        return tcp_connect(fd, address, length);
    }
    int result = REAL(connect)(fd, address, length);
    saved = errno;
    if (result == 0 || errno == EINPROGRESS || errno == EINTR) {
        atomic_store(&r->conn->tcp_ready, result == 0);
        vmsp_wake_socket_ready(r->conn, fd);
        r->brief_key = key;
        r->opened_ns = vmsp_now_ns();
        r->opener = getpid();
        vmsp_install(fd, r);  // the connection's first user reference now stands for the table's
        vmsp_epoll_adopt(fd);  // a set it joined before the connect now reports from the rings
        vmsp_tally(VMSP_CONNECT_SHM);
        vmsp_debug("connect fd %d to %s: shared memory", fd, where);
    } else {
        vmsp_leave(r);  // releases the link: its control socket closes, and the listener drops it
        vmsp_debug("connect fd %d to %s: failed (%s)", fd, where, strerror(saved));
    }
    errno = saved;
    return result;
}

atomic_int vmsp_listening_end;

int vmsp_register_listener(int fd, char *reason, size_t capacity) {
    if (!vmsp_listen_tried) vmsp_listen_tried = getpid();  // first: a child forked from here on has tried too
    vmsp_welcome_book_init();  // before any child forks: they read it at their accepts
    vmsp_inside = 1;
    int registered = vmsock_preload_listen(fd, reason, capacity);
    vmsp_inside = 0;
    if (registered) {
        vmsp_listen_owner = getpid();
        int end = atomic_load(&vmsp_listening_end);
        while (fd >= end && !atomic_compare_exchange_weak(&vmsp_listening_end, &end, fd + 1)) {}
        vmsp_note_state();
        atomic_store(&vmsp_listening[fd], 1);
        // io_uring set up by another thread since the look before: its withdrawal may have missed this one.
        if (vmsp_welcome_book_uring() || vmsp_uring_seen()) {
            vmsp_forget_listener(fd);
            snprintf(reason, capacity, "this process set up io_uring meanwhile");
            return 0;
        }
    }
    return registered;
}

int listen(int fd, int backlog) {
    int result = REAL(listen)(fd, backlog);
    if (result != 0 || vmsp_inside || (unsigned)fd >= (unsigned)vmsp_table_size || atomic_load(&vmsp_listening[fd]) ||
        tcp_state(fd) < 0) {
        return result;
    }
    int saved = errno;
    struct sockaddr_storage bound;
    socklen_t length = sizeof bound;
    char where[64] = "?", reason[256] = "";
    const char *uring;
    if (getsockname(fd, (struct sockaddr *)&bound, &length) == 0) vmsp_format_address((struct sockaddr *)&bound, length, where, sizeof where);
    if (!vmsp_own_listens_allowed()) {
        vmsp_debug("listen fd %d on %s: tcp only (this process is a forked child of one that listened, or was "
                   "forked while another thread of its parent set up a connection)", fd, where);
    } else if (vmsp_welcome_book_closed()) {
        vmsp_debug("listen fd %d on %s: tcp only (a process of this family uses io_uring, or handed a listening "
                   "socket to a new image)", fd, where);
    } else if (!vmsp_listeners_allowed()) {
        vmsp_debug("listen fd %d on %s: tcp only (this process forked before it listened: a child might accept)", fd, where);
    } else if ((uring = vmsp_uring_reason())) {
        vmsp_debug("listen fd %d on %s: tcp only (%s, and io_uring moves a socket's bytes past this library)", fd, where, uring);
    } else {
        int registered = vmsp_register_listener(fd, reason, sizeof reason);
        vmsp_debug("listen fd %d on %s: %s%s%s", fd, where, registered ? "shared memory offered" : "tcp only (",
                   registered ? "" : reason, registered ? "" : ")");
    }
    errno = saved;
    return result;
}

// The address accept wrote, if it wrote it whole and it is an IPv4 or IPv6 one (a Unix listener is never ours).
static const struct sockaddr *whole_address(const struct sockaddr *address, socklen_t capacity, socklen_t length) {
    if (!address || length > capacity || length > sizeof(struct sockaddr_storage)) return NULL;
    if (address->sa_family == AF_INET && length >= sizeof(struct sockaddr_in)) return address;
    if (address->sa_family == AF_INET6 && length >= sizeof(struct sockaddr_in6)) return address;
    return NULL;
}

// `address` (of `capacity` bytes before the call, `*written` after) is where accept wrote the peer's address for
// the program: when it is there whole, getpeername is not asked again.
static void after_accept(int listener, int fd, int flags, const struct sockaddr *address, socklen_t capacity,
                         const socklen_t *written) {
    if (fd < 0 || vmsp_inside || (unsigned)listener >= (unsigned)vmsp_table_size) return;
    if (!atomic_load(&vmsp_listening[listener]) || (unsigned)fd >= (unsigned)vmsp_table_size) {
        if (!vmsp_counting()) return;
        int saved = errno;
        if (tcp_state(fd) >= 0) {
            vmsp_tally(VMSP_ACCEPT_TCP);
            struct sockaddr_storage peer;
            socklen_t length = sizeof peer;
            char where[64] = "?";
            if (vmsp_debug_enabled() && getpeername(fd, (struct sockaddr *)&peer, &length) == 0) {
                vmsp_format_address((struct sockaddr *)&peer, length, where, sizeof where);
            }
            vmsp_debug("accept fd %d from %s: tcp (its listener offers no shared memory)", fd, where);
        }
        errno = saved;
        return;
    }
    int saved = errno;
    struct sockaddr_storage peer;
    socklen_t length = sizeof peer;
    char where[64] = "?", reason[256] = "";
    peer.ss_family = AF_UNSPEC;  // a peer gone before getpeername: no hello can be found for it
    if (written && whole_address(address, capacity, *written)) {
        memcpy(&peer, address, *written);
        length = *written;
    } else if (getpeername(fd, (struct sockaddr *)&peer, &length) != 0) {
        peer.ss_family = AF_UNSPEC;
    }
    if (peer.ss_family != AF_UNSPEC && vmsp_debug_enabled()) {
        vmsp_format_address((struct sockaddr *)&peer, length, where, sizeof where);
    }
    vmsp_link_info info;
    int attached;
    if (!vmsp_welcome_possible(&peer)) {
        // No hello answered for its port: a plain TCP client (no claim, no look-up).
        if (vmsp_debug_enabled()) {
            pid_t owner = vmsp_listen_owner;
            if (peer.ss_family == AF_UNSPEC) {
                snprintf(reason, sizeof reason, "the peer was gone before the accept");
            } else if (owner != getpid() && kill(owner, 0) != 0 && errno == ESRCH) {
                snprintf(reason, sizeof reason, "no hello from %s: process %d, which offered shared memory on this "
                         "listener, has exited (a daemon that listened before it forked away)", where, (int)owner);
            } else {
                snprintf(reason, sizeof reason, "no hello from %s: the peer is not under vmsock-run", where);
            }
        }
        attached = 0;
    } else if (getpid() != vmsp_listen_owner) {
        // Another process (our parent) registered the listener and welcomed the connector: claim its link.
        attached = vmsp_claim(listener, &peer, &info, reason, sizeof reason);
        if (attached == -2) {
            // The connector may be writing to rings: reading its wake-up bytes as data would be worse than this.
            REAL(shutdown)(fd, SHUT_RDWR);
            vmsp_debug("accept fd %d from %s: shut down (claiming its link failed: %s)", fd, where, reason);
            errno = saved;
            return;
        }
        if (attached < 0) attached = 0;
    } else {
        vmsp_inside = 1;
        attached = vmsock_preload_accept(listener, fd, &info, reason, sizeof reason);
        vmsp_inside = 0;
    }
    if (attached) {
        // This process uses io_uring (rawcall.c), which would read the socket past the rings: a link welcomed
        // before that was seen ends here, visibly, rather than have its wake-up bytes read as data.
        struct vmsp_ref *r = vmsp_uring_seen() ? NULL : vmsp_conn_new(&info, (flags & SOCK_NONBLOCK) != 0);
        if (r) {
            atomic_store(&r->conn->tcp_ready, 1);
            vmsp_wake_socket_ready(r->conn, fd);
            vmsp_install(fd, r);
            vmsp_tally(VMSP_ACCEPT_SHM);
            vmsp_debug("accept fd %d from %s: shared memory", fd, where);
        } else {
            // The connector will write to rings nobody reads: end the connection rather than lose bytes.
            vmsp_inside = 1;
            if ((uintptr_t)info.owner & 1) vmsp_claim_release((void *)((uintptr_t)info.owner & ~(uintptr_t)1));
            else vmsock_preload_release(info.owner);
            vmsp_inside = 0;
            REAL(shutdown)(fd, SHUT_RDWR);
            vmsp_debug("accept fd %d from %s: shut down (%s)", fd, where,
                       vmsp_uring_seen() ? "this process uses io_uring, and the link was welcomed before that"
                                         : "out of memory for a welcomed link");
        }
    } else {
        vmsp_tally(VMSP_ACCEPT_TCP);
        vmsp_debug("accept fd %d from %s: tcp (%s)", fd, where, reason);
    }
    errno = saved;
}

int accept(int fd, struct sockaddr *address, socklen_t *length) {
    socklen_t capacity = address && length ? *length : 0;
    int result = REAL(accept)(fd, address, length);
    after_accept(fd, result, 0, address, capacity, length);
    return result;
}

int accept4(int fd, struct sockaddr *address, socklen_t *length, int flags) {
    socklen_t capacity = address && length ? *length : 0;
    int result = REAL(accept4)(fd, address, length, flags);
    after_accept(fd, result, flags, address, capacity, length);
    return result;
}

int shutdown(int fd, int how) {
    if (OURS(fd)) {
        struct vmsp_ref *r = vmsp_enter(fd);
        if (r) {
            // The bits first: by the time the peer sees our FIN, our producer position is final.
            if (how == SHUT_WR || how == SHUT_RD || how == SHUT_RDWR) {
                pthread_mutex_lock(&r->conn->tx_lock);
                vmsp_shutdown_bits(r->conn, how);
                pthread_mutex_unlock(&r->conn->tx_lock);
            }
            int result = REAL(shutdown)(fd, how);
            int saved = errno;
            vmsp_leave(r);
            errno = saved;
            return result;
        }
    }
    return REAL(shutdown)(fd, how);
}

// MARK: Descriptors

void vmsp_forget_listener(int fd) {
    if ((unsigned)fd < (unsigned)vmsp_table_size && atomic_exchange(&vmsp_listening[fd], 0)) {
        // A forked child closed its inherited registrations at fork and never calls into the Swift state it
        // copied: its descriptor numbers may name the application's files by now. Its own are its own.
        if (atomic_load(&vmsp_forked_child) && vmsp_listen_owner != getpid()) return;
        int saved = errno;
        vmsp_inside = 1;
        vmsock_preload_unlisten(fd);
        vmsp_inside = 0;
        errno = saved;
    }
}

int close(int fd) {
    if (__builtin_expect((unsigned)fd < (unsigned)vmsp_table_size, 1) && !vmsp_inside) {
        struct vmsp_ref *r = vmsp_lookup(fd);
        if (r) {
            vmsp_before_last_close(r, fd);
            r = vmsp_remove(fd);
            int result = REAL(close)(fd);
            int saved = errno;
            if (r) vmsp_drop(r);
            errno = saved;
            return result;
        }
        if (atomic_load_explicit(&vmsp_library_fd[fd], memory_order_relaxed)) {
            errno = EBADF;  // not the program's (a close of every descriptor reached it)
            return -1;
        }
        if (atomic_load_explicit(&vmsp_listening[fd], memory_order_relaxed)) vmsp_forget_listener(fd);
        if (vmsp_counting()) atomic_store_explicit(&vmsp_connect_began[fd], 0, memory_order_relaxed);
        vmsp_epoll_closing(fd);
    }
    return REAL(close)(fd);
}

static int after_dup(int old_fd, int new_fd) {
    if (new_fd < 0 || vmsp_inside) return new_fd;
    struct vmsp_ref *r = vmsp_enter(old_fd);
    if (r) {
        vmsp_install(new_fd, r);
        vmsp_leave(r);
    }
    return new_fd;
}

// A connection the program made inheritable itself (see vmsp_ref.handed), as Python's subprocess does for
// pass_fds in the child it execs. Not a dup2 to a number of its choice: bash keeps `exec 5<>/dev/tcp/...` that
// way for every command it runs, most of which never read it.
static void note_handed(int fd) {
    struct vmsp_ref *r = vmsp_lookup(fd);  // its caller, fcntl_common, has already left the library's own calls out
    if (r && !atomic_load_explicit(&r->handed, memory_order_relaxed)) atomic_store(&r->handed, 1);
}

// dup2/dup3 onto a descriptor that was a connection of ours closes that one: drop its name first.
static void before_replace(int old_fd, int new_fd) {
    if (old_fd == new_fd || vmsp_inside) return;
    // A link descriptor replaced: the number is the program's now (its connection loses that doorbell).
    if ((unsigned)new_fd < (unsigned)vmsp_table_size) atomic_store(&vmsp_library_fd[new_fd], 0);
    struct vmsp_ref *r = vmsp_lookup(new_fd);
    if (r) vmsp_before_last_close(r, new_fd);
    vmsp_forget_listener(new_fd);
    vmsp_epoll_closing(new_fd);
}

static void after_replace(int new_fd, int result) {
    if (result < 0 || vmsp_inside) return;
    struct vmsp_ref *r = vmsp_remove(new_fd);
    if (r) vmsp_drop(r);
}

int dup(int fd) { return after_dup(fd, REAL(dup)(fd)); }

int dup2(int old_fd, int new_fd) {
    if (old_fd == new_fd) return REAL(dup2)(old_fd, new_fd);
    before_replace(old_fd, new_fd);
    int result = REAL(dup2)(old_fd, new_fd);
    after_replace(new_fd, result);
    return after_dup(old_fd, result);
}

int dup3(int old_fd, int new_fd, int flags) {
    if (old_fd != new_fd) before_replace(old_fd, new_fd);
    int result = REAL(dup3)(old_fd, new_fd, flags);
    after_replace(new_fd, result);
    return after_dup(old_fd, result);
}

static int fcntl_common(int (*real)(int, int, ...), int fd, int cmd, void *arg) {
    int result = real(fd, cmd, arg);
    if (result < 0 || vmsp_inside) return result;
    if (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC) return after_dup(fd, result);
    if (cmd == F_SETFD && !((int)(intptr_t)arg & FD_CLOEXEC)) note_handed(fd);
    if (cmd == F_SETFL) {
        struct vmsp_ref *r = vmsp_lookup(fd);
        if (r) atomic_store(&r->conn->nonblocking, ((int)(intptr_t)arg & O_NONBLOCK) != 0);
    }
    return result;
}

// The third argument is an int or a pointer; both travel in a register that va_arg reads as a pointer.
int fcntl(int fd, int cmd, ...) {
    va_list args;
    va_start(args, cmd);
    void *arg = va_arg(args, void *);
    va_end(args);
    return fcntl_common(REAL(fcntl), fd, cmd, arg);
}

int fcntl64(int fd, int cmd, ...) {
    va_list args;
    va_start(args, cmd);
    void *arg = va_arg(args, void *);
    va_end(args);
    return fcntl_common(REAL(fcntl64), fd, cmd, arg);
}

int ioctl(int fd, unsigned long request, ...) {
    va_list args;
    va_start(args, request);
    void *arg = va_arg(args, void *);
    va_end(args);
    if (OURS(fd)) {
        struct vmsp_ref *r = vmsp_enter(fd);
        if (r) {
            struct vmsp_conn *c = r->conn;
            int result = 0;
            if (request == FIONREAD) {
                // The bytes waiting in the ring: the TCP socket holds only wake-ups.
                if (!arg) { errno = EFAULT; result = -1; } else *(int *)arg = vmsp_readable_bytes(c);
            } else {
                result = REAL(ioctl)(fd, request, arg);
                if (result == 0 && request == FIONBIO && arg) atomic_store(&c->nonblocking, *(int *)arg != 0);
            }
            int saved = errno;
            vmsp_leave(r);
            errno = saved;
            return result;
        }
    }
    return REAL(ioctl)(fd, request, arg);
}

// Through the system call where libc has no wrapper (before glibc 2.34).
static int real_close_range(unsigned int first, unsigned int last, int flags) {
    if (REAL(close_range)) return REAL(close_range)(first, last, flags);
#ifdef SYS_close_range
    return (int)REAL(syscall)(SYS_close_range, first, last, flags);
#else
    errno = ENOSYS;
    return -1;
#endif
}

int close_range(unsigned int first, unsigned int last, int flags) {
    if (vmsp_inside || (flags & CLOSE_RANGE_CLOEXEC) || first > last) return real_close_range(first, last, flags);
    unsigned int end = last < (unsigned)vmsp_table_size ? last : (unsigned)vmsp_table_size - 1;
    for (unsigned int fd = first; vmsp_table_size > 0 && fd <= end; fd++) {
        struct vmsp_ref *r = vmsp_lookup((int)fd);
        if (r) vmsp_before_last_close(r, (int)fd);
        if (atomic_load_explicit(&vmsp_listening[fd], memory_order_relaxed)) vmsp_forget_listener((int)fd);
        vmsp_epoll_closing((int)fd);
    }
    // The library's link descriptors in the range stay open: the range is closed around them.
    int result = 0;
    unsigned int from = first;
    for (unsigned int fd = first; vmsp_table_size > 0 && fd <= end; fd++) {
        if (!atomic_load_explicit(&vmsp_library_fd[fd], memory_order_relaxed)) continue;
        if (fd > from && (result = real_close_range(from, fd - 1, flags)) != 0) break;
        from = fd + 1;
    }
    if (result == 0 && from <= last) result = real_close_range(from, last, flags);
    if (result == 0) {
        for (unsigned int fd = first; vmsp_table_size > 0 && fd <= end; fd++) {
            struct vmsp_ref *r = vmsp_remove((int)fd);
            if (r) vmsp_drop(r);
        }
    }
    return result;
}
