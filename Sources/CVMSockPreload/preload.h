// Private to the C half: the real libc entry points, the descriptor table, the connection state, and the calls
// into the Swift half (defined there with @_cdecl).
#ifndef VMSP_PRELOAD_PRIVATE_H
#define VMSP_PRELOAD_PRIVATE_H

#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/uio.h>
#include <time.h>
#include "include/CVMSockPreload.h"

// MARK: The next definitions (libc's), resolved with dlsym(RTLD_NEXT) in a constructor, or on first use when a
// call arrives before it ran (another library's constructor).

struct vmsp_real {
    ssize_t (*read)(int, void *, size_t);
    ssize_t (*write)(int, const void *, size_t);
    ssize_t (*readv)(int, const struct iovec *, int);
    ssize_t (*writev)(int, const struct iovec *, int);
    ssize_t (*recv)(int, void *, size_t, int);
    ssize_t (*send)(int, const void *, size_t, int);
    ssize_t (*recvfrom)(int, void *, size_t, int, struct sockaddr *, socklen_t *);
    ssize_t (*sendto)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
    ssize_t (*recvmsg)(int, struct msghdr *, int);
    ssize_t (*sendmsg)(int, const struct msghdr *, int);
    ssize_t (*read_chk)(int, void *, size_t, size_t);
    ssize_t (*recv_chk)(int, void *, size_t, size_t, int);
    ssize_t (*recvfrom_chk)(int, void *, size_t, size_t, int, struct sockaddr *, socklen_t *);
    ssize_t (*sendfile)(int, int, off_t *, size_t);
    int (*connect)(int, const struct sockaddr *, socklen_t);
    int (*listen)(int, int);
    int (*accept)(int, struct sockaddr *, socklen_t *);
    int (*accept4)(int, struct sockaddr *, socklen_t *, int);
    int (*shutdown)(int, int);
    int (*close)(int);
    int (*dup)(int);
    int (*dup2)(int, int);
    int (*dup3)(int, int, int);
    int (*fcntl)(int, int, ...);
    int (*fcntl64)(int, int, ...);
    int (*ioctl)(int, unsigned long, ...);
    int (*close_range)(unsigned int, unsigned int, int);
    int (*recvmmsg)(int, struct mmsghdr *, unsigned int, int, struct timespec *);
    int (*sendmmsg)(int, struct mmsghdr *, unsigned int, int);
    ssize_t (*splice)(int, loff_t *, int, loff_t *, size_t, unsigned int);
    // The waits (wait.c, epoll.c).
    int (*ppoll)(struct pollfd *, nfds_t, const struct timespec *, const sigset_t *);
    int (*poll)(struct pollfd *, nfds_t, int);
    int (*select)(int, fd_set *, fd_set *, fd_set *, struct timeval *);
    int (*pselect)(int, fd_set *, fd_set *, fd_set *, const struct timespec *, const sigset_t *);
    int (*epoll_create)(int);
    int (*epoll_create1)(int);
    int (*epoll_ctl)(int, int, int, struct epoll_event *);
    int (*epoll_pwait)(int, struct epoll_event *, int, int, const sigset_t *);
    int (*epoll_pwait2)(int, struct epoll_event *, int, const struct timespec *, const sigset_t *);
    int (*setsockopt)(int, int, int, const void *, socklen_t);
    int (*sigaction)(int, const struct sigaction *, struct sigaction *);
    int (*getsockopt)(int, int, int, void *, socklen_t *);
    pid_t (*fork)(void);
    int (*execve)(const char *, char *const[], char *const[]);
    int (*execvpe)(const char *, char *const[], char *const[]);
    int (*fexecve)(int, char *const[], char *const[]);
    int (*posix_spawn)(pid_t *, const char *, const posix_spawn_file_actions_t *, const posix_spawnattr_t *,
                       char *const[], char *const[]);
    int (*posix_spawnp)(pid_t *, const char *, const posix_spawn_file_actions_t *, const posix_spawnattr_t *,
                        char *const[], char *const[]);
    long (*syscall)(long, ...);
    ssize_t (*preadv2)(int, const struct iovec *, int, off_t, int);
    ssize_t (*pwritev2)(int, const struct iovec *, int, off_t, int);
    FILE *(*fdopen)(int, const char *);
    FILE *(*popen)(const char *, const char *);
    int (*pclose)(FILE *);
    int (*fclose)(FILE *);
    int (*vdprintf)(int, const char *, va_list);
    int (*vdprintf_chk)(int, int, const char *, va_list);
};
extern struct vmsp_real vmsp_real;
void vmsp_resolve(void);
#define REAL(name) (__builtin_expect(vmsp_real.name != NULL, 1) ? vmsp_real.name : (vmsp_resolve(), vmsp_real.name))

// MARK: Time, for the waits and the data path's spins.
static inline int64_t vmsp_now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}
/// The monotonic time `timeout` milliseconds from now, or -1 for none (a negative timeout).
static inline int64_t vmsp_deadline_after_ms(int timeout) {
    return timeout < 0 ? -1 : vmsp_now_ns() + (int64_t)timeout * 1000000;
}
/// The monotonic time `timeout` from now, or -1 for none (NULL).
static inline int64_t vmsp_deadline_after(const struct timespec *timeout) {
    return timeout ? vmsp_now_ns() + (int64_t)timeout->tv_sec * 1000000000 + timeout->tv_nsec : -1;
}
/// A wait for room in a ring sleeps at most this long between looks at the ring. Two waiters on one connection's
/// room (two processes after fork, or a writer and a poller) share its flag and its bell: the first one woken drains
/// the bell and lowers the flag, and the other would sleep on with room in the ring. A lost wake-up then costs at
/// most this much latency, never a hang.
enum { VMSP_SPACE_RECHECK_MS = 10 };

/// Milliseconds left until `deadline` (-1: none), rounded up, for a kernel wait.
static inline int vmsp_ms_until(int64_t deadline) {
    if (deadline < 0) return -1;
    int64_t left = deadline - vmsp_now_ns();
    if (left <= 0) return 0;
    int64_t ms = (left + 999999) / 1000000;
    return ms > 0x7fffffff ? 0x7fffffff : (int)ms;
}

// Set while this thread runs the library's own code (the Swift set-up, which calls socket functions itself):
// every interposed call then goes straight to libc.
extern __thread int vmsp_inside;

// This process's pid, kept by the constructor and the fork handler (no system call to ask).
extern pid_t vmsp_self_pid;
// A read or a wait to read names the reader: a relay reads for a new image only while nobody else does (its own
// reads name nobody: vmsp_relay_process).
extern int vmsp_relay_process;
static inline void vmsp_note_reader(atomic_int *reader_pid) {
    if (!vmsp_relay_process && atomic_load_explicit(reader_pid, memory_order_relaxed) != vmsp_self_pid) {
        atomic_store_explicit(reader_pid, vmsp_self_pid, memory_order_relaxed);
    }
}

// MARK: A shared-memory connection.
//
// Two parts. `struct vmsp_conn` is what the data path uses: the ring positions, the wake-up counts, the locks
// and the state bits. It lives in a page of its own mapped MAP_SHARED, so that after fork parent and child see
// one connection, as they see one TCP socket: the locks are process-shared (and robust: a holder killed inside
// a call leaves them usable), and the mappings and descriptors it names are inherited at the same addresses and
// numbers. `struct vmsp_ref` is this process's hold on it: the descriptors that name it here, the calls in
// progress, the Swift object that owns this process's mappings. The table points at refs.

enum { VMSP_HOLDERS = 128, VMSP_RELAY_IMAGES = 8, VMSP_EPOLL_SETS = 4 };

struct vmsp_conn {
    // Immutable after attach.
    uint8_t *local;           // our region: header, then our outgoing data (mapped twice)
    const uint8_t *peer;      // the peer's region, read-only
    uint64_t tx_cap, rx_cap;
    int control_fd, space_bell_fd, peer_space_bell_fd;
    int data_bell_fd, peer_data_bell_fd;   // rung instead of the TCP socket when only epoll sets sleep (stream.c)

    atomic_int nonblocking;   // O_NONBLOCK of the open file description, kept by fcntl/ioctl/accept4
    atomic_int broken;        // an errno every later call returns (EPROTO: the peer broke a ring rule)
    atomic_int read_shut, write_shut, peer_gone;
    atomic_int tcp_ready;     // the TCP connection is established (a connector's may still be in progress)
    atomic_int reader_pid;    // the process that last read or waited to read (a relay's clue, relay.c)

    // Reader, under rx_lock.
    pthread_mutex_t rx_lock;
    uint64_t rx_pos;          // consumer position (private to the holders, never read back from the ring)
    uint64_t rx_seen;         // last producer position accepted from the peer
    uint32_t gen;             // our arm generation, published in our "waiting for data" word
    uint32_t drained;         // wake-up bytes received so far
    int eof;                  // the TCP socket said end of stream (or reset: eof_error)
    int eof_error;

    // Writer, under tx_lock.
    pthread_mutex_t tx_lock;
    uint64_t tx_pos;          // producer position
    uint64_t tx_seen;         // last consumer position accepted from the peer
    uint64_t last_rung;       // the peer generation our last wake-up byte was for (~0: none yet)
    uint32_t sent;            // wake-up bytes sent
    int64_t full_since;       // when a non-blocking write first found the ring full with no progress (0: not)
    atomic_int app_nodelay;   // TCP_NODELAY as the application set it (the socket itself always has it)

    // The processes that hold the socket (holders.c): (start time << 22) | pid, 0 for a free slot.
    atomic_int holder_slots;  // slots ever used: the scans stop there
    atomic_int holders_lost;  // a fork found every slot taken: nobody can tell the last holder any more
    _Atomic uint64_t holders[VMSP_HOLDERS];
    // The pids of new images whose relays (ferry.c) may still be moving what they wrote into the ring, 0 for a
    // free slot: a holder that reaps one of them waits for its slot to clear before it writes on (wait.c).
    _Atomic int32_t relay_images[VMSP_RELAY_IMAGES];
};

struct vmsp_ref {
    struct vmsp_conn *conn;   // the shared page, unmapped when the ref is freed
    void *owner;              // the Swift object that owns this process's mappings and link descriptors
    // Descriptors in this process's table that name the connection; the last close releases our hold.
    atomic_int refs;
    // 1 for the table, +1 per call in progress: whoever drops it to 0 releases the link.
    atomic_int users;
    struct vmsp_ref *next_live, *prev_live;   // every live ref, for fork
    struct vmsp_ref *next_retired;
    int64_t retired_at;
    // A connection this process connected: where to (`vmsp_brief_key`; 0 for an accepted one), when, and by
    // which process, so that its end is remembered for the next connect there (brief.c).
    uint64_t brief_key;
    int64_t opened_ns;
    pid_t opener;
    // Which connection this is, never reused within the process (unlike the ref's or the page's address): what a
    // parked epoll registration is matched with (epoll.c).
    uint64_t serial;
    // The program cleared a descriptor's close-on-exec flag itself (fcntl F_SETFD): a new image that inherits it
    // gets it on purpose (ferry.c, on_purpose).
    atomic_int handed;
    // The epoll sets it was added to, by number and serial (epoll.c): its last user waits out their scans before
    // the rings go. Past VMSP_EPOLL_SETS of them, or one not written yet (serial 0), it waits for every set.
    atomic_int epoll_set_count;
    struct { atomic_int fd; _Atomic uint64_t serial; } epoll_sets[VMSP_EPOLL_SETS];
};

// The connection's locks are robust: a lock whose holder died (a forked sibling killed inside a read) is taken
// over, not waited for forever. stream.c takes them with plain pthread_mutex_lock; this turns those calls into
// ones that make the lock consistent again. The positions a dead holder left are the last it published (it
// stores a position only after copying), so going on from them loses or repeats no byte it handed over.
static inline int vmsp_mutex_lock(pthread_mutex_t *lock) {
    int result = pthread_mutex_lock(lock);
    if (__builtin_expect(result == EOWNERDEAD, 0)) {
        pthread_mutex_consistent(lock);
        result = 0;
    }
    return result;
}
#define pthread_mutex_lock vmsp_mutex_lock

// MARK: The descriptor table: one atomic pointer per descriptor number; NULL for every descriptor not ours.

extern _Atomic(struct vmsp_ref *) *vmsp_table;
extern atomic_uchar *vmsp_listening;
/// Per descriptor, under --stats: a connect that went to TCP began a connection here, counted, and no later
/// connect has completed it yet (interpose.c's tcp_connect).
extern atomic_uchar *vmsp_connect_began;
/// A connection's link descriptors, which close and close_range leave alone (table.c).
extern atomic_uchar *vmsp_library_fd;
extern int vmsp_table_size;
/// The highest descriptor ever installed: exec's scans of the table stop there.
extern atomic_int vmsp_table_high;

static inline struct vmsp_ref *vmsp_lookup(int fd) {
    if ((unsigned)fd >= (unsigned)vmsp_table_size) return NULL;
    return atomic_load_explicit(&vmsp_table[fd], memory_order_acquire);
}
void vmsp_table_init(void);
/// Takes a call's reference on the connection at fd, or returns NULL (not ours, or closing).
struct vmsp_ref *vmsp_enter(int fd);
void vmsp_leave(struct vmsp_ref *r);
struct vmsp_ref *vmsp_conn_new(const vmsp_link_info *info, int nonblocking);
/// Installs r at fd (one more reference); a connection already there loses this one.
void vmsp_install(int fd, struct vmsp_ref *r);
/// Removes fd from the table, returning its ref (with the table's reference, to drop with vmsp_drop).
struct vmsp_ref *vmsp_remove(int fd);
/// Before the real close of a descriptor vmsp_remove returned r for: if this is the last one in the last process
/// holding the socket, the connection is shut down (closed bit, stale wake-ups drained so the kernel sends FIN,
/// not RST).
void vmsp_before_last_close(struct vmsp_ref *r, int fd);
void vmsp_drop(struct vmsp_ref *r);
void vmsp_live_lock(void);
void vmsp_live_unlock(void);
/// In a forked child (the live list locked): this process now holds every live connection too.
void vmsp_hold_all_after_fork(void);
/// The live connections, with repeats, into `out` (up to `capacity`): the count, perhaps more (a relay's clean-up).
size_t vmsp_live_connections(struct vmsp_conn **out, size_t capacity);
/// In the parent, after fork returned `child`: it holds every live connection too.
void vmsp_hold_all_for_child(pid_t child);

// MARK: Which processes hold a connection (holders.c).

void vmsp_holders_init(struct vmsp_conn *c);
void vmsp_holders_add_self(struct vmsp_conn *c);
/// In the parent, once fork returned: the child holds c too (the child also adds itself, but later).
void vmsp_holders_add_child(struct vmsp_conn *c, pid_t child);
/// Forks between the prepare handler and the parent's counting of the child: a close then is not the last.
extern atomic_int vmsp_forks_in_flight;
/// Takes this process out of c's holders; returns 1 when another process that holds it is still alive.
int vmsp_holders_leave(struct vmsp_conn *c);
/// Whether this process is the one its holder identity names (false in a vfork child, which shares our memory).
int vmsp_holders_is_self(void);
/// execveat as the exec wrappers do it (a raw call routed by rawcall.c).
int vmsp_execveat(int dirfd, const char *path, char *const argv[], char *const envp[], int flags);
/// In the constructor: ends the descriptors the previous image held for shared-memory sockets (exec.c).
void vmsp_exec_inherited(void);
/// vfork (real.c): libc's until this process has state of ours a vfork child could change (descriptors of
/// connections, listeners, epoll sets); fork from then on. Hidden: the wrapper reaches them without the GOT.
extern atomic_int vmsp_has_state __attribute__((visibility("hidden")));
extern void *vmsp_real_vfork __attribute__((visibility("hidden")));
pid_t vmsp_vfork_as_fork(void) __attribute__((visibility("hidden")));
void vmsp_note_state(void);
/// Whether a process other than this one holds the connection (holders.c).
int vmsp_holders_others(struct vmsp_conn *c);
/// fork as the program's goes (the child a holder of every connection), but not counted as the program's (no
/// daemon's take-over of its listeners, no mark that it forked): for the library's own children (ferry.c).
pid_t vmsp_fork_quietly(void);

// MARK: Relays for connections a new image inherits (ferry.c).

enum { VMSP_RELAYS = 16, VMSP_RELAY_FDS = 64 };
struct vmsp_relays {
    int inherited;                      // descriptors of ours the new image receives, relayed or not
    int count;                          // relays, one per connection
    struct vmsp_conn *conn[VMSP_RELAYS];
    int app[VMSP_RELAYS];               // the new image's end of each relay's TCP connection (close-on-exec here),
                                        // or of an ended socket where no relay could be made
    int go[VMSP_RELAYS];                // close-on-exec: its end starts the relay, a byte on it sends it away;
                                        // -1 for an ended socket
    int fds;                            // descriptors that go to a relay's socket at exec
    int fd[VMSP_RELAY_FDS], relay[VMSP_RELAY_FDS], saved[VMSP_RELAY_FDS];
};
/// Before exec, outside a vfork child: a relay for each connection the new image inherits (not close-on-exec).
void vmsp_relay_prepare(struct vmsp_relays *plan);
/// The same for posix_spawn, with its file actions (NULL for none): a close-on-exec socket they copy
/// (vmsp_spawn_copies) goes to the new image too, and a connection they copy is handed over on purpose, so its
/// relay may read while the parent keeps its copy (ferry.c, on_purpose).
void vmsp_relay_prepare_spawn(struct vmsp_relays *plan, const posix_spawn_file_actions_t *actions);
/// Whether posix_spawn's `actions` copy `fd` (one of our sockets) to a number in the new image (actions.c).
int vmsp_spawn_copies(const posix_spawn_file_actions_t *actions, int fd);
/// Whether posix_spawn's `actions` take `fd` away from the new image (replace or close it) without copying it.
int vmsp_spawn_takes(const posix_spawn_file_actions_t *actions, int fd);
/// Set by popen and system (shell.c) around their spawn: the shell does not hand the listeners on (exec.c).
extern __thread int vmsp_shell_spawning;
/// After fork, in the child: popen's and system's lock (shell.c) as new.
void vmsp_shell_after_fork(void);
/// A spawn of a program that will not load this library runs through vmsock-run (trampoline.c): this library's
/// path and vmsock-run's next to it (buffers of `capacity`), and the program's path as posix_spawn (`search` 0)
/// or posix_spawnp (1) finds it; 0 when one is not there.
int vmsp_trampoline_paths(char *library, char *runner, size_t capacity);
int vmsp_trampoline_program(const char *file, int search, char *out, size_t capacity);
/// Whether the ELF program at `path` will not load this library (static, or of another class or machine).
int vmsp_program_skips_preload(const char *path);
int vmsp_relay_carries(const struct vmsp_relays *plan, int fd);
/// Just before exec: the descriptors take the relays' sockets.
void vmsp_relay_swap(struct vmsp_relays *plan);
/// exec failed: the descriptors back, the relays sent away.
void vmsp_relay_exec_failed(struct vmsp_relays *plan);
/// posix_spawn: the VMSOCK_RELAYED entry for the new image's constructor; then each relay started or sent away.
int vmsp_relay_entry(struct vmsp_relays *plan, char *out, size_t capacity);
void vmsp_relay_spawned(struct vmsp_relays *plan, int started, pid_t image);
/// A connection passed in an SCM_RIGHTS message: a relay for the receiver (its socket, or -1), then started once
/// the message went (`sent`) or sent away (ferry.c); passing.c's sendmsg does both.
int vmsp_relay_for_passing(struct vmsp_conn *c, int fd, int *go);
void vmsp_relay_passed(int go, int sent);
ssize_t vmsp_sendmsg_passing(int sock, const struct msghdr *msg, int flags);
/// Whether `msg`'s control data passes one of our connections or registered listeners (passing.c).
int vmsp_passes_ours(const struct msghdr *msg);
/// One end of a socket pair whose other end is closed: a stand-in that reads as end of stream, or -1.
int vmsp_ended_socket(void);
/// In a relay's process, just forked (ferry.c): keeps connection `c` (number `fd` here) for the new image, whose
/// end of TCP socket `sock` (inode `app_inode`) carries it, once a byte or the end arrives on `go`; never returns.
void vmsp_run_relay(struct vmsp_conn *c, int fd, int sock, int go, ino_t app_inode, int may_claim, pid_t image)
    __attribute__((noreturn));
/// The new image `image` no longer writes through a relay of `c` (all it wrote is in the ring, or the relay ended).
void vmsp_relay_forget_image(struct vmsp_conn *c, pid_t image);
/// A child reaped: wait (a bounded while) until the relays of the connections it inherited have put into the
/// rings everything it wrote, so that this process's next write comes after it, as over TCP.
void vmsp_relays_settle(pid_t child);
/// After fork, in the child: who this process is (its pid and start time) changed.
void vmsp_holders_forget_self(void);

// MARK: The data path (stream.c).

ssize_t vmsp_recv(struct vmsp_conn *c, int fd, const struct iovec *iov, int iovcnt, int flags);
ssize_t vmsp_send(struct vmsp_conn *c, int fd, const struct iovec *iov, int iovcnt, int flags, int from_write);
ssize_t vmsp_sendfile(struct vmsp_conn *c, int fd, int in_fd, off_t *offset, size_t count);
int vmsp_readable_bytes(struct vmsp_conn *c);
int64_t vmsp_writable_bytes(struct vmsp_conn *c);
/// Whether writes fail now: then EPIPE, with SIGPIPE as a send without MSG_NOSIGNAL raises it (splice asks before
/// it takes bytes from a pipe).
int vmsp_tx_refuses(struct vmsp_conn *c);
void vmsp_shutdown_bits(struct vmsp_conn *c, int how);
void vmsp_drain_wakeups(struct vmsp_conn *c, int fd);
// Readiness from the rings, for the interposed waits (no lock, no system call), and the arms a wait sets before
// it sleeps (see stream.c).
/// The TCP socket now carries only wake-up bytes: each must go at once (TCP_NODELAY; the application's own
/// setting is kept aside, see sockopt.c).
void vmsp_wake_socket_ready(struct vmsp_conn *c, int fd);
int vmsp_rx_ready(struct vmsp_conn *c);
/// How long a wait looks at the rings before it sleeps (spin.c): VMSOCK_SPIN_US (50 µs by default) to start with,
/// then learnt per wait (an epoll set, a thread's poll or blocking call) from how its sleeps end.
struct vmsp_spin { int ns; };
int vmsp_spin_ns(void);
int64_t vmsp_spin_budget(struct vmsp_spin *s);
/// After a sleep of `slept_ns`: `woke` says it ended with something to report (not a timeout).
void vmsp_spin_slept(struct vmsp_spin *s, int64_t slept_ns, int woke);
static inline void vmsp_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}
uint64_t vmsp_rx_mark(struct vmsp_conn *c);
int vmsp_peer_gone(struct vmsp_conn *c);
void vmsp_control_woke(struct vmsp_conn *c);
int vmsp_rx_shut(struct vmsp_conn *c);
int vmsp_tx_ready(struct vmsp_conn *c);
uint64_t vmsp_tx_mark(struct vmsp_conn *c);
int vmsp_rx_arm(struct vmsp_conn *c, int fd, int *bell);
void vmsp_rx_disarm(struct vmsp_conn *c, int bell);
/// Clears the data doorbell's rings (a wait that sleeps on it does, when it wakes).
void vmsp_data_bell_drain(struct vmsp_conn *c);
int vmsp_tx_arm(struct vmsp_conn *c);
void vmsp_tx_disarm(struct vmsp_conn *c);
// MARK: epoll sets (epoll.c): a record per set made by epoll_create, dropped when its descriptor closes.
struct vmsp_epoll;
void vmsp_epoll_adopt(int fd);
/// stdio.c: descriptor 0, 1 or 2 became one of our connections; its standard stream becomes one of ours.
void vmsp_stdio_adopt(int fd);

// MARK: Connections that end quickly (brief.c): TCP for a destination whose shared-memory connections keep doing so.
uint64_t vmsp_brief_key(const struct sockaddr *address, socklen_t length);
/// Whether a connect to the destination should use TCP; `run` gets how many brief connections in a row it had.
int vmsp_brief_prefers_tcp(uint64_t key, int *run);
/// Remembers how a shared-memory connection to the destination ended.
void vmsp_brief_note(uint64_t key, int64_t lifetime_ns, uint64_t bytes);
/// The connect that vmsp_brief_prefers_tcp just let probe shared memory was not a new connection (a second
/// connect on a connecting socket, or not TCP): the next connect there probes instead.
void vmsp_brief_probe_next(uint64_t key);
int vmsp_brief_limit_ms(void);
/// The record of the set at fd gives way to `set` (NULL when the descriptor closes or is replaced).
void vmsp_epoll_replace(int fd, struct vmsp_epoll *set);
/// Before a connection that was in an epoll set unmaps its rings: waits out every scan of its sets (epoll.c).
void vmsp_epoll_barrier(struct vmsp_ref *r);
/// In a forked child (real.c): the sets' locks made new, no sleeper counted.
void vmsp_epoll_after_fork_child(void);
/// The descriptor fd is about to close or be replaced: if it is an epoll set, its record goes.
static inline void vmsp_epoll_closing(int fd) { vmsp_epoll_replace(fd, NULL); }

// MARK: Signal handlers that ran while a wait spun (signals.c).

/// The counts of the program's handlers run so far on this thread: any, and those without SA_RESTART.
struct vmsp_signal_mark { unsigned any, interrupting; };
struct vmsp_signal_mark vmsp_signal_mark(void);
/// Whether a handler ran since `mark` (any: every handler, as poll, select and epoll see them; else only those
/// without SA_RESTART, as a socket call sees them). One atomic load: the spins ask it as they turn.
int vmsp_signalled(struct vmsp_signal_mark mark, int any);
/// SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGSYS: raised by an instruction, never interrupting a call.
int vmsp_is_fault_signal(int sig);

// MARK: Debug output and process state.

void vmsp_debug(const char *format, ...) __attribute__((format(printf, 1, 2)));
/// What --stats counts (--debug too): connections by the transport they got. A connect that failed and an accept
/// that was shut down count in neither.
enum vmsp_tally { VMSP_CONNECT_SHM, VMSP_CONNECT_TCP, VMSP_ACCEPT_SHM, VMSP_ACCEPT_TCP, VMSP_TALLIES };
void vmsp_tally(enum vmsp_tally what);
/// Whether connections are counted (--stats or --debug): a path that would not otherwise learn whether a socket
/// is TCP asks only then.
int vmsp_counting(void);
/// The wake-ups this process sent on data doorbells and on TCP sockets, printed at exit with the tallies (exec,
/// _exit and a killing signal print nothing). A forked child forgets its parent's counts.
void vmsp_wakeups_sent(unsigned long long *bells, unsigned long long *sockets);
void vmsp_forget_wakeups(void);
void vmsp_format_address(const struct sockaddr *address, socklen_t length, char *out, size_t capacity);
extern atomic_int vmsp_forked_child, vmsp_parent_forked;

// MARK: Links welcomed by another process (claim.c).

/// The process whose listener thread answers hellos for this process's listeners (inherited across fork).
extern pid_t vmsp_listen_owner;
/// The process that first tried to register a listener in this line of forks (0: none): a forked child may
/// register its own only if none did before it (real.c).
extern pid_t vmsp_listen_tried;
int vmsp_own_listens_allowed(void);
/// Whether this forked child's copy of the Swift set-up was whole at its fork (real.c).
int vmsp_child_setup_whole(void);
/// The parent at this process's fork (0 in the first process).
extern pid_t vmsp_forked_from;
/// Before this process's first fork: if it inherited listeners whose owner has exited, it takes them over.
void vmsp_adopt_orphaned_listeners(void);
/// Registers fd (a listening socket) as this process's: 1 when shared memory is offered (interpose.c).
int vmsp_register_listener(int fd, char *reason, size_t capacity);
extern atomic_int vmsp_claims_open;
/// Claims the link welcomed for the connector at `peer` (its address and port) on `listener` from
/// vmsp_listen_owner: 1 with *info filled (owner tagged with bit 0: release with vmsp_claim_release), 0 none
/// (TCP), -1 the owner takes no claims (TCP: then it welcomes nobody either), -2 failed after asking (the
/// connector may use shared memory).
int vmsp_claim(int listener, const struct sockaddr_storage *peer, vmsp_link_info *info, char *reason, size_t capacity);
void vmsp_claim_release(void *owner);
void vmsp_welcome_book_init(void);
/// A process of this listener family uses io_uring: its owner welcomes nobody from now on (see rawcall.c).
void vmsp_welcome_book_note_uring(void);
int vmsp_welcome_book_uring(void);
/// A new image inherited a registered listening socket: its owner welcomes nobody from now on (see exec.c).
void vmsp_welcome_book_note_handed_on(void);
/// Takes back one mark of the above (a message that passed a listener could not be sent).
void vmsp_welcome_book_unnote_handed_on(void);
/// Either mark: the family's owner welcomes nobody.
int vmsp_welcome_book_closed(void);
/// Above the highest descriptor ever registered as a listener (its marks in vmsp_listening end below it).
extern atomic_int vmsp_listening_end;
/// The owner's forks since its first registration (the book's), or -1 without a book; counted by the owner.
void vmsp_welcome_book_count_fork(void);
int vmsp_welcome_book_forks(void);
/// A new book, for a process that takes listeners over from an owner that exited (adopt.c).
void vmsp_welcome_book_renew(void);
/// Whether a link may be welcomed for the connection from `peer`: 0 only when surely not (see claim.c).
int vmsp_welcome_possible(const struct sockaddr_storage *peer);

// MARK: Ways past the named calls (rawcall.c).

/// Why this process may use io_uring (liburing is loaded, or io_uring_setup went through syscall()), or NULL.
/// The first time it is not NULL, the process's registrations are withdrawn: its connections must all be TCP.
const char *vmsp_uring_reason(void);
/// Whether vmsp_uring_reason has found io_uring in this process (no look of its own).
int vmsp_uring_seen(void);
/// Withdraws the registration of the listening socket fd, if it has one (close does it too).
void vmsp_forget_listener(int fd);

// MARK: The Swift half (@_cdecl in Sources/VMSockPreload).

/// 1 with *info filled: the listener welcomed us; 0: TCP, with the reason in `reason`.
int vmsock_preload_connect(int fd, const struct sockaddr *destination, socklen_t length, vmsp_link_info *info,
                           char *reason, size_t reason_capacity);
/// 1: the listener is registered; 0: it stays TCP-only, with the reason.
int vmsock_preload_listen(int fd, char *reason, size_t reason_capacity);
void vmsock_preload_unlisten(int fd);
/// Sets aside the listener state a forked child copied from its parent, and starts it empty (see adopt.c).
void vmsock_preload_forget_copied_listeners(void);
/// 1 with *info filled: fd (just accepted on listener) is the TCP half of a welcomed link; 0: TCP, with the reason.
int vmsock_preload_accept(int listener, int fd, vmsp_link_info *info, char *reason, size_t reason_capacity);
void vmsock_preload_release(void *owner);

#endif
