// stdio on a shared-memory socket. libc's streams read and write their descriptor with its own internal calls,
// which never reach this library: a program that wraps a connection in a FILE (fdopen, then fgets and fprintf,
// as many small servers and clients do) or prints to it with dprintf would move wake-up bytes instead of data.
// So fdopen of one of our sockets returns a stream whose reads, writes and close are this library's (fopencookie),
// and dprintf and vdprintf format first and then write through it. The stream reports the socket's number from
// fileno, as one from fdopen does.
//
// The standard streams too: a program that moves a connection onto descriptor 0, 1 or 2 (an inetd-like server's
// dup2 before printf and fgets; bash's `echo a >&3`, which moves the socket onto 1 for the builtin's printf) uses
// stdin, stdout and stderr, made before the socket was. So the first time a connection becomes one of those
// numbers, that standard stream is replaced (the `stdin`, `stdout` or `stderr` variable, which libc's printf,
// puts and the rest read at each call) by a stream like fdopen's on the number, whose reads and writes reach
// whatever the number names from then on through this library (which passes a terminal's or a file's to libc):
// bash moves its standard output back, and its next line goes there as before. The new stream keeps the old
// one's buffering and takes over what it held unwritten (it would have gone to the new descriptor at its next
// flush); stdin is left alone while it holds unread input from the descriptor before, and a wide-oriented stream
// is left libc's. Not covered: a stream pointer copied before (C++'s std::cout keeps libc's stdout), and an
// fdopen made before the connect.
#include "preload.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio_ext.h>
#include <wchar.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int cookie_fd(void *cookie) { return (int)(intptr_t)cookie; }

static ssize_t stream_read(void *cookie, char *buf, size_t size) { return read(cookie_fd(cookie), buf, size); }

// All of it, or what went before an error: libc's streams count a short write from a cookie as an error, where
// their own descriptor writes go on after one.
static ssize_t write_all(int fd, const char *buf, size_t size) {
    size_t done = 0;
    while (done < size) {
        ssize_t n = write(fd, buf + done, size - done);
        if (n <= 0) return done > 0 ? (ssize_t)done : n;
        done += (size_t)n;
    }
    return (ssize_t)done;
}

static ssize_t stream_write(void *cookie, const char *buf, size_t size) {
    ssize_t n = write_all(cookie_fd(cookie), buf, size);
    return n < 0 ? 0 : n;
}

static int stream_close(void *cookie) { return close(cookie_fd(cookie)); }

// A socket cannot seek: ESPIPE, which libc's streams expect (fflush of a read stream ignores it).
static int stream_seek(void *cookie, off64_t *offset, int whence) {
    (void)cookie, (void)offset, (void)whence;
    errno = ESPIPE;
    return -1;
}

// A stream whose reads, writes and close go through this library, on descriptor `fd`.
static FILE *our_stream(int fd, const char *mode) {
    cookie_io_functions_t calls = { .read = stream_read, .write = stream_write, .seek = stream_seek, .close = stream_close };
    FILE *stream = fopencookie((void *)(intptr_t)fd, mode, calls);
    if (!stream) return NULL;
    // A cookie stream's descriptor is -2 ("not a file, but treated as one"); fileno must give the socket's, as for
    // a stream fdopen made. The field is public (struct _IO_FILE), and reads and writes go through the cookie.
    stream->_fileno = fd;  // (libc's fdopen ignores 'e' in the mode, and so does this)
    return stream;
}

FILE *fdopen(int fd, const char *mode) {
    if (vmsp_inside || !vmsp_lookup(fd) || !mode) return REAL(fdopen)(fd, mode);
    return our_stream(fd, mode);
}

// libc's flags for a stream's buffering (libio.h, part of its ABI).
enum { UNBUFFERED = 0x2, LINE_BUFFERED = 0x200 };
static atomic_int adopted[3];
static FILE *_Atomic standard_ours[3];  // the streams that replaced them, for freopen

void vmsp_stdio_adopt(int fd) {
    int expected = 0;
    if (fd < 0 || fd > 2 || !atomic_compare_exchange_strong(&adopted[fd], &expected, 1)) return;
    FILE **standard = fd == 0 ? &stdin : fd == 1 ? &stdout : &stderr;
    FILE *old = *standard;
    const char *name = fd == 0 ? "in" : fd == 1 ? "out" : "err";
    // A wide-oriented stream (wprintf) stays libc's: a cookie stream has no wide side.
    int wide = fwide(old, 0) > 0, held_input = fd == 0 && old->_IO_read_ptr < old->_IO_read_end;
    // Made before the old stream is locked: fopencookie takes libc's list of streams, which fflush(NULL) takes
    // before each stream's lock.
    FILE *stream = wide || held_input ? NULL : our_stream(fd, fd == 0 ? "r" : "w");
    if (!stream) {
        atomic_store(&adopted[fd], 0);  // the next connection there tries again
        vmsp_debug("fd %d is a shared-memory connection, and std%s %s: a program that uses the stream there would "
                   "move the connection's wake-up bytes", fd, name,
                   held_input ? "holds input read before: it stays libc's"
                   : wide ? "is wide-oriented: it stays libc's" : "could not be replaced");
        return;
    }
    // libc decides a stream's buffering at its first use (a line at a time on a terminal): as the old one did, or
    // as it would have now, on a socket.
    int mode = old->_flags & UNBUFFERED ? _IONBF : old->_flags & LINE_BUFFERED ? _IOLBF : _IOFBF;
    setvbuf(stream, NULL, mode, mode == _IONBF ? 0 : BUFSIZ);
    flockfile(old);
    size_t pending = fd == 0 ? 0 : __fpending(old);
    if (pending) {
        fwrite(old->_IO_write_base, 1, pending, stream);
        __fpurge(old);
    }
    atomic_store(&standard_ours[fd], stream);
    *standard = stream;
    funlockfile(old);
    vmsp_debug("fd %d is a shared-memory connection: std%s is the library's stream from now on", fd, name);
}

int __vsnprintf_chk(char *out, size_t capacity, int flag, size_t length, const char *format, va_list args);

// Formats (with the _chk checks when `flag` is not -1: fortified programs call __dprintf_chk) and writes it all.
static int format_and_write(int fd, int flag, const char *format, va_list args) {
    char small[1024], *text = small;
    va_list again;
    va_copy(again, args);
    int length = flag < 0 ? vsnprintf(small, sizeof small, format, args)
                          : __vsnprintf_chk(small, sizeof small, flag, sizeof small, format, args);
    if (length >= (int)sizeof small) {
        text = malloc((size_t)length + 1);
        if (text) {
            (void)(flag < 0 ? vsnprintf(text, (size_t)length + 1, format, again)
                            : __vsnprintf_chk(text, (size_t)length + 1, flag, (size_t)length + 1, format, again));
        }
    }
    va_end(again);
    if (!text) { errno = ENOMEM; return -1; }
    ssize_t written = length < 0 ? -1 : write_all(fd, text, (size_t)length);
    if (text != small) free(text);
    return written == length ? length : -1;
}

int vdprintf(int fd, const char *format, va_list args) {
    if (vmsp_inside || !vmsp_lookup(fd)) return REAL(vdprintf)(fd, format, args);
    return format_and_write(fd, -1, format, args);
}

int __vdprintf_chk(int fd, int flag, const char *format, va_list args) {
    if (vmsp_inside || !vmsp_lookup(fd)) return REAL(vdprintf_chk)(fd, flag, format, args);
    return format_and_write(fd, flag, format, args);
}

int dprintf(int fd, const char *format, ...) {
    va_list args;
    va_start(args, format);
    int result = vdprintf(fd, format, args);
    va_end(args);
    return result;
}

int __dprintf_chk(int fd, int flag, const char *format, ...) {
    va_list args;
    va_start(args, format);
    int result = __vdprintf_chk(fd, flag, format, args);
    va_end(args);
    return result;
}

// freopen of one of the library's standard streams (a daemon's freopen(log, "a", stderr) at SIGHUP; an inetd-like
// child's freopen("/dev/null", "r", stdin)): libc's would read the cookie stream's missing wide side and crash.
// The stream stays the same (it reads and writes its number through this library): the file is opened onto the
// number, which closes what the number named (a connection loses a name). A NULL path (a change of mode) keeps
// the stream as it is; a file that cannot be opened leaves everything as it was and returns NULL.
static FILE *reopen(const char *path, const char *mode, FILE *stream, const char *symbol) {
    static FILE *(*real_[2])(const char *, const char *, FILE *);
    int which = symbol[7] == '6';
    if (!real_[which]) *(void **)&real_[which] = dlsym(RTLD_NEXT, symbol);
    if (!real_[which]) { errno = ENOSYS; return NULL; }
    int standard = 0;
    for (int i = 0; i < 3 && stream; i++) standard |= atomic_load(&standard_ours[i]) == stream;
    if (!standard) return real_[which](path, mode, stream);
    if (!path) return stream;
    int read_only = mode[0] == 'r' && !strchr(mode, '+');
    int flags = read_only ? O_RDONLY : mode[0] == 'r' ? O_RDWR : (strchr(mode, '+') ? O_RDWR : O_WRONLY) | O_CREAT |
                (mode[0] == 'a' ? O_APPEND : O_TRUNC);
    fflush(stream);
    int opened = open(path, flags | O_CLOEXEC, 0666);
    if (opened < 0) return NULL;
    int fd = fileno(stream);
    if (opened != fd) {
        int moved = dup2(opened, fd);  // through this library: a connection there loses this name
        int saved = errno;
        REAL(close)(opened);
        if (moved != fd) { errno = saved; return NULL; }
    } else {
        REAL(fcntl)(fd, F_SETFD, 0);
    }
    flockfile(stream);
    __fpurge(stream);
    clearerr_unlocked(stream);
    funlockfile(stream);
    return stream;
}

FILE *freopen(const char *path, const char *mode, FILE *stream) { return reopen(path, mode, stream, "freopen"); }
FILE *freopen64(const char *path, const char *mode, FILE *stream) { return reopen(path, mode, stream, "freopen64"); }
