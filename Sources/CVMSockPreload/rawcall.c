// Ways past the named calls: libc's syscall(), and io_uring.
//
// syscall(): a program that makes a call through libc's generic entry (syscall(SYS_read, ...), Rust's io-uring
// crate, syscall(SYS_close_range, ...) where the libc wrapper is missing) would reach the kernel without the
// library, and read wake-up bytes as data. So every call the library interposes by name is routed here to the
// same wrapper, with the raw call's arguments turned into the wrapper's (a kernel signal set of 8 bytes, pselect6's
// packed mask, the time left written back as the kernel does). Other numbers go straight to libc's syscall.
//
// io_uring: its reads, writes, accepts and connects never pass through libc at all, so a shared-memory connection
// moved that way would carry wake-up bytes instead of data. A process that may use it therefore makes no
// shared-memory connection: once liburing is loaded in it, or once it called io_uring_setup through syscall(),
// its connects use TCP, its listens stay TCP-only, and the registrations it already made are withdrawn (links
// welcomed there and not yet accepted are dropped: their connectors see the connection end); the process that
// registered listeners it inherited welcomes nobody from then on. Not covered: a ring set up by other means
// (inline system calls, a static liburing), and a connection made before the first ring.
//
// A raw fork (like _Fork and clone) is not routed: it is async-signal-safe, and fork's handlers are not.
#include "preload.h"

#include <fcntl.h>
#include <link.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/syscall.h>
#include <unistd.h>

// MARK: io_uring

static atomic_int uring_setup_called;      // io_uring_setup went through syscall()
static atomic_int uring_library_loaded;     // liburing was found among the loaded objects
static atomic_int uring_noticed;            // the listeners were withdrawn and the line printed
static _Atomic unsigned long long objects_scanned = ~0ull;  // dlpi_adds + dlpi_subs at the last scan

struct object_scan {
    unsigned long long generation;
    int first, found;
};

static int look_at_object(struct dl_phdr_info *info, size_t size, void *data) {
    struct object_scan *scan = data;
    if (scan->first) {
        scan->first = 0;
        if (size >= offsetof(struct dl_phdr_info, dlpi_subs) + sizeof info->dlpi_subs) {
            scan->generation = info->dlpi_adds + info->dlpi_subs;
            if (scan->generation == atomic_load(&objects_scanned)) return 1;  // nothing loaded or unloaded since
        }
    }
    const char *name = info->dlpi_name ? strrchr(info->dlpi_name, '/') : NULL;
    name = name ? name + 1 : info->dlpi_name;
    // liburing.so.2, and liburing-ffi.so.2 (the same calls, not inlined, for other languages' bindings).
    if (name && (strncmp(name, "liburing.so", 11) == 0 || strncmp(name, "liburing-ffi.so", 15) == 0)) scan->found = 1;
    return scan->found;
}

// Withdraws this process's registrations once, and tells the process that registered its inherited listeners
// (the welcome book it shares with its forked children): connectors that look next find none, or are refused,
// and use TCP.
static void notice_uring(const char *why) {
    if (atomic_exchange(&uring_noticed, 1)) return;
    vmsp_welcome_book_note_uring();
    vmsp_debug("%s: io_uring moves a socket's bytes past this library, so this process's new connections use TCP "
               "and its listeners (and those it shares with its family) stop offering shared memory", why);
    // Our own registrations go (their welcomed links too: the connectors see the connection end). Inherited
    // listeners keep their mark: a link their owner welcomed before the book said so must still be claimed.
    if (vmsp_listen_owner != getpid()) return;
    for (int fd = 0; fd < vmsp_table_size; fd++) {
        if (atomic_load(&vmsp_listening[fd])) vmsp_forget_listener(fd);  // after the book's flag (a listen re-checks it)
    }
}

int vmsp_uring_seen(void) { return atomic_load(&uring_noticed); }

const char *vmsp_uring_reason(void) {
    if (!atomic_load(&uring_library_loaded) && !atomic_load(&uring_setup_called)) {
        struct object_scan scan = { ~0ull, 1, 0 };
        dl_iterate_phdr(look_at_object, &scan);
        if (scan.found) atomic_store(&uring_library_loaded, 1);
        else if (scan.generation != ~0ull) atomic_store(&objects_scanned, scan.generation);
    }
    const char *why = atomic_load(&uring_setup_called) ? "this process called io_uring_setup"
                      : atomic_load(&uring_library_loaded) ? "liburing is loaded in this process" : NULL;
    if (why) notice_uring(why);
    return why;
}

// MARK: syscall()

// The kernel's own entry, for calls that are not routed: libc's syscall() once resolved, else (a call from
// another library's constructor, before ours resolved anything: jemalloc's start-up reads files this way) the
// instruction itself, so that nothing here allocates or resolves a symbol first.
static long direct(long number, long a, long b, long c, long d, long e, long f) {
    if (vmsp_real.syscall) return vmsp_real.syscall(number, a, b, c, d, e, f);
    long result;
#if defined(__x86_64__)
    register long r10 __asm__("r10") = d, r8 __asm__("r8") = e, r9 __asm__("r9") = f;
    __asm__ volatile("syscall" : "=a"(result) : "a"(number), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
#elif defined(__aarch64__)
    register long x8 __asm__("x8") = number, x0 __asm__("x0") = a, x1 __asm__("x1") = b, x2 __asm__("x2") = c,
                  x3 __asm__("x3") = d, x4 __asm__("x4") = e, x5 __asm__("x5") = f;
    __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5) : "memory");
    result = x0;
#else
    vmsp_resolve();
    return vmsp_real.syscall(number, a, b, c, d, e, f);
#endif
    if ((unsigned long)result > -4096ul) {
        errno = (int)-result;
        return -1;
    }
    return result;
}

// A kernel signal set (`size` bytes, 8 on Linux) as libc's sigset_t; NULL stays NULL.
static const sigset_t *libc_mask(const void *kernel, long size, sigset_t *out) {
    if (!kernel) return NULL;
    sigemptyset(out);
    memcpy(out, kernel, (size_t)size < sizeof *out ? (size_t)size : sizeof *out);
    return out;
}

// As the kernel does for ppoll and pselect6: the time not slept goes back into the caller's timespec.
static void write_back_left(struct timespec *timeout, int64_t deadline) {
    if (!timeout) return;
    int64_t left = deadline - vmsp_now_ns();
    if (left < 0) left = 0;
    *timeout = (struct timespec){ left / 1000000000, left % 1000000000 };
}

// The raw calls with a signal mask: the kernel wants its mask size exactly, and refuses anything else.
static long masked(long number, long a, long b, long c, long d, long e, long f) {
    sigset_t mask;
    switch (number) {
    case SYS_ppoll: {
        if (d && e != 8) break;
        int64_t deadline = vmsp_deadline_after((const struct timespec *)c);
        int result = ppoll((struct pollfd *)a, (unsigned)b, (const struct timespec *)c, libc_mask((void *)d, e, &mask));
        int saved = errno;
        write_back_left((struct timespec *)c, deadline);
        errno = saved;
        return result;
    }
    case SYS_pselect6: {
        const struct { const void *set; long size; } *packed = (const void *)f;
        if (packed && packed->set && packed->size != 8) break;
        int64_t deadline = vmsp_deadline_after((const struct timespec *)e);
        int result = pselect((int)a, (fd_set *)b, (fd_set *)c, (fd_set *)d, (const struct timespec *)e,
                             packed ? libc_mask(packed->set, packed->size, &mask) : NULL);
        int saved = errno;
        write_back_left((struct timespec *)e, deadline);
        errno = saved;
        return result;
    }
    case SYS_epoll_pwait:
        if (e && f != 8) break;
        return epoll_pwait((int)a, (struct epoll_event *)b, (int)c, (int)d, libc_mask((void *)e, f, &mask));
#ifdef SYS_epoll_pwait2
    case SYS_epoll_pwait2:
        if (e && f != 8) break;
        return epoll_pwait2((int)a, (struct epoll_event *)b, (int)c, (const struct timespec *)d,
                            libc_mask((void *)e, f, &mask));
#endif
    }
    return direct(number, a, b, c, d, e, f);
}

long syscall(long number, ...) {
    va_list args;
    va_start(args, number);
    long a = va_arg(args, long), b = va_arg(args, long), c = va_arg(args, long);
    long d = va_arg(args, long), e = va_arg(args, long), f = va_arg(args, long);
    va_end(args);
#ifdef SYS_io_uring_setup
    if (number == SYS_io_uring_setup) {
        // Only a ring that exists counts (libuv probes, and a container may refuse); and before its descriptor
        // reaches the caller, nothing can be submitted: a server that listened first may accept through it.
        long ring = direct(number, a, b, c, d, e, f);
        int saved = errno;
        if (ring >= 0) atomic_store(&uring_setup_called, 1);
        if (ring >= 0 && !vmsp_inside && vmsp_real.syscall) vmsp_uring_reason();
        errno = saved;
        return ring;
    }
#endif
    if (vmsp_inside || !vmsp_real.syscall) return direct(number, a, b, c, d, e, f);
    switch (number) {
    case SYS_read: return read((int)a, (void *)b, (size_t)c);
    case SYS_write: return write((int)a, (const void *)b, (size_t)c);
    case SYS_readv: return readv((int)a, (const struct iovec *)b, (int)c);
    case SYS_writev: return writev((int)a, (const struct iovec *)b, (int)c);
    case SYS_recvfrom: return recvfrom((int)a, (void *)b, (size_t)c, (int)d, (struct sockaddr *)e, (socklen_t *)f);
    case SYS_sendto: return sendto((int)a, (const void *)b, (size_t)c, (int)d, (const struct sockaddr *)e, (socklen_t)f);
    case SYS_preadv2: return preadv2((int)a, (const struct iovec *)b, (int)c, (off_t)d, (int)f);
    case SYS_pwritev2: return pwritev2((int)a, (const struct iovec *)b, (int)c, (off_t)d, (int)f);
    case SYS_recvmsg: return recvmsg((int)a, (struct msghdr *)b, (int)c);
    case SYS_sendmsg: return sendmsg((int)a, (const struct msghdr *)b, (int)c);
    case SYS_recvmmsg: return recvmmsg((int)a, (struct mmsghdr *)b, (unsigned)c, (int)d, (struct timespec *)e);
    case SYS_sendmmsg: return sendmmsg((int)a, (struct mmsghdr *)b, (unsigned)c, (int)d);
    case SYS_sendfile: return sendfile((int)a, (int)b, (off_t *)c, (size_t)d);
    case SYS_splice: return splice((int)a, (loff_t *)b, (int)c, (loff_t *)d, (size_t)e, (unsigned)f);
    case SYS_connect: return connect((int)a, (const struct sockaddr *)b, (socklen_t)c);
    case SYS_listen: return listen((int)a, (int)b);
    case SYS_accept: return accept((int)a, (struct sockaddr *)b, (socklen_t *)c);
    case SYS_accept4: return accept4((int)a, (struct sockaddr *)b, (socklen_t *)c, (int)d);
    case SYS_shutdown: return shutdown((int)a, (int)b);
    case SYS_close: return close((int)a);
#ifdef SYS_close_range
    case SYS_close_range: return close_range((unsigned)a, (unsigned)b, (int)c);
#endif
    case SYS_dup: return dup((int)a);
#ifdef SYS_dup2
    case SYS_dup2: return dup2((int)a, (int)b);
#endif
    case SYS_dup3: return dup3((int)a, (int)b, (int)c);
    case SYS_fcntl: return fcntl((int)a, (int)b, (void *)c);
    case SYS_ioctl: return ioctl((int)a, (unsigned)b, (void *)c);
    case SYS_getsockopt: return getsockopt((int)a, (int)b, (int)c, (void *)d, (socklen_t *)e);
    case SYS_setsockopt: return setsockopt((int)a, (int)b, (int)c, (const void *)d, (socklen_t)e);
#ifdef SYS_poll
    case SYS_poll: return poll((struct pollfd *)a, (unsigned)b, (int)c);
#endif
#ifdef SYS_select
    case SYS_select: return select((int)a, (fd_set *)b, (fd_set *)c, (fd_set *)d, (struct timeval *)e);
#endif
#ifdef SYS_epoll_create
    case SYS_epoll_create: return epoll_create((int)a);
#endif
    case SYS_epoll_create1: return epoll_create1((int)a);
    case SYS_epoll_ctl: return epoll_ctl((int)a, (int)b, (int)c, (struct epoll_event *)d);
#ifdef SYS_epoll_wait
    case SYS_epoll_wait: return epoll_wait((int)a, (struct epoll_event *)b, (int)c, (int)d);
#endif
    case SYS_ppoll: case SYS_pselect6: case SYS_epoll_pwait:
#ifdef SYS_epoll_pwait2
    case SYS_epoll_pwait2:
#endif
        return masked(number, a, b, c, d, e, f);
    case SYS_execve: return execve((const char *)a, (char *const *)b, (char *const *)c);
    case SYS_execveat: return vmsp_execveat((int)a, (const char *)b, (char *const *)c, (char *const *)d, (int)e);
    }
    return direct(number, a, b, c, d, e, f);
}
