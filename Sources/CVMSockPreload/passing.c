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
// Not covered: descriptors passed through syscall() or io_uring.
#include "preload.h"

#include <string.h>
#include <sys/socket.h>

enum { PASSED_MAX = 16 };  // connections with a relay per message; more get a socket whose peer is gone

struct passing {
    int count;
    struct vmsp_conn *conn[PASSED_MAX];
    int app[PASSED_MAX], go[PASSED_MAX];
};

// The socket to pass in place of connection `fd`'s (`r`), made once per connection in the message; -1 if none.
static int stand_in(struct passing *p, int fd, struct vmsp_ref *r) {
    for (int i = 0; i < p->count; i++) {
        if (p->conn[i] == r->conn) return p->app[i];
    }
    int go = -1, app = p->count < PASSED_MAX ? vmsp_relay_for_passing(r->conn, fd, &go) : -1;
    if (app < 0) {
        app = vmsp_ended_socket();
        go = -1;
        vmsp_debug("sendmsg: fd %d is a shared-memory connection and no relay could be made for it: it ends for the "
                   "receiver", fd);
    } else {
        vmsp_debug("sendmsg: fd %d, a shared-memory connection, goes to the receiver as a TCP socket through a relay "
                   "process", fd);
    }
    if (app >= 0 && p->count < PASSED_MAX) {
        p->conn[p->count] = r->conn;
        p->app[p->count] = app;
        p->go[p->count] = go;
        p->count++;
    }
    return app;
}

// Each descriptor number `msg` passes, with where it sits in the control data: `visit` returns nonzero to stop,
// and that is returned.
static int each_passed(struct msghdr *msg, int (*visit)(int fd, unsigned char *slot, void *context), void *context) {
    for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        int n = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        for (int i = 0; i < n; i++) {
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

// The stand-ins put in place so far, and the connections held until the message is sent (a close meanwhile keeps
// the connection for the relay).
struct replacing {
    struct passing passing;
    struct vmsp_ref *held[PASSED_MAX * 4];
    int holds, listener;
};

static int replace(int fd, unsigned char *slot, void *context) {
    struct replacing *r = context;
    if (atomic_load(&vmsp_listening[fd])) r->listener = fd;
    struct vmsp_ref *ref = r->holds < (int)(sizeof r->held / sizeof r->held[0]) ? vmsp_enter(fd) : NULL;
    if (!ref) return 0;
    r->held[r->holds++] = ref;
    int app = stand_in(&r->passing, fd, ref);
    memcpy(slot, &app, sizeof app);  // -1 if none: sendmsg fails with EBADF
    return 0;
}

ssize_t vmsp_sendmsg_passing(int sock, const struct msghdr *msg, int flags) {
    if (!msg->msg_control || msg->msg_controllen < sizeof(struct cmsghdr) || msg->msg_controllen > 65536 ||
        vmsp_inside || !each_passed((struct msghdr *)msg, is_ours, NULL)) {
        return REAL(sendmsg)(sock, msg, flags);
    }
    // A copy of the control data with the stand-ins; the program's own is left as it gave it.
    char control[msg->msg_controllen] __attribute__((aligned(8)));
    memcpy(control, msg->msg_control, msg->msg_controllen);
    struct msghdr copy = *msg;
    copy.msg_control = control;
    struct replacing r = { .listener = -1 };
    each_passed(&copy, replace, &r);
    if (r.listener >= 0) {
        vmsp_welcome_book_note_handed_on();
        vmsp_debug("sendmsg: listening fd %d goes to another process, which may accept on it: process %d offers "
                   "shared memory on its listeners no more", r.listener, (int)vmsp_listen_owner);
    }
    ssize_t sent = REAL(sendmsg)(sock, &copy, flags);
    int saved = errno;
    for (int i = 0; i < r.passing.count; i++) {
        vmsp_relay_passed(r.passing.go[i], sent >= 0);  // started, or sent away (the program may send again)
        REAL(close)(r.passing.app[i]);                  // the message holds it now
    }
    for (int i = 0; i < r.holds; i++) vmsp_leave(r.held[i]);
    errno = saved;
    return sent;
}
