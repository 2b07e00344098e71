#ifndef VMSOCK_H
#define VMSOCK_H
/*
 * vmsock.h: the C API of vmsock, a byte stream that behaves like a connected TCP socket, carried through
 * shared-memory rings when the peer is a vmsock process on this host, and over real TCP otherwise.
 *
 * Link with -lvmsock (libvmsock.so, built by `swift build --product vmsock`). The Swift runtime is loaded as a
 * dependency of the library; a C program needs nothing else.
 *
 *     int h = vmsock_connect("127.0.0.1", 7000, NULL);            // any TCP server; shared memory if it can
 *     if (h < 0) { perror("vmsock_connect"); return 1; }
 *     printf("%s\n", vmsock_fallback_reason(h) ? vmsock_fallback_reason(h) : "no fallback");
 *     vmsock_write(h, "hello", 5);
 *     vmsock_shutdown(h, SHUT_WR);                                  // the server reads 5 bytes, then end of stream
 *     char reply[100];
 *     ssize_t n = vmsock_read(h, reply, sizeof reply);               // 0 at end of stream
 *     vmsock_close(h);
 *
 * HANDLES. A handle is a non-negative int, but it is NOT a file descriptor: never pass it to read(2), close(2) or
 * poll(2), and never pass a file descriptor here. Each handle carries a slot number (its low 20 bits) and that
 * slot's generation (the next 11 bits, never 0), so every handle is at least 1048576 (0, stdin and small file
 * descriptors are never valid handles). A call on a closed handle fails with EBADF, and so does a call on a
 * stale copy of a handle whose slot was reused for a newer connection: the generations differ. (After 2047
 * reuses of one slot a generation comes back; a freed slot is reused only once 1024 others wait to be, oldest
 * first, so a stale handle can alias a live one only after at least two million handles were made after it was
 * closed.) We chose this over opaque pointers because a stale pointer cannot be checked without touching freed
 * memory, and over plain slot numbers because those alias at once, as file descriptors do. At most 1048576
 * handles are open at a time.
 *
 * THREADS. As with a TCP socket used by a reader thread and a writer thread: one thread may read (vmsock_read,
 * vmsock_readv, vmsock_arm_readable, vmsock_disarm_readable) while another writes (vmsock_write, vmsock_writev,
 * vmsock_arm_writable, vmsock_disarm_writable). Do not read from two threads at once, nor write from two: the
 * library does not lock the data path, so the bytes would interleave unpredictably (memory stays safe: a handle
 * is never freed while a call uses it). Every other call may be made from any thread. vmsock_close may be called
 * from any thread at any time: calls blocked in other threads then fail with EBADF, and the connection's memory
 * is freed when the last call using it returns.
 *
 * FORK. A child process must neither use nor close its parent's handles: they name the parent's connections,
 * whose shared memory the child maps too, and a close in the child would end the connection for the peer (as
 * shutdown on an inherited socket would). Exec, or exit with _exit. (A preload library, next, is where fork is
 * handled like the kernel does it.)
 *
 * DATA PATH. vmsock_read, vmsock_write, vmsock_readv and vmsock_writev take no lock and allocate nothing: the
 * handle is looked up in a table of slots with one atomic compare-and-swap to enter and one atomic subtract to
 * leave (the count that keeps a closed handle's memory alive until the last call returns). Over shared memory
 * a call that finds data (or room) makes no system call. The reader and the writer of one connection touch the
 * same slot word, so they share one cache line per call.
 *
 * ERRORS. Like POSIX calls: -1 (or NULL where a pointer is returned) and errno set. Every errno a TCP programmer
 * expects: EAGAIN (non-blocking, would wait), ETIMEDOUT (a timeout expired, or connect timed out), EPIPE (writing
 * after our shutdown, or to a peer that closed, stopped reading or died; never a SIGPIPE), ECONNREFUSED, ECONNRESET,
 * EPROTO (the shared-memory peer broke the ring rules: the connection is torn down and every later call fails the
 * same way), EBADF (closed or stale handle), EINVAL, EFAULT (a NULL buffer with a non-zero length). Both
 * transports give the same errors for the same calls. vmsock_last_error() says what happened, in words. The
 * library never exits, and prints nothing but two warnings about the environment, once each on stderr: an
 * unknown VMSOCK_TRANSPORT value (treated as "auto") and an invalid VMSOCK_SPIN_US (the default is used).
 *
 * ENVIRONMENT. VMSOCK_TRANSPORT=auto|shm|tcp|ivshmem (the default transport policy), VMSOCK_DIR (where
 * listeners register), VMSOCK_SPIN_US (how long a blocked call spins before it sleeps, default 50),
 * VMSOCK_IVSHMEM (the socket of a vmsockd whose region this process joins: a listener registers there too, and
 * under auto a connect uses the region when a peer of it listens at the address). See README.md.
 */

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Transport policies, for vmsock_options.policy. */
#define VMSOCK_POLICY_DEFAULT 0 /* the process default: VMSOCK_TRANSPORT, else auto */
#define VMSOCK_POLICY_AUTO 1    /* shared memory when the peer is a trusted vmsock listener on this host, else TCP */
#define VMSOCK_POLICY_SHM 2     /* shared memory or fail (ECONNREFUSED, with the reason in vmsock_last_error) */
#define VMSOCK_POLICY_TCP 3     /* TCP only; a listener does not register for shared memory */
#define VMSOCK_POLICY_IVSHMEM 4 /* the vmsockd region (VMSOCK_IVSHMEM) or fail; a listener registers only there */

/* Transports, as vmsock_transport returns them. */
#define VMSOCK_TRANSPORT_SHM 1 /* shared-memory rings with a peer on this host */
#define VMSOCK_TRANSPORT_TCP 2 /* a real TCP connection */
#define VMSOCK_TRANSPORT_IVSHMEM 3 /* rings inside a vmsockd region, with a peer of that region (VMSOCK_IVSHMEM) */

/* Directions, for vmsock_poll_fd, vmsock_poll_events and vmsock_set_timeout. */
#define VMSOCK_READ 0
#define VMSOCK_WRITE 1

/* Which peers to trust, for vmsock_options.trust (judged by SO_PEERCRED). */
#define VMSOCK_TRUST_SAME_USER 0 /* our own user, or root (the default) */
#define VMSOCK_TRUST_ANY_USER 1  /* anyone who can reach the endpoint */

/*
 * Settings fixed when a connection is made. A zeroed struct means every default:
 *     struct vmsock_options options = {0};
 *     options.policy = VMSOCK_POLICY_TCP;
 * Passing NULL instead of options is the same as a zeroed struct. `reserved` must stay zero (EINVAL otherwise):
 * later versions give those bytes a meaning whose zero is today's behaviour.
 */
struct vmsock_options {
    int policy;               /* VMSOCK_POLICY_*; 0: the process default */
    int family;               /* AF_INET or AF_INET6 only (like nc -4/-6); 0 (AF_UNSPEC): both */
    uint32_t ring_size;       /* bytes of our outgoing ring: a power of two from 4096 to 67108864; 0: 262144.
                                 Like SO_SNDBUF. Not used over TCP. */
    int connect_timeout_ms;   /* how long a TCP connect may take before ETIMEDOUT; 0 or less: as long as the kernel
                                 tries */
    int handshake_timeout_ms; /* how long the shared-memory handshake may take; 0 or less: 5000 */
    int trust;                /* VMSOCK_TRUST_*: which listener owners (connect) or connectors (listen) to trust */
    int no_link_reuse;        /* non-zero: do not keep a closed shared-memory connection's link for the next one */
    const char *registry_dir; /* where listeners register (a directory); NULL: VMSOCK_DIR, else the abstract Unix
                                 namespace */
    uint64_t reserved[6];     /* must be zero */
};

/*
 * Connects to `host` (a name, or an IPv4 or IPv6 address) and `port`, trying each address getaddrinfo gives in
 * order. Under the auto policy it uses shared memory when the destination is an address of this host with a
 * trusted vmsock listener registered and the handshake succeeds, and TCP otherwise (vmsock_fallback_reason says
 * why). Blocks until connected or failed; the connection starts in blocking mode.
 * The corresponding C calls are getaddrinfo, socket and connect.
 *
 * Returns: a handle (>= 0), or -1 with errno:
 *   ECONNREFUSED  nothing listens there; or the shm policy found no usable shared-memory listener
 *   ETIMEDOUT     options->connect_timeout_ms or the handshake timeout passed
 *   EHOSTUNREACH, ENETUNREACH  no route
 *   EINVAL        host is NULL or does not resolve, bad ring_size, policy, family or trust, reserved not zero
 *   EPROTO, ECONNRESET  the shm policy and the listener broke or reset the handshake
 *   EMFILE        1048576 handles are open, or the process is out of file descriptors
 */
int vmsock_connect(const char *host, uint16_t port, const struct vmsock_options *options);

/*
 * Listens on `host` (NULL: 0.0.0.0, every IPv4 address; "::" for IPv6 and IPv4) and `port` (0: the kernel picks
 * one; vmsock_local_address tells which). Binds a real TCP socket (SO_REUSEADDR), and unless the policy is tcp
 * registers a shared-memory endpoint for the same address and port, which lasts until vmsock_close or the
 * process's end. TCP clients anywhere and vmsock clients on this host are both accepted through vmsock_accept.
 * `backlog` <= 0 means 128. The corresponding C calls are socket, bind and listen.
 *
 * Returns: a listener handle (>= 0), or -1 with errno: EADDRINUSE (the address and port are taken),
 * EADDRNOTAVAIL (not an address of this host), EINVAL (bad host, ring_size, policy, family, trust, or reserved not
 * zero), EMFILE; under the shm policy, the error that kept it from registering.
 */
int vmsock_listen(const char *host, uint16_t port, int backlog, const struct vmsock_options *options);

/*
 * Accepts the next connection on a listener: a TCP client or a shared-memory connector whose handshake succeeded.
 * Blocks unless the listener is non-blocking. A connector that fails the handshake (untrusted, wrong version,
 * silent for the handshake timeout) is turned away and accept goes on to the next. If `address` is not NULL, the
 * peer's address is stored there as by accept(2): `*address_length` is the buffer's size on entry and the
 * address's size on return (the address is truncated if the buffer is smaller).
 * The corresponding C call is accept.
 *
 * Returns: a handle (>= 0) for the new connection (blocking mode), or -1 with errno: EAGAIN (non-blocking and
 * nothing ready), EBADF (not an open handle, or the listener was closed while accept waited), EINVAL (the handle
 * is a connection, not a listener), EFAULT (address is given without address_length), EMFILE, EOPNOTSUPP (called
 * in a forked child on its parent's listener that offers shared memory: see FORK above).
 */
int vmsock_accept(int listener, struct sockaddr *address, socklen_t *address_length);

/*
 * Reads up to `length` bytes into `buffer`. Blocks until at least one byte is readable, the peer ends the stream,
 * or the read timeout passes (unless non-blocking). The corresponding C call is read (or recv).
 *
 * Returns: the number of bytes read (at least 1); 0 at end of stream (the peer shut down writing, closed or died,
 * or we shut down reading) and when length is 0; or -1 with errno: EAGAIN (non-blocking, nothing yet), ETIMEDOUT
 * (the read timeout passed), ECONNRESET (TCP: the peer reset), EPROTO (the peer broke the ring rules), EBADF
 * (closed or stale handle, or closed while the read waited), ENOTCONN (the handle is a listener), EFAULT (buffer
 * is NULL and length is not 0).
 */
ssize_t vmsock_read(int handle, void *buffer, size_t length);

/*
 * Writes as many of `length` bytes as fit now, blocking until at least one does (unless non-blocking). Never
 * raises SIGPIPE. The corresponding C call is write (or send with MSG_NOSIGNAL).
 *
 * Returns: the number of bytes written, from 1 to length (0 when length is 0); or -1 with errno: EPIPE (we shut
 * down writing, or the peer closed, shut down reading or died), EAGAIN (non-blocking, no room), ETIMEDOUT (the
 * write timeout passed), ECONNRESET, EPROTO, EBADF, ENOTCONN (a listener), EFAULT (buffer is NULL and length is
 * not 0).
 */
ssize_t vmsock_write(int handle, const void *buffer, size_t length);

/*
 * Scatter read: fills the `count` buffers of `vectors` in order with what is readable, blocking like vmsock_read.
 * The corresponding C call is readv.
 *
 * Returns: the number of bytes read; 0 at end of stream or when the buffers hold nothing; -1 with vmsock_read's
 * errno values, and EINVAL when count is negative or more than IOV_MAX (1024), EFAULT when vectors is NULL and
 * count is not 0, or a buffer is NULL with a non-zero length.
 */
ssize_t vmsock_readv(int handle, const struct iovec *vectors, int count);

/*
 * Gather write: writes what fits of the `count` buffers, in order, as one publish (the peer never sees part of a
 * buffer before an earlier one). Blocks like vmsock_write. The corresponding C call is writev.
 *
 * Returns: the number of bytes written (0 when the buffers hold nothing); -1 with vmsock_write's errno values,
 * and EINVAL or EFAULT as for vmsock_readv.
 */
ssize_t vmsock_writev(int handle, const struct iovec *vectors, int count);

/*
 * Shuts down one or both directions: `how` is SHUT_RD, SHUT_WR or SHUT_RDWR (from <sys/socket.h>).
 *   SHUT_WR: the peer reads every byte written so far, then end of stream. Our later writes fail with EPIPE.
 *   SHUT_RD: our reads return 0 from now on. Over shared memory the peer's writes then fail with EPIPE (a TCP peer
 *            would not learn of it; here it must, or it would block forever on a ring nobody drains).
 * It is not reference-counted: it affects the connection, not just this handle. The corresponding C call is
 * shutdown.
 *
 * Returns: 0, or -1 with errno: EBADF, EINVAL (bad how), ENOTCONN (a listener).
 */
int vmsock_shutdown(int handle, int how);

/*
 * Closes a connection or a listener and frees its handle. A connection's peer reads what we wrote, then end of
 * stream; a listener stops listening and its address and registration are free at once. Calls blocked on this
 * handle in other threads wake and fail with EBADF. The handle is invalid from now on (EBADF), even while those
 * calls return. The corresponding C call is close.
 *
 * Returns: 0, or -1 with errno EBADF (already closed, stale, or never a handle).
 */
int vmsock_close(int handle);

/*
 * Non-blocking mode for a connection (read, write, readv, writev fail with EAGAIN instead of waiting) or a
 * listener (accept fails with EAGAIN). `on` non-zero: non-blocking; 0: blocking. Like fcntl(F_SETFL, O_NONBLOCK).
 *
 * Returns: 0, or -1 with errno EBADF.
 */
int vmsock_set_nonblocking(int handle, int on);

/*
 * How long a blocking read (direction VMSOCK_READ) or write (VMSOCK_WRITE) may wait before it fails with
 * ETIMEDOUT. `milliseconds` 0 or less: wait forever (the default; as with SO_RCVTIMEO, 0 means no timeout).
 * Takes effect from the next call. Like setsockopt(SO_RCVTIMEO / SO_SNDTIMEO).
 *
 * Returns: 0, or -1 with errno: EBADF, EINVAL (bad direction), ENOTCONN (a listener).
 */
int vmsock_set_timeout(int handle, int direction, int milliseconds);

/*
 * POLLING: arm, then re-check. A shared-memory peer rings our doorbell only when we said we are about to sleep,
 * so a descriptor polled without arming may never fire. To wait for a connection to become readable:
 *
 *     for (;;) {
 *         int r = vmsock_arm_readable(h);            // "I am about to poll", then a re-check
 *         if (r < 0) break;                          // error (errno)
 *         if (r == 0) {                              // not readable yet: poll
 *             struct pollfd p = { vmsock_poll_fd(h, VMSOCK_READ), vmsock_poll_events(h, VMSOCK_READ), 0 };
 *             poll(&p, 1, -1);
 *         }
 *         while ((n = vmsock_read(h, buf, sizeof buf)) > 0) { ... }   // non-blocking handle: until EAGAIN
 *         if (n == 0 || errno != EAGAIN) break;       // end of stream, or an error
 *     }
 *
 * 1 is a promise (the call will not wait), 0 is not the opposite: it says "poll", and the poll may return at once.
 * Over TCP the arm calls check nothing (the kernel needs no announcement) and return 0, unless bytes are already
 * buffered in the library; poll the socket as usual.
 *
 * Level-triggered, like poll: the descriptor fires while the condition holds after arming. A successful read
 * disarms the read side (a successful write the write side), so arm again before every poll. The same loop works
 * for writing with vmsock_arm_writable and VMSOCK_WRITE, and for a listener (its vmsock_arm_readable always
 * returns 0: poll its descriptor, then call vmsock_accept until EAGAIN). The descriptors can go into poll, select or epoll
 * (level-triggered).
 */

/*
 * Announces that the calling thread is about to poll the read descriptor, then re-checks. Call it from the
 * reading thread.
 *
 * Returns: 1 when a read would not wait (data, end of stream, or an error to report): read now instead of
 * polling; 0 when nothing is readable: poll vmsock_poll_fd(handle, VMSOCK_READ); -1 with errno: EBADF, EPROTO,
 * ENOMEM or EMFILE (the epoll set could not be made).
 */
int vmsock_arm_readable(int handle);

/*
 * Announces that the calling thread is about to poll the write descriptor (so the peer rings when it frees room),
 * then re-checks. Call it from the writing thread.
 *
 * Returns: 1 when a write would not wait (there is room, or it would fail at once: we shut down, the peer is gone
 * or stopped reading): write now; 0: poll vmsock_poll_fd(handle, VMSOCK_WRITE); -1 with errno as for
 * vmsock_arm_readable, and ENOTCONN for a listener.
 */
int vmsock_arm_writable(int handle);

/*
 * Withdraws vmsock_arm_readable's (or vmsock_arm_writable's) announcement, for when the thread stops polling
 * without reading (writing): without it the peer keeps paying a doorbell system call per write. Not needed after
 * a successful read (write), which disarms by itself.
 *
 * Returns: 0 (a listener: nothing to do), or -1 with errno EBADF; ENOTCONN for vmsock_disarm_writable on a
 * listener.
 */
int vmsock_disarm_readable(int handle);
int vmsock_disarm_writable(int handle);

/*
 * The descriptor to poll for `direction` (VMSOCK_READ or VMSOCK_WRITE), for the events vmsock_poll_events gives.
 * Over shared memory it is an epoll descriptor that polls readable (POLLIN) for both directions; over TCP it is
 * the socket itself (POLLIN to read, POLLOUT to write); for a listener (VMSOCK_READ only), a descriptor that polls
 * readable when a connection may be waiting. It belongs to the handle: never close it, read it or write it; it
 * stays valid until vmsock_close (remove it from epoll sets before closing).
 *
 * Returns: the descriptor (>= 0), or -1 with errno: EBADF, EINVAL (bad direction; VMSOCK_WRITE on a listener),
 * ENOMEM or EMFILE (the epoll set could not be made).
 */
int vmsock_poll_fd(int handle, int direction);

/*
 * The poll events to wait for on vmsock_poll_fd(handle, direction): POLLIN or POLLOUT.
 *
 * Returns: POLLIN or POLLOUT, or -1 with errno EBADF or EINVAL (bad direction).
 */
short vmsock_poll_events(int handle, int direction);

/*
 * How the connection carries its bytes.
 *
 * Returns: VMSOCK_TRANSPORT_SHM, VMSOCK_TRANSPORT_IVSHMEM or VMSOCK_TRANSPORT_TCP; or -1 with errno EBADF,
 * ENOTCONN (a listener).
 */
int vmsock_transport(int handle);

/*
 * Why a connect that could have used shared memory uses TCP, as a constant string: "remote",
 * "no shared-memory listener", "untrusted owner", "refused by the listener's policy", "version mismatch",
 * "out of resources", "disabled by policy" or "handshake failed". The string lives as long as the process.
 *
 * Returns: the reason; NULL with errno 0 when there is none (shared memory, or an accepted connection); NULL with
 * errno EBADF or ENOTCONN (a listener).
 */
const char *vmsock_fallback_reason(int handle);

/*
 * The transport in words, as vmcat -v prints it: "shared memory", "TCP", or "TCP (no shared-memory listener)"
 * when the auto policy fell back, followed, when there is one, by what went wrong on the way to shared memory
 * (": untrusted owner uid 1001"...). Written into `buffer` as snprintf does: at most `size` bytes with the
 * terminating NUL.
 *
 * Returns: the length of the whole text (without the NUL; if it is >= size, the text was cut); -1 with errno
 * EBADF, ENOTCONN (a listener), EFAULT (buffer NULL with a non-zero size).
 */
int vmsock_transport_description(int handle, char *buffer, size_t size);

/*
 * Our address (getsockname) and the peer's (getpeername), as struct sockaddr_in or sockaddr_in6. `*length` is the
 * buffer's size on entry and the address's size on return; the address is truncated if the buffer is smaller.
 * Over shared memory a connector reports the address it dialed with a TCP port of its own (held as a real TCP
 * port while the connection lives, so no TCP connection on the host has the same address pair); an accepted
 * connection reports the address and port the client dialed. A listener has a local address (with the port the
 * kernel picked for port 0) and no peer.
 *
 * Returns: 0, or -1 with errno: EBADF, EFAULT (address or length NULL), ENOTCONN (the peer of a listener).
 */
int vmsock_local_address(int handle, struct sockaddr *address, socklen_t *length);
int vmsock_peer_address(int handle, struct sockaddr *address, socklen_t *length);

/*
 * What the last failed vmsock call in this thread said, in words (without the errno name), e.g. "no shared-memory
 * listener for 127.0.0.1:7000 (shm policy)". Not cleared by successful calls. The text belongs to the thread and
 * stays until its next failed vmsock call. Never NULL ("" before any failure).
 */
const char *vmsock_last_error(void);

/*
 * Frees the links of closed shared-memory connections that this process keeps for reuse (see
 * vmsock_options.no_link_reuse), and the spare ring a listener prepares. Later connections make new ones.
 */
void vmsock_close_idle_links(void);

#ifdef __cplusplus
}
#endif
#endif /* VMSOCK_H */
