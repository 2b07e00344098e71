// The C half of vmsock-run's preload library (libvmsock-preload.so): what the Swift half calls, and the one type
// both halves share. The interposed libc entry points themselves (read, connect, close...) are defined in this
// target's .c files and declared by libc's own headers.
#ifndef CVMSOCK_PRELOAD_H
#define CVMSOCK_PRELOAD_H

#include <stdint.h>
#include <sys/socket.h>

/// A shared-memory link as the Swift set-up hands it to the C data path: both regions (ours read-write, the
/// peer's read-only, each mapped with its data area twice back to back), the link's descriptors, and the Swift
/// object that owns all of it (released through `vmsock_preload_release`).
typedef struct {
    void *local_base;
    const void *peer_base;
    uint64_t local_capacity;
    uint64_t peer_capacity;
    /// The link's AF_UNIX control socket: hangs up when the peer's last copy of it closes (death included).
    int control_fd;
    /// Our space doorbell's receiving end: the peer rings it after consuming when our writer waits.
    int space_bell_fd;
    /// The ringing end of the peer's space doorbell.
    int peer_space_bell_fd;
    /// Our data doorbell's receiving end: the peer rings it after publishing when only our epoll sets sleep on the
    /// connection (a Unix socket byte costs a third of a TCP one; stream.c).
    int data_bell_fd;
    /// The ringing end of the peer's data doorbell.
    int peer_data_bell_fd;
    void *owner;
} vmsp_link_info;

/// Binds an unbound TCP socket to the source address a connect to `destination` would leave from, at a port the
/// kernel picks. Fills `source` with the address and port the connection will have (for a socket the application
/// bound to a wildcard address, the address the kernel will pick) and returns 0, or -1 with errno.
int vmsp_bind_source(int fd, const struct sockaddr *destination, socklen_t length, struct sockaddr_storage *source,
                     socklen_t *source_length);

/// Whether this process may offer shared memory to new connections: not in a forked child (a new connection
/// costs more than a TCP connect, and a worker's are mostly short-lived: real.c), and, for listeners, not after
/// the process forked (a child might accept) unless its claim socket is open.
int vmsp_connects_allowed(void);
int vmsp_listeners_allowed(void);

/// Brackets every stretch of Swift set-up code (the exports, the listener thread's work between its waits): a
/// fork waits until no thread is inside (at most 20 ms), so that a child, which still accepts and releases
/// through that code, never finds a lock held by a thread it does not have. A thread never sleeps inside: the
/// listener thread leaves before its epoll_wait.
void vmsp_setup_enter(void);
void vmsp_setup_leave(void);
/// The listener thread's claim socket is open: a forked sibling can take over the links welcomed here.
void vmsp_claims_ready(void);

/// The welcome book (claim.c): hellos being answered now, and links welcomed per connector port, in a page shared
/// with forked children, so that an accept from a plain TCP client asks nobody for a link.
void vmsp_welcome_answering(int delta);
void vmsp_welcome_port(int port, int delta);

/// Descriptors of the library's own (registrations, control sockets waiting to be accepted): a forked child
/// closes them, so that a registration never outlives the process that answers it.
void vmsp_note_internal_fd(int fd);
void vmsp_forget_internal_fd(int fd);

/// How many TCP sockets listen on the exact address and port fd is bound to (1: only this one), or -1.
int vmsp_listeners_sharing(int fd);

/// Marks the calling thread as the library's own (the listener thread): none of its calls is interposed.
void vmsp_enter_library_thread(void);

/// Whether VMSOCK_DEBUG=1: one line per connection on standard error.
int vmsp_debug_enabled(void);

#endif
