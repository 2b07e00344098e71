// A server that moves its connection's bytes with io_uring (liburing): accept, recv and send are submitted to
// the kernel's ring and never pass through libc. A client thread of the same process connects with plain calls
// and sends 1 MiB, which the server echoes. interop/preload-uring.test.sh runs it with and without vmsock-run and
// requires the same output: under vmsock-run, a process with liburing loaded must use TCP, else the server would
// read wake-up bytes instead of data.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum { TOTAL = 1 << 20 };
static struct sockaddr_in bound;

static unsigned char pattern(size_t i) { return (unsigned char)(i * 7 + (i >> 10)); }

// Sends TOTAL bytes and reads them back, with plain write and read.
static void *client(void *arg) {
    size_t *wrong = arg;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fd, (struct sockaddr *)&bound, sizeof bound) != 0) { perror("connect"); exit(1); }
    static unsigned char out[TOTAL], in[65536];
    for (size_t i = 0; i < TOTAL; i++) out[i] = pattern(i);
    size_t sent = 0, got = 0;
    while (got < TOTAL) {
        if (sent < TOTAL) {
            ssize_t n = write(fd, out + sent, TOTAL - sent < 16384 ? TOTAL - sent : 16384);
            if (n <= 0) { perror("write"); exit(1); }
            sent += (size_t)n;
        }
        while (got < sent) {
            ssize_t n = read(fd, in, sizeof in < sent - got ? sizeof in : sent - got);
            if (n <= 0) { fprintf(stderr, "client read: %zd\n", n); exit(1); }
            for (ssize_t i = 0; i < n; i++) *wrong += in[i] != pattern(got + (size_t)i);
            got += (size_t)n;
        }
    }
    close(fd);
    return NULL;
}

static int run_ring(struct io_uring *ring, void (*prep)(struct io_uring_sqe *, void *), void *arg) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    prep(sqe, arg);
    io_uring_submit(ring);
    struct io_uring_cqe *cqe;
    if (io_uring_wait_cqe(ring, &cqe) != 0) return -EIO;
    int result = cqe->res;
    io_uring_cqe_seen(ring, cqe);
    return result;
}

struct op { int fd; void *buf; size_t len; };
static void prep_accept(struct io_uring_sqe *sqe, void *arg) { io_uring_prep_accept(sqe, *(int *)arg, NULL, NULL, 0); }
static void prep_recv(struct io_uring_sqe *sqe, void *arg) { struct op *o = arg; io_uring_prep_recv(sqe, o->fd, o->buf, o->len, 0); }
static void prep_send(struct io_uring_sqe *sqe, void *arg) { struct op *o = arg; io_uring_prep_send(sqe, o->fd, o->buf, o->len, 0); }

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct io_uring ring;
    int status = io_uring_queue_init(8, &ring, 0);
    if (status != 0) {
        printf("io_uring unavailable: %s\n", strerror(-status));
        return 0;
    }
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    bound = (struct sockaddr_in){ .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    bind(listener, (struct sockaddr *)&bound, sizeof bound);
    socklen_t length = sizeof bound;
    getsockname(listener, (struct sockaddr *)&bound, &length);
    listen(listener, 4);
    size_t wrong = 0;
    pthread_t thread;
    pthread_create(&thread, NULL, client, &wrong);
    int server = run_ring(&ring, prep_accept, &listener);
    printf("io_uring accept: %s\n", server >= 0 ? "ok" : strerror(-server));
    static unsigned char buf[65536];
    size_t echoed = 0;
    while (server >= 0 && echoed < TOTAL) {
        struct op in = { server, buf, sizeof buf };
        int n = run_ring(&ring, prep_recv, &in);
        if (n <= 0) { printf("io_uring recv: %d\n", n); break; }
        for (int off = 0; off < n;) {
            struct op out = { server, buf + off, (size_t)(n - off) };
            int w = run_ring(&ring, prep_send, &out);
            if (w <= 0) { printf("io_uring send: %d\n", w); exit(1); }
            off += w;
        }
        echoed += (size_t)n;
    }
    pthread_join(thread, NULL);
    printf("echoed through io_uring: %zu bytes, %zu wrong\n", echoed, wrong);
    close(server);
    close(listener);
    io_uring_queue_exit(&ring);
    printf("done\n");
    return 0;
}
