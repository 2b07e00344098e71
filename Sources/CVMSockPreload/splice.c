// splice with a shared-memory connection at one end and a pipe at the other, copied through a buffer as the
// kernel's splice would move it: no byte is taken from one side that the other did not take, and a call that must
// not block (SPLICE_F_NONBLOCK, as haproxy's and every event loop's are, or a pipe end opened O_NONBLOCK) never
// waits on either side, even when the pipe itself is blocking (haproxy's are).
// - From the connection: its bytes are peeked, as many as the pipe can take now are written, and only those are
//   consumed. A blocking call waits for room in the pipe first, as the kernel's does, then moves what fits.
// - To the connection: only as much as its ring has room for is read from the pipe when the connection must not
//   block, and what is read is all sent. A connection that refuses writes (the peer closed) fails the call before
//   a byte is taken from the pipe, with EPIPE and SIGPIPE as the kernel's.
// A pipe's room cannot be read from the kernel (it counts pages, and a page may hold a few bytes): an empty pipe
// takes its capacity; otherwise a page at a time while poll finds a free page, which a page's worth always fits.
// The kernel's errors where it would refuse: EINVAL when the other end is not a pipe, or for an offset on the
// socket; ESPIPE for one on the pipe. Not covered: two threads reading one connection while one of them splices
// from it (the other may read the bytes between the peek and the consume), which no program does on purpose.
#include "preload.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

enum { SPLICE_CHUNK = 65536, PIPE_PAGE = 4096 };

// Whether the pipe is ready for `events` now, or after a wait (`wait`): 1 ready, 0 not, -1 failed (EINTR when a
// handler without SA_RESTART interrupted the wait; one with it restarts the wait, as the kernel's splice does).
static int pipe_ready(int fd, short events, int wait) {
    struct vmsp_signal_mark mark = vmsp_signal_mark();
    int saved = errno;
    for (;;) {
        struct pollfd p = { .fd = fd, .events = events };
        int n = REAL(poll)(&p, 1, wait ? -1 : 0);
        if (n < 0 && errno == EINTR && !vmsp_signalled(mark, 0)) {
            errno = saved;
            continue;
        }
        if (n < 0) return -1;
        return n > 0 && (p.revents & (events | POLLHUP | POLLERR)) != 0;
    }
}

// Writes at most `n` bytes into the pipe: the count taken, or -1 (EAGAIN when it has no room and `wait` is 0;
// EPIPE when nobody reads it).
static ssize_t into_pipe(int fd, const char *bytes, size_t n, int wait, int nonblocking_pipe) {
    int ready = pipe_ready(fd, POLLOUT, wait);
    if (ready <= 0) {
        if (ready == 0) errno = EAGAIN;
        return -1;
    }
    if (nonblocking_pipe) return REAL(write)(fd, bytes, n);  // takes what fits
    int queued = 0, capacity = REAL(fcntl)(fd, F_GETPIPE_SZ);
    if (capacity > 0 && REAL(ioctl)(fd, FIONREAD, &queued) == 0 && queued == 0) {
        return REAL(write)(fd, bytes, n < (size_t)capacity ? n : (size_t)capacity);
    }
    size_t done = 0;
    while (done < n) {
        if (done > 0 && pipe_ready(fd, POLLOUT, 0) != 1) break;
        size_t page = n - done < PIPE_PAGE ? n - done : PIPE_PAGE;
        ssize_t w = REAL(write)(fd, bytes + done, page);
        if (w <= 0) return done > 0 ? (ssize_t)done : w;
        done += (size_t)w;
    }
    return (ssize_t)done;
}

static ssize_t from_connection(int fd_in, int fd_out, char *buffer, size_t chunk, int nonblocking_call,
                               int nonblocking_pipe) {
    int nonblocking = nonblocking_call || nonblocking_pipe;
    ssize_t n = recv(fd_in, buffer, chunk, nonblocking ? MSG_PEEK | MSG_DONTWAIT : MSG_PEEK);
    if (n <= 0) return n;
    ssize_t w = into_pipe(fd_out, buffer, (size_t)n, !nonblocking, nonblocking_pipe);
    if (w > 0) (void)recv(fd_in, NULL, (size_t)w, MSG_TRUNC);  // consumes what the pipe took
    return w;
}

static ssize_t to_connection(int fd_in, int fd_out, char *buffer, size_t chunk, int nonblocking_call,
                             int nonblocking_pipe) {
    struct vmsp_ref *r = vmsp_enter(fd_out);
    if (!r) { errno = EBADF; return -1; }
    int refused = vmsp_tx_refuses(r->conn);
    int nonblocking = nonblocking_call || nonblocking_pipe || atomic_load(&r->conn->nonblocking);
    int64_t room = refused ? 0 : nonblocking ? vmsp_writable_bytes(r->conn) : (int64_t)chunk;
    vmsp_leave(r);
    if (refused) return -1;  // EPIPE, SIGPIPE raised
    if (room <= 0) { errno = EAGAIN; return -1; }
    if (nonblocking_call || nonblocking_pipe) {
        int ready = pipe_ready(fd_in, POLLIN, 0);  // a blocking pipe's read would wait
        if (ready <= 0) {
            if (ready == 0) errno = EAGAIN;
            return -1;
        }
    }
    ssize_t n = REAL(read)(fd_in, buffer, (size_t)room < chunk ? (size_t)room : chunk);
    if (n <= 0) return n;
    // Everything read is sent: the ring had room for it (one writer), and a blocking send waits for room. Only a
    // connection that failed meanwhile (reset, closed, or another thread's write took the room) loses the rest.
    ssize_t sent = 0;
    while (sent < n) {
        ssize_t s = send(fd_out, buffer + sent, (size_t)(n - sent), 0);
        if (s < 0 && errno == EINTR) continue;
        if (s <= 0) return sent > 0 ? sent : s;
        sent += s;
    }
    return sent;
}

// The pipe end's O_NONBLOCK, or -1 (errno set) when it is not a pipe: EINVAL, as the kernel's splice says.
static int pipe_nonblocking(int fd) {
    struct stat info;
    if (fstat(fd, &info) != 0) return -1;
    if (!S_ISFIFO(info.st_mode)) { errno = EINVAL; return -1; }
    int status = REAL(fcntl)(fd, F_GETFL);
    return status < 0 ? -1 : (status & O_NONBLOCK) != 0;
}

ssize_t splice(int fd_in, loff_t *off_in, int fd_out, loff_t *off_out, size_t len, unsigned int flags) {
    int in_ours = vmsp_lookup(fd_in) && !vmsp_inside, out_ours = vmsp_lookup(fd_out) && !vmsp_inside;
    if (!in_ours && !out_ours) return REAL(splice)(fd_in, off_in, fd_out, off_out, len, flags);
    int pipe_end = in_ours ? fd_out : fd_in;
    int nonblocking_pipe = pipe_nonblocking(pipe_end);
    if (nonblocking_pipe < 0) return -1;
    if (in_ours ? off_out : off_in) { errno = ESPIPE; return -1; }  // an offset on the pipe
    if (in_ours ? off_in : off_out) { errno = EINVAL; return -1; }  // an offset on the socket
    static atomic_int told;
    if (!atomic_exchange(&told, 1)) {
        vmsp_debug("splice: fd %d, a shared-memory connection, is copied %s a pipe through a buffer (said once)",
                   in_ours ? fd_in : fd_out, in_ours ? "into" : "from");
    }
    size_t chunk = len < SPLICE_CHUNK ? len : SPLICE_CHUNK;
    if (chunk == 0) return 0;
    char *buffer = malloc(chunk);
    if (!buffer) { errno = ENOMEM; return -1; }
    int nonblocking_call = (flags & SPLICE_F_NONBLOCK) != 0;
    ssize_t result = in_ours ? from_connection(fd_in, fd_out, buffer, chunk, nonblocking_call, nonblocking_pipe)
                             : to_connection(fd_in, fd_out, buffer, chunk, nonblocking_call, nonblocking_pipe);
    int saved = errno;
    free(buffer);
    errno = saved;
    return result;
}
