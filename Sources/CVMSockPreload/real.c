// The next definitions of every interposed call (libc's), the per-process state, and what happens at fork.
#include "preload.h"
#include "CVMSock.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sched.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct vmsp_real vmsp_real;
__thread int vmsp_inside;
atomic_int vmsp_forked_child, vmsp_parent_forked;
static int debug_enabled, stats_enabled;
static atomic_ullong tallies[VMSP_TALLIES];

// dlsym may allocate, never reads or writes a descriptor, so resolving from inside an interposed call is safe.
void vmsp_resolve(void) {
#define RESOLVE(field, symbol) if (!vmsp_real.field) *(void **)&vmsp_real.field = dlsym(RTLD_NEXT, symbol)
    RESOLVE(read, "read"); RESOLVE(write, "write"); RESOLVE(readv, "readv"); RESOLVE(writev, "writev");
    RESOLVE(recv, "recv"); RESOLVE(send, "send"); RESOLVE(recvfrom, "recvfrom"); RESOLVE(sendto, "sendto");
    RESOLVE(recvmsg, "recvmsg"); RESOLVE(sendmsg, "sendmsg"); RESOLVE(read_chk, "__read_chk");
    RESOLVE(recv_chk, "__recv_chk"); RESOLVE(recvfrom_chk, "__recvfrom_chk"); RESOLVE(sendfile, "sendfile");
    RESOLVE(connect, "connect"); RESOLVE(listen, "listen"); RESOLVE(accept, "accept"); RESOLVE(accept4, "accept4");
    RESOLVE(shutdown, "shutdown"); RESOLVE(close, "close"); RESOLVE(dup, "dup"); RESOLVE(dup2, "dup2");
    RESOLVE(dup3, "dup3"); RESOLVE(fcntl, "fcntl"); RESOLVE(fcntl64, "fcntl64"); RESOLVE(ioctl, "ioctl");
    RESOLVE(close_range, "close_range"); RESOLVE(recvmmsg, "recvmmsg"); RESOLVE(sendmmsg, "sendmmsg");
    RESOLVE(ppoll, "ppoll"); RESOLVE(poll, "poll"); RESOLVE(select, "select"); RESOLVE(pselect, "pselect");
    RESOLVE(epoll_create, "epoll_create"); RESOLVE(epoll_create1, "epoll_create1"); RESOLVE(epoll_ctl, "epoll_ctl");
    RESOLVE(epoll_pwait, "epoll_pwait"); RESOLVE(epoll_pwait2, "epoll_pwait2");
    RESOLVE(setsockopt, "setsockopt"); RESOLVE(getsockopt, "getsockopt"); RESOLVE(sigaction, "sigaction");
    RESOLVE(splice, "splice"); RESOLVE(fork, "fork");
    RESOLVE(execve, "execve"); RESOLVE(execvpe, "execvpe"); RESOLVE(fexecve, "fexecve");
    RESOLVE(posix_spawn, "posix_spawn"); RESOLVE(posix_spawnp, "posix_spawnp"); RESOLVE(syscall, "syscall");
    RESOLVE(preadv2, "preadv2"); RESOLVE(pwritev2, "pwritev2");
    RESOLVE(fdopen, "fdopen"); RESOLVE(vdprintf, "vdprintf"); RESOLVE(vdprintf_chk, "__vdprintf_chk");
    RESOLVE(popen, "popen"); RESOLVE(pclose, "pclose"); RESOLVE(fclose, "fclose");
    if (!vmsp_real.fcntl64) vmsp_real.fcntl64 = vmsp_real.fcntl;
#undef RESOLVE
    if (!vmsp_real_vfork) vmsp_real_vfork = dlsym(RTLD_NEXT, "vfork");
}

// MARK: Library-owned descriptors a forked child must not keep

static pthread_mutex_t internal_lock = PTHREAD_MUTEX_INITIALIZER;
static int internal_fds[256];
static int internal_count;

void vmsp_note_internal_fd(int fd) {
    pthread_mutex_lock(&internal_lock);
    if (internal_count < (int)(sizeof internal_fds / sizeof internal_fds[0])) internal_fds[internal_count++] = fd;
    pthread_mutex_unlock(&internal_lock);
}

void vmsp_forget_internal_fd(int fd) {
    pthread_mutex_lock(&internal_lock);
    for (int i = 0; i < internal_count; i++) {
        if (internal_fds[i] == fd) { internal_fds[i] = internal_fds[--internal_count]; break; }
    }
    pthread_mutex_unlock(&internal_lock);
}

// MARK: The Swift set-up, and fork
//
// After fork the child has one thread: any lock another thread held in the Swift set-up (a Mutex, a lazy global
// being made) stays held in the child for good, and any state it was changing stays half changed. A child still
// calls into that state: to accept on an inherited listener (its claim, PreloadListeners) and to release a link.
// So every stretch of Swift set-up code runs between vmsp_setup_enter and vmsp_setup_leave, and the fork handler
// closes the gate and waits until no thread is inside. The wait is bounded (a connect inside may wait up to a
// second for its welcome, and fork may be called from a signal handler that interrupted the set-up on the same
// thread): after `setup_wait_ns` the fork goes ahead, as every fork did before the gate.
//
// A child whose fork found the set-up idle makes shared-memory connections of its own, as its parent does (a
// prefork server's workers reaching a cache or a database, nginx's workers their upstreams): its copy of the
// Swift state is whole. One whose fork went ahead with a thread inside (after `setup_wait_ns`) connects over
// TCP. Short-lived connections go to TCP after a run of them, per process (brief.c).
static atomic_int setup_busy;       // threads inside the set-up
static atomic_int setup_closed;     // forks waiting or under way: nobody enters
static const long setup_wait_ns = 20 * 1000 * 1000;

void vmsp_setup_enter(void) {
    for (;;) {
        atomic_fetch_add(&setup_busy, 1);
        if (!atomic_load(&setup_closed)) return;
        atomic_fetch_sub(&setup_busy, 1);
        while (atomic_load(&setup_closed)) sched_yield();
    }
}

void vmsp_setup_leave(void) { atomic_fetch_sub(&setup_busy, 1); }

static long monotonic_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec * 1000000000L + now.tv_nsec;
}

// Closes the gate (until every fork under way has ended) and waits, a bounded while, until the set-up is empty.
static void close_setup(void) {
    atomic_fetch_add(&setup_closed, 1);
    long until = monotonic_ns() + setup_wait_ns;
    while (atomic_load(&setup_busy) != 0 && monotonic_ns() <= until) sched_yield();
}

// After fork both processes hold every shared-memory socket, and share its state (the connection's page is
// MAP_SHARED): either may read and write, and only the last holder's close ends the connection (holders.c). The
// child joins each connection's holders here, and closes the registrations it inherited, so that no connector
// waits on a process that does not answer. When the child accepts on an inherited listener, it claims the link
// the parent's listener thread welcomed (claim.c). Its own listens offer shared memory only when it inherited
// no listener state (vmsp_own_listens_allowed, below); its connects use shared memory when its copy of the set-up
// is whole (above).

// The child must count as a holder before the parent can close anything: the child adds itself, but only once
// it runs, so the parent adds it too, as soon as fork returns its pid (hence fork is interposed), and until then
// no close counts as the last. A fork that does not come through here (clone, _Fork) runs no handler at all.
atomic_int vmsp_forks_in_flight;
static __thread int forking;
static __thread int library_fork;  // a relay's (ferry.c): not a fork of the program's listeners' owner

static pid_t fork_holding(void) {
    forking = 1;
    pid_t pid = REAL(fork)();
    if (pid == 0) return 0;
    if (pid > 0) vmsp_hold_all_for_child(pid);
    forking = 0;
    atomic_fetch_sub(&vmsp_forks_in_flight, 1);
    return pid;
}

pid_t fork(void) {
    if (!atomic_load(&vmsp_parent_forked)) vmsp_adopt_orphaned_listeners();  // before its children copy the owner
    return fork_holding();
}

pid_t vmsp_fork_quietly(void) {
    library_fork = 1;
    pid_t pid = fork_holding();
    library_fork = 0;
    return pid;
}

// The parent, as the child reads it: getppid there may already be init's (or a subreaper's).
static _Atomic pid_t forking_process;

static void before_fork(void) {
    atomic_store_explicit(&forking_process, getpid(), memory_order_relaxed);
    atomic_fetch_add(&vmsp_forks_in_flight, 1);
    close_setup();  // first: a thread inside the set-up may be about to take the locks below
    pthread_mutex_lock(&internal_lock);
    vmsp_live_lock();
}

static void after_fork_parent(void) {
    if (!forking) atomic_fetch_sub(&vmsp_forks_in_flight, 1);  // not our fork(): nobody else will
    if (!library_fork) {
        atomic_store(&vmsp_parent_forked, 1);
        vmsp_welcome_book_count_fork();
    }
    vmsp_live_unlock();
    pthread_mutex_unlock(&internal_lock);
    atomic_fetch_sub(&setup_closed, 1);
}

static atomic_int child_setup_whole;

static void after_fork_child(void) {
    vmsp_forked_from = atomic_load_explicit(&forking_process, memory_order_relaxed);
    // The gate first: closing an inherited connection below may call the set-up (to release its link). What it
    // counted at the fork says whether a thread was inside (or about to look at the closed gate: counted too);
    // and a copy of a copy that was not whole is not whole either (a grandchild of such a fork).
    atomic_store(&child_setup_whole, atomic_load(&setup_busy) == 0 && vmsp_connects_allowed());
    atomic_store(&setup_busy, 0);  // the threads counted there, and other forks under way, are the parent's
    atomic_store(&setup_closed, 0);
    atomic_store(&vmsp_forks_in_flight, 0);
    forking = 0;
    vmsp_self_pid = getpid();
    atomic_store(&vmsp_forked_child, 1);
    atomic_store(&vmsp_parent_forked, 0);  // this process has forked nobody yet
    vmsp_forget_wakeups();
    for (int i = 0; i < VMSP_TALLIES; i++) atomic_store_explicit(&tallies[i], 0, memory_order_relaxed);
    for (int i = 0; i < internal_count; i++) REAL(close)(internal_fds[i]);
    internal_count = 0;
    pthread_mutex_init(&internal_lock, NULL);
    vmsp_shell_after_fork();
    vmsp_epoll_after_fork_child();
    vmsp_hold_all_after_fork();
    vmsp_live_unlock();
}

// MARK: vfork
//
// A vfork child shares this process's memory until it execs or exits, and what the program does there goes
// through this library. Python's subprocess, for one, moves descriptors with dup2 and closes every other one
// (close_range) in its vfork child: each of those changed the parent's descriptor table, listener marks and
// epoll records, and a shared-memory connection the parent kept ended (the child's close counted as the
// parent's). So once this process has any of that state, vfork is fork: the child gets its own copy, joins the
// connections' holders, and its exec hands the connections it passes on to relays (ferry.c). The parent goes on
// at once, as after fork (waiting for the child's exec, as vfork does, would hang on a pipe end that another
// thread's fork copied meanwhile; a program that is right with vfork is right with fork). Until then vfork is
// libc's: the wrapper jumps to it without a frame of its own, since a vfork child must not return through a
// frame its parent returns through again. (A vfork child that writes its parent's memory on purpose, which
// POSIX does not allow, does so in a copy then.)
atomic_int vmsp_has_state;
void *vmsp_real_vfork;

void vmsp_note_state(void) {
    if (!atomic_load_explicit(&vmsp_has_state, memory_order_relaxed)) atomic_store(&vmsp_has_state, 1);
}

pid_t vmsp_vfork_as_fork(void) { return fork(); }

#if defined(__x86_64__)
__asm__(".text\n"
        ".globl vfork\n"
        ".type vfork, @function\n"
        "vfork:\n"
        "    cmpl $0, vmsp_has_state(%rip)\n"
        "    jne vmsp_vfork_as_fork\n"
        "    movq vmsp_real_vfork(%rip), %rax\n"
        "    testq %rax, %rax\n"
        "    jz vmsp_vfork_as_fork\n"
        "    jmp *%rax\n"
        ".size vfork, .-vfork\n");
#elif defined(__aarch64__)
__asm__(".text\n"
        ".globl vfork\n"
        ".type vfork, %function\n"
        "vfork:\n"
        "    adrp x16, vmsp_has_state\n"
        "    ldr w16, [x16, :lo12:vmsp_has_state]\n"
        "    cbnz w16, vmsp_vfork_as_fork\n"
        "    adrp x16, vmsp_real_vfork\n"
        "    ldr x16, [x16, :lo12:vmsp_real_vfork]\n"
        "    cbz x16, vmsp_vfork_as_fork\n"
        "    br x16\n"
        ".size vfork, .-vfork\n");
#endif

int vmsp_child_setup_whole(void) { return atomic_load(&child_setup_whole); }

int vmsp_connects_allowed(void) { return !atomic_load(&vmsp_forked_child) || atomic_load(&child_setup_whole); }

pid_t vmsp_listen_tried;

// A forked child listens as its own owner (its own listener thread, claim socket and welcome book) when nothing
// of a listener came with its fork: no process up its line tried to register one, so the Swift listener state it
// copied is untouched; and that copy is whole. That is the daemon that forks before it listens (redis
// --daemonize yes). A child that inherited registrations stays TCP for its own listens: one listener thread per
// process answers for the registrations it made, and the copied ones are its parent's.
int vmsp_own_listens_allowed(void) {
    if (!atomic_load(&vmsp_forked_child)) return 1;
    return atomic_load(&child_setup_whole) && (vmsp_listen_tried == 0 || vmsp_listen_tried == getpid());
}

// After a fork, a child may accept a connection whose hello this process answered: fine once the child can
// claim the link (claim.c), which needs this process's claim socket.
// And never once a process of the family uses io_uring (rawcall.c), or handed a listening socket to a new image
// (exec.c): either may accept without claiming.
int vmsp_listeners_allowed(void) {
    return vmsp_own_listens_allowed() && (atomic_load(&vmsp_claims_open) || !atomic_load(&vmsp_parent_forked)) &&
           !vmsp_welcome_book_closed();
}

atomic_int vmsp_claims_open;
void vmsp_claims_ready(void) { atomic_store(&vmsp_claims_open, 1); }

pid_t vmsp_self_pid;

__attribute__((constructor)) static void vmsp_constructor(void) {
    vmsp_self_pid = getpid();
    vmsp_resolve();
    vmsp_table_init();
    // Every VMSOCK_ setting, ours and the Swift half's, is read from a copy kept now (vms_setting): a program may
    // replace its environment before its first wait or connect (nginx keeps only TZ in its processes', and
    // VMSOCK_SPIN_US was lost there).
    vms_settings_keep();
    const char *debug = vms_setting("VMSOCK_DEBUG");
    const char *stats = vms_setting("VMSOCK_STATS");
    debug_enabled = debug && strcmp(debug, "1") == 0;
    stats_enabled = debug_enabled || (stats && strcmp(stats, "1") == 0);
    pthread_atfork(before_fork, after_fork_parent, after_fork_child);
    vmsp_exec_inherited();
}

// MARK: Debug output and counts: one write(2) per line, straight to libc.

static void write_line(const char *format, va_list args) {
    int saved = errno;
    char line[512];
    int n = snprintf(line, sizeof line, "vmsock-run[%d]: ", (int)getpid());
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, format, args);
    size_t length = (size_t)n + (m < 0 ? 0 : (size_t)m < sizeof line - (size_t)n - 1 ? (size_t)m : sizeof line - (size_t)n - 2);
    line[length++] = '\n';
    (void)REAL(write)(2, line, length);
    errno = saved;
}

static void print_line(const char *format, ...) __attribute__((format(printf, 1, 2)));
static void print_line(const char *format, ...) {
    va_list args;
    va_start(args, format);
    write_line(format, args);
    va_end(args);
}

int vmsp_debug_enabled(void) { return debug_enabled; }

void vmsp_enter_library_thread(void) { vmsp_inside = 1; }

void vmsp_debug(const char *format, ...) {
    if (!debug_enabled) return;
    va_list args;
    va_start(args, format);
    write_line(format, args);
    va_end(args);
}

int vmsp_counting(void) { return stats_enabled; }

void vmsp_tally(enum vmsp_tally what) {
    if (stats_enabled) atomic_fetch_add_explicit(&tallies[what], 1, memory_order_relaxed);
}

// At exit, with --stats or --debug: how this process's connections were made, and how it woke its peers' readers.
__attribute__((destructor)) static void vmsp_destructor(void) {
    if (!stats_enabled) return;
    unsigned long long n[VMSP_TALLIES], bells, sockets, any = 0;
    for (int i = 0; i < VMSP_TALLIES; i++) any |= n[i] = atomic_load_explicit(&tallies[i], memory_order_relaxed);
    vmsp_wakeups_sent(&bells, &sockets);
    if (!(any | bells | sockets)) return;
    print_line("connects: %llu shared memory, %llu tcp; accepts: %llu shared memory, %llu tcp; "
               "wake-ups sent: %llu on data doorbells, %llu on TCP sockets", n[VMSP_CONNECT_SHM],
               n[VMSP_CONNECT_TCP], n[VMSP_ACCEPT_SHM], n[VMSP_ACCEPT_TCP], bells, sockets);
}

void vmsp_format_address(const struct sockaddr *address, socklen_t length, char *out, size_t capacity) {
    char host[INET6_ADDRSTRLEN] = "?";
    if (address && address->sa_family == AF_INET && length >= sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)address;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        snprintf(out, capacity, "%s:%u", host, ntohs(in->sin_port));
    } else if (address && address->sa_family == AF_INET6 && length >= sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)address;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        snprintf(out, capacity, "[%s]:%u", host, ntohs(in6->sin6_port));
    } else {
        snprintf(out, capacity, "?");
    }
}

// MARK: The connector's source address

// The address a connection to `destination` leaves from when its socket names none: a UDP socket "connected" to
// the destination says (no packet is sent). Port 0 in `source`. 0, or -1 with errno.
static int kernel_source(const struct sockaddr *destination, socklen_t length, struct sockaddr_storage *source,
                         socklen_t *source_length) {
    int probe = socket(destination->sa_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (probe < 0) return -1;
    *source_length = sizeof *source;
    int ok = REAL(connect)(probe, destination, length) == 0 &&
             getsockname(probe, (struct sockaddr *)source, source_length) == 0;
    int saved = errno;
    REAL(close)(probe);
    if (!ok) { errno = saved; return -1; }
    if (source->ss_family == AF_INET6) ((struct sockaddr_in6 *)source)->sin6_port = 0;
    else ((struct sockaddr_in *)source)->sin_port = 0;
    return 0;
}

static int is_wildcard(const struct sockaddr_storage *address) {
    if (address->ss_family == AF_INET6) return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)address)->sin6_addr);
    return ((const struct sockaddr_in *)address)->sin_addr.s_addr == htonl(INADDR_ANY);
}

static in_port_t port_of(const struct sockaddr_storage *address) {
    return address->ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)address)->sin6_port
                                          : ((const struct sockaddr_in *)address)->sin_port;
}

int vmsp_bind_source(int fd, const struct sockaddr *destination, socklen_t length, struct sockaddr_storage *source,
                     socklen_t *source_length) {
    *source_length = sizeof *source;
    if (getsockname(fd, (struct sockaddr *)source, source_length) != 0) return -1;
    in_port_t port = port_of(source);
    if (port != 0 && !is_wildcard(source)) return 0;  // bound by the application to one address and port
    struct sockaddr_storage picked;
    socklen_t picked_length;
    if (kernel_source(destination, length, &picked, &picked_length) != 0) return -1;
    if (port != 0) {
        // Bound to a wildcard address: the kernel picks the address at connect, this one.
        if (picked.ss_family == AF_INET6) ((struct sockaddr_in6 *)&picked)->sin6_port = port;
        else ((struct sockaddr_in *)&picked)->sin_port = port;
        *source = picked;
        *source_length = picked_length;
        return 0;
    }
    if (bind(fd, (struct sockaddr *)&picked, picked_length) != 0) return -1;
    *source_length = sizeof *source;
    return getsockname(fd, (struct sockaddr *)source, source_length);
}
