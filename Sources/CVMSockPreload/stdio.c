// stdio on a shared-memory socket. libc's streams read and write their descriptor with its own internal calls,
// which never reach this library: a program that wraps a connection in a FILE (fdopen, then fgets and fprintf,
// as many small servers and clients do) or prints to it with dprintf would move wake-up bytes instead of data.
// So fdopen of one of our sockets returns a stream whose reads, writes and close are this library's (fopencookie),
// and dprintf and vdprintf format first and then write through it. The stream reports the socket's number from
// fileno, as one from fdopen does. Not covered: stdin, stdout and stderr themselves when a shared-memory socket
// is moved onto descriptor 0, 1 or 2 (those streams were made before), and an fdopen made before the connect.
#include "preload.h"

#include <fcntl.h>
#include <stdarg.h>
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

FILE *fdopen(int fd, const char *mode) {
    if (vmsp_inside || !vmsp_lookup(fd) || !mode) return REAL(fdopen)(fd, mode);
    cookie_io_functions_t calls = { .read = stream_read, .write = stream_write, .seek = stream_seek, .close = stream_close };
    FILE *stream = fopencookie((void *)(intptr_t)fd, mode, calls);
    if (!stream) return NULL;
    // A cookie stream's descriptor is -2 ("not a file, but treated as one"); fileno must give the socket's, as for
    // a stream fdopen made. The field is public (struct _IO_FILE), and reads and writes go through the cookie.
    stream->_fileno = fd;  // (libc's fdopen ignores 'e' in the mode, and so does this)
    return stream;
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
