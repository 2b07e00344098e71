// Descriptors passed to another process in an SCM_RIGHTS message (sendmsg on a Unix socket): what the receiver
// gets is the socket, not this library's state for it. Dovecot's login process hands its client's connection to
// the mail process so; haproxy's reload (`-x`) and envoy's hot restart hand their listening sockets to the new
// process.
// - A shared-memory connection: the receiver would see the bare TCP socket, whose bytes are wake-ups. So it gets a
//   relay's socket in its place, as a new image does at exec (ferry.c), handed over on purpose: the relay reads
//   for it once this process leaves the bytes alone. Where no relay can be made, a socket whose peer is gone: end
//   of stream, never a wake-up byte read as data.
// - A registered listening socket: the receiver could accept on it a connection whose connector this process's
//   listener welcomed, and would read that connection's wake-up bytes as data. So the owner welcomes nobody from
//   then on, as when a new image inherits the listener (exec.c): its listeners are TCP for good.
// Control data the kernel would refuse (a header whose length runs past the rest) goes to it unchanged, for its
// EINVAL; more descriptors than it takes in one message (253) fail with EINVAL here, as there. A registered
// listener's mark is taken back when the message could not be sent.
// Not covered: descriptors passed through syscall() or io_uring.
#include "preload.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

enum {
    PASSED_MAX = 253,  // the kernel's SCM_MAX_FD: descriptors in one message, each connection with its relay
    CONTROL_ON_STACK = 4096,
};

// The stand-ins put in place (one per connection in the message: a relay's socket, `go` its start; or a socket
// whose peer is gone, `go` -1), and the connections held until the message is sent (a close meanwhile keeps the
// connection for the relay).
struct passing {
    int count, holds, listener, too_many;
    struct vmsp_conn *conn[PASSED_MAX];
    int app[PASSED_MAX], go[PASSED_MAX];
    struct vmsp_ref *held[PASSED_MAX];
    int held_fd[PASSED_MAX];
    unsigned char *slot[PASSED_MAX];  // where each held descriptor's number sits in the control data
};

// The socket to pass in place of connection `fd`'s (`r`), made once per connection in the message; -1 if none.
static int stand_in(struct passing *p, int fd, struct vmsp_ref *r) {
    for (int i = 0; i < p->count; i++) {
        if (p->conn[i] == r->conn) return p->app[i];
    }
    int go = -1, app = vmsp_relay_for_passing(r->conn, fd, &go);
    if (app >= 0) {
        vmsp_debug("sendmsg: fd %d, a shared-memory connection, goes to the receiver as a TCP socket through a relay "
                   "process", fd);
    } else {
        app = vmsp_ended_socket();
        go = -1;
        vmsp_debug("sendmsg: fd %d is a shared-memory connection and no relay could be made for it: it ends for the "
                   "receiver", fd);
    }
    if (app < 0) return -1;  // no descriptor left: sendmsg fails with EBADF
    p->conn[p->count] = r->conn;
    p->app[p->count] = app;
    p->go[p->count] = go;
    p->count++;
    return app;
}

// Whether every header lies inside the control data, as the kernel checks (CMSG_FIRSTHDR does not).
static int well_formed(const struct msghdr *msg) {
    const char *end = (const char *)msg->msg_control + msg->msg_controllen;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR((struct msghdr *)msg, c)) {
        if (c->cmsg_len < CMSG_LEN(0) || c->cmsg_len > (size_t)(end - (const char *)c)) return 0;
    }
    return 1;
}

// Each descriptor number a well-formed `msg` passes, with where it sits in the control data: `visit` returns
// nonzero to stop, and that is returned.
static int each_passed(struct msghdr *msg, int (*visit)(int fd, unsigned char *slot, void *context), void *context) {
    for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < n; i++) {
            unsigned char *slot = CMSG_DATA(c) + i * sizeof(int);
            int fd;
            memcpy(&fd, slot, sizeof fd);
            if ((unsigned)fd >= (unsigned)vmsp_table_size) continue;
            int stop = visit(fd, slot, context);
            if (stop) return stop;
        }
    }
    return 0;
}

static int is_ours(int fd, unsigned char *slot, void *context) {
    (void)slot, (void)context;
    return vmsp_lookup(fd) || atomic_load(&vmsp_listening[fd]);
}

int vmsp_passes_ours(const struct msghdr *msg) {
    if (!msg->msg_control || msg->msg_controllen < sizeof(struct cmsghdr) || vmsp_inside || !well_formed(msg)) {
        return 0;
    }
    return each_passed((struct msghdr *)msg, is_ours, NULL);
}

// Every connection in the message is held first, then replaced (each relay takes a fork): a close meanwhile in
// another thread finds it held, as the kernel takes every descriptor of a message at once.
static int hold(int fd, unsigned char *slot, void *context) {
    struct passing *p = context;
    if (atomic_load(&vmsp_listening[fd])) p->listener = fd;
    if (!vmsp_lookup(fd)) return 0;
    if (p->holds == PASSED_MAX) {
        p->too_many = 1;
        return 1;
    }
    struct vmsp_ref *r = vmsp_enter(fd);
    if (!r) return 0;  // closed meanwhile: the kernel says EBADF, or passes what the number is now
    p->held[p->holds] = r;
    p->held_fd[p->holds] = fd;
    p->slot[p->holds] = slot;
    p->holds++;
    return 0;
}

static ssize_t send_replaced(int sock, const struct msghdr *msg, int flags, char *control) {
    memcpy(control, msg->msg_control, msg->msg_controllen);
    struct msghdr copy = *msg;  // the program's own control data is left as it gave it
    copy.msg_control = control;
    struct passing p = { .listener = -1 };
    each_passed(&copy, hold, &p);
    for (int i = 0; i < p.holds && !p.too_many; i++) {
        int app = stand_in(&p, p.held_fd[i], p.held[i]);
        memcpy(p.slot[i], &app, sizeof app);
    }
    ssize_t sent = -1;
    int saved = EINVAL, marked = 0;
    if (!p.too_many) {
        if (p.listener >= 0) {
            vmsp_welcome_book_note_handed_on();  // before: the receiver may accept as soon as it is sent
            marked = 1;
        }
        sent = REAL(sendmsg)(sock, &copy, flags);
        saved = errno;
    }
    if (marked && sent >= 0) {
        vmsp_debug("sendmsg: listening fd %d goes to another process, which may accept on it: process %d offers "
                   "shared memory on its listeners no more", p.listener, (int)vmsp_listen_owner);
    } else if (marked) {
        vmsp_welcome_book_unnote_handed_on();
    }
    for (int i = 0; i < p.count; i++) {
        vmsp_relay_passed(p.go[i], sent >= 0);  // started, or sent away (the program may send again)
        REAL(close)(p.app[i]);                  // the message holds it now
    }
    for (int i = 0; i < p.holds; i++) vmsp_leave(p.held[i]);
    errno = saved;
    return sent;
}

ssize_t vmsp_sendmsg_passing(int sock, const struct msghdr *msg, int flags) {
    if (!vmsp_passes_ours(msg)) return REAL(sendmsg)(sock, msg, flags);
    if (msg->msg_controllen <= CONTROL_ON_STACK) {
        char control[CONTROL_ON_STACK] __attribute__((aligned(8)));
        return send_replaced(sock, msg, flags, control);
    }
    char *control = malloc(msg->msg_controllen);  // 8-aligned
    if (!control) { errno = ENOBUFS; return -1; }
    ssize_t sent = send_replaced(sock, msg, flags, control);
    int saved = errno;
    free(control);
    errno = saved;
    return sent;
}
