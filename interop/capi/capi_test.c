// The C API as a C programmer uses it: every function of vmsock.h, its edge cases and errno values, over shared
// memory and over TCP, in one process (pairs made with an accept thread) and between two (the program runs itself
// as a child through fork and exec). Built and run by interop/capi.test.sh.
//
//   capi_test                 every test; prints "ok: ..." per test, exits 0, or 1 at the first failure
//   capi_test ivshmem         the data tests through a vmsockd region (VMSOCK_IVSHMEM names a running vmsockd)
//   capi_test client PORT REASON   (the child) connects to PORT, echoes a pattern through the parent
//   capi_test pump write|read BYTES CHUNK   streams BYTES in CHUNK-byte calls to (or from) a child it starts, and
//                             prints the rate: what tools/check-capi-data-path.sh runs under callgrind
#define _GNU_SOURCE
#include <vmsock.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

// argv[0], which the two-process tests exec (not /proc/self/exe: under valgrind that is valgrind's own tool).
static const char *program;

#define CHECK(condition)                                                                                         \
    do {                                                                                                         \
        if (!(condition)) {                                                                                      \
            int saved = errno;                                                                                   \
            fprintf(stderr, "FAIL %s:%d: %s (errno %d %s; vmsock_last_error: %s)\n", __FILE__, __LINE__,         \
                    #condition, saved, strerror(saved), vmsock_last_error());                                    \
            exit(1);                                                                                             \
        }                                                                                                        \
    } while (0)

// A call that must fail with -1 (or NULL) and exactly this errno.
#define CHECK_ERRNO(call, code)                                                                                  \
    do {                                                                                                         \
        errno = 0;                                                                                               \
        long result_ = (long)(call);                                                                             \
        int saved_ = errno;                                                                                      \
        if (result_ != -1 || saved_ != (code)) {                                                                 \
            fprintf(stderr, "FAIL %s:%d: %s gave %ld, errno %d (%s), expected -1 and %s (%d)\n", __FILE__,      \
                    __LINE__, #call, result_, saved_, strerror(saved_), #code, code);                            \
            exit(1);                                                                                             \
        }                                                                                                        \
    } while (0)

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static uint16_t local_port(int handle) {
    struct sockaddr_storage address;
    socklen_t length = sizeof address;
    CHECK(vmsock_local_address(handle, (struct sockaddr *)&address, &length) == 0);
    CHECK(length == sizeof(struct sockaddr_in) && address.ss_family == AF_INET);
    return ntohs(((struct sockaddr_in *)&address)->sin_port);
}

static uint16_t peer_port(int handle) {
    struct sockaddr_in address;
    socklen_t length = sizeof address;
    CHECK(vmsock_peer_address(handle, (struct sockaddr *)&address, &length) == 0);
    CHECK(length == sizeof address && address.sin_family == AF_INET);
    CHECK(address.sin_addr.s_addr == htonl(INADDR_LOOPBACK));
    return ntohs(address.sin_port);
}

// Byte i of a test stream.
static unsigned char pattern(size_t i) { return (unsigned char)(i * 31 + (i >> 8)); }

static void read_exactly(int handle, unsigned char *buffer, size_t length) {
    size_t done = 0;
    while (done < length) {
        ssize_t n = vmsock_read(handle, buffer + done, length - done);
        CHECK(n > 0);
        done += (size_t)n;
    }
}

static void write_all(int handle, const unsigned char *buffer, size_t length) {
    size_t done = 0;
    while (done < length) {
        ssize_t n = vmsock_write(handle, buffer + done, length - done);
        CHECK(n > 0);
        done += (size_t)n;
    }
}

// MARK: pairs in one process

struct accepting {
    int listener;
    int accepted;
    int error;
    struct sockaddr_in peer;
    socklen_t peer_length;
};

static void *accept_one(void *argument) {
    struct accepting *a = argument;
    a->peer_length = sizeof a->peer;
    a->accepted = vmsock_accept(a->listener, (struct sockaddr *)&a->peer, &a->peer_length);
    a->error = errno;
    return NULL;
}

struct pair {
    int client, server;
};

// A connected pair through a listener on 127.0.0.1: both sides under `policy`, each ring `ring_size` bytes.
static struct pair make_pair(int policy, uint32_t ring_size) {
    struct vmsock_options options = {0};
    options.policy = policy;
    options.ring_size = ring_size;
    int listener = vmsock_listen("127.0.0.1", 0, 16, &options);
    CHECK(listener >= 0);
    struct accepting a = {.listener = listener};
    pthread_t thread;
    CHECK(pthread_create(&thread, NULL, accept_one, &a) == 0);
    int client = vmsock_connect("127.0.0.1", local_port(listener), &options);
    CHECK(client >= 0);
    CHECK(pthread_join(thread, NULL) == 0);
    errno = a.error;
    CHECK(a.accepted >= 0);
    // accept's address out-parameter is the client's address, as the client's own local address says.
    CHECK(a.peer_length == sizeof(struct sockaddr_in) && a.peer.sin_family == AF_INET);
    CHECK(ntohs(a.peer.sin_port) == local_port(client));
    CHECK(vmsock_close(listener) == 0);
    return (struct pair){client, a.accepted};
}

static void close_pair(struct pair p) {
    CHECK(vmsock_close(p.client) == 0);
    CHECK(vmsock_close(p.server) == 0);
}

// MARK: tests

static void test_bad_handles(void) {
    char byte = 0;
    CHECK_ERRNO(vmsock_read(-1, &byte, 1), EBADF);
    CHECK_ERRNO(vmsock_read(0, &byte, 1), EBADF);             // a zeroed int is never a handle
    CHECK_ERRNO(vmsock_write(1, &byte, 1), EBADF);            // nor is a file descriptor
    CHECK_ERRNO(vmsock_close(12345678), EBADF);
    CHECK_ERRNO(vmsock_close(0x7fffffff), EBADF);
    CHECK_ERRNO(vmsock_shutdown(2, SHUT_WR), EBADF);
    CHECK_ERRNO(vmsock_poll_fd(-5, VMSOCK_READ), EBADF);
    CHECK_ERRNO(vmsock_arm_readable(3 << 20), EBADF);
    CHECK(strlen(vmsock_last_error()) > 0);
    printf("ok: calls on numbers that were never handles fail with EBADF\n");
}

static void test_listener(void) {
    int listener = vmsock_listen("127.0.0.1", 0, 0, NULL);
    CHECK(listener >= 0);
    CHECK(listener >= (1 << 20));  // handles never look like small file descriptors
    uint16_t port = local_port(listener);
    CHECK(port != 0);
    char byte;
    struct sockaddr_in address;
    socklen_t length = sizeof address;
    CHECK_ERRNO(vmsock_peer_address(listener, (struct sockaddr *)&address, &length), ENOTCONN);
    CHECK_ERRNO(vmsock_read(listener, &byte, 1), ENOTCONN);
    CHECK_ERRNO(vmsock_write(listener, &byte, 1), ENOTCONN);
    CHECK_ERRNO(vmsock_transport(listener), ENOTCONN);
    CHECK_ERRNO(vmsock_poll_fd(listener, VMSOCK_WRITE), EINVAL);
    CHECK_ERRNO(vmsock_arm_writable(listener), ENOTCONN);
    CHECK(vmsock_arm_readable(listener) == 0);
    CHECK(vmsock_poll_fd(listener, VMSOCK_READ) >= 0);
    CHECK(vmsock_poll_events(listener, VMSOCK_READ) == POLLIN);
    // Another listener on the same address and port: EADDRINUSE.
    CHECK_ERRNO(vmsock_listen("127.0.0.1", port, 0, NULL), EADDRINUSE);
    // Non-blocking accept with nobody connecting: EAGAIN.
    CHECK(vmsock_set_nonblocking(listener, 1) == 0);
    CHECK_ERRNO(vmsock_accept(listener, NULL, NULL), EAGAIN);
    CHECK_ERRNO(vmsock_accept(listener, (struct sockaddr *)&address, NULL), EFAULT);
    // Poll a non-blocking listener until a client arrives: arm (always 0), poll, accept.
    struct vmsock_options tcp = {0};
    tcp.policy = VMSOCK_POLICY_TCP;
    int client = vmsock_connect("127.0.0.1", port, &tcp);  // TCP connects complete from the kernel's backlog
    CHECK(client >= 0);
    struct pollfd p = {vmsock_poll_fd(listener, VMSOCK_READ), vmsock_poll_events(listener, VMSOCK_READ), 0};
    CHECK(poll(&p, 1, 5000) == 1);
    int server = vmsock_accept(listener, NULL, NULL);
    CHECK(server >= 0);
    CHECK_ERRNO(vmsock_accept(server, NULL, NULL), EINVAL);  // a connection is not a listener
    CHECK(vmsock_close(listener) == 0);
    CHECK_ERRNO(vmsock_close(listener), EBADF);
    CHECK_ERRNO(vmsock_accept(listener, NULL, NULL), EBADF);
    close_pair((struct pair){client, server});
    // A blocked accept wakes with EBADF when another thread closes the listener.
    listener = vmsock_listen("127.0.0.1", port, 0, NULL);
    CHECK(listener >= 0);
    struct accepting a = {.listener = listener};
    pthread_t thread;
    CHECK(pthread_create(&thread, NULL, accept_one, &a) == 0);
    usleep(100000);
    CHECK(vmsock_close(listener) == 0);
    CHECK(pthread_join(thread, NULL) == 0);
    CHECK(a.accepted == -1 && a.error == EBADF);
    // Nobody listens any more: ECONNREFUSED.
    CHECK_ERRNO(vmsock_connect("127.0.0.1", port, NULL), ECONNREFUSED);
    printf("ok: listen, local address, non-blocking accept, poll, EADDRINUSE, ECONNREFUSED, wrong kinds, close "
           "waking a blocked accept\n");
}

static void test_bad_arguments(void) {
    struct vmsock_options options = {0};
    CHECK_ERRNO(vmsock_connect(NULL, 1, NULL), EINVAL);
    options.ring_size = 1000;  // not a power of two
    CHECK_ERRNO(vmsock_connect("127.0.0.1", 1, &options), EINVAL);
    CHECK_ERRNO(vmsock_listen("127.0.0.1", 0, 0, &options), EINVAL);
    options.ring_size = 0;
    options.reserved[3] = 1;
    CHECK_ERRNO(vmsock_listen("127.0.0.1", 0, 0, &options), EINVAL);
    options.reserved[3] = 0;
    options.policy = 42;
    CHECK_ERRNO(vmsock_connect("127.0.0.1", 1, &options), EINVAL);
    options.policy = 0;
    options.family = AF_UNIX;
    CHECK_ERRNO(vmsock_connect("127.0.0.1", 1, &options), EINVAL);
    options.family = 0;
    options.trust = 7;
    CHECK_ERRNO(vmsock_connect("127.0.0.1", 1, &options), EINVAL);

    struct pair p = make_pair(VMSOCK_POLICY_SHM, 0);
    char byte = 0;
    CHECK_ERRNO(vmsock_read(p.client, NULL, 1), EFAULT);
    CHECK_ERRNO(vmsock_write(p.client, NULL, 1), EFAULT);
    CHECK(vmsock_read(p.client, NULL, 0) == 0);
    CHECK(vmsock_write(p.client, &byte, 0) == 0);
    struct iovec vectors[2] = {{&byte, 1}, {NULL, 5}};
    CHECK_ERRNO(vmsock_readv(p.client, vectors, -1), EINVAL);
    CHECK_ERRNO(vmsock_readv(p.client, vectors, 1025), EINVAL);
    CHECK_ERRNO(vmsock_readv(p.client, NULL, 1), EFAULT);
    CHECK_ERRNO(vmsock_writev(p.client, vectors, 2), EFAULT);
    struct iovec huge[2] = {{&byte, (size_t)1 << 62}, {&byte, (size_t)1 << 62}};
    CHECK_ERRNO(vmsock_writev(p.client, huge, 2), EINVAL);  // lengths beyond SSIZE_MAX
    CHECK(vmsock_writev(p.client, NULL, 0) == 0);
    CHECK_ERRNO(vmsock_shutdown(p.client, 7), EINVAL);
    CHECK_ERRNO(vmsock_set_timeout(p.client, 2, 10), EINVAL);
    CHECK_ERRNO(vmsock_poll_fd(p.client, 9), EINVAL);
    CHECK_ERRNO(vmsock_poll_events(p.client, -1), EINVAL);
    CHECK_ERRNO(vmsock_local_address(p.client, NULL, NULL), EFAULT);
    CHECK_ERRNO(vmsock_transport_description(p.client, NULL, 10), EFAULT);
    close_pair(p);
    printf("ok: bad arguments fail with EINVAL or EFAULT, and nothing crashes\n");
}

static void test_stale_handle(void) {
    struct pair p = make_pair(VMSOCK_POLICY_SHM, 0);
    int old = p.client;
    CHECK(vmsock_close(old) == 0);
    char byte = 'x';
    CHECK_ERRNO(vmsock_write(old, &byte, 1), EBADF);
    CHECK_ERRNO(vmsock_close(old), EBADF);
    CHECK(vmsock_close(p.server) == 0);
    // A freed slot comes back once 1024 others wait to be reused, under the next generation: make and close
    // listeners until it does. The old handle still gets EBADF, and does not reach what the slot holds now.
    struct vmsock_options tcp = {0};
    tcp.policy = VMSOCK_POLICY_TCP;
    int reused = -1, made = 0;
    while (reused < 0 && made < 3000) {
        int listener = vmsock_listen("127.0.0.1", 0, 0, &tcp);
        CHECK(listener >= 0);
        made++;
        if ((listener & 0xFFFFF) == (old & 0xFFFFF)) reused = listener;
        else CHECK(vmsock_close(listener) == 0);
    }
    CHECK(reused >= 0 && reused != old && made > 1000);
    CHECK_ERRNO(vmsock_write(old, &byte, 1), EBADF);
    CHECK_ERRNO(vmsock_local_address(old, NULL, NULL), EBADF);
    CHECK_ERRNO(vmsock_close(old), EBADF);
    CHECK(vmsock_close(reused) == 0);
    printf("ok: a closed handle, and a stale copy of it after its slot came back (%d handles later), fail with "
           "EBADF\n", made);
}

// The data calls, the same over both transports.
static void test_data(int policy, const char *name) {
    struct pair p = make_pair(policy, 4096);
    int expected = policy == VMSOCK_POLICY_TCP       ? VMSOCK_TRANSPORT_TCP
                   : policy == VMSOCK_POLICY_IVSHMEM ? VMSOCK_TRANSPORT_IVSHMEM
                                                     : VMSOCK_TRANSPORT_SHM;
    CHECK(vmsock_transport(p.client) == expected && vmsock_transport(p.server) == expected);

    // Addresses: each side's local port is the other's peer port, as over TCP.
    CHECK(local_port(p.client) == peer_port(p.server));
    CHECK(peer_port(p.client) == local_port(p.server));
    struct sockaddr_in small;
    socklen_t length = 4;  // room for the family and the port only: cut, with the full length back
    memset(&small, 0xee, sizeof small);
    CHECK(vmsock_local_address(p.client, (struct sockaddr *)&small, &length) == 0);
    CHECK(length == sizeof(struct sockaddr_in) && small.sin_family == AF_INET);
    CHECK(small.sin_addr.s_addr == 0xeeeeeeee);

    // read and write, then readv and writev across several buffers.
    unsigned char out[10000], in[10000];
    for (size_t i = 0; i < sizeof out; i++) out[i] = pattern(i);
    write_all(p.client, out, 1000);
    read_exactly(p.server, in, 1000);
    CHECK(memcmp(in, out, 1000) == 0);
    struct iovec gather[3] = {{out, 10}, {out + 10, 0}, {out + 10, 90}};
    CHECK(vmsock_writev(p.client, gather, 3) == 100);
    memset(in, 0, sizeof in);
    struct iovec scatter[3] = {{in, 1}, {in + 1, 49}, {in + 50, 50}};
    size_t got = 0;
    while (got < 100) {
        ssize_t n = vmsock_readv(p.server, scatter, 3);
        CHECK(n > 0);
        got += (size_t)n;
        // Move the vectors past what arrived (a short readv is allowed).
        size_t skip = (size_t)n;
        for (int i = 0; i < 3; i++) {
            size_t take = skip < scatter[i].iov_len ? skip : scatter[i].iov_len;
            scatter[i].iov_base = (char *)scatter[i].iov_base + take;
            scatter[i].iov_len -= take;
            skip -= take;
        }
    }
    CHECK(memcmp(in, out, 100) == 0);

    // Non-blocking: nothing to read is EAGAIN; a full ring (or socket buffer) is EAGAIN.
    CHECK(vmsock_set_nonblocking(p.server, 1) == 0);
    CHECK(vmsock_set_nonblocking(p.client, 1) == 0);
    CHECK_ERRNO(vmsock_read(p.server, in, sizeof in), EAGAIN);
    struct iovec fresh[2] = {{in, 10}, {in + 10, 10}};
    CHECK_ERRNO(vmsock_readv(p.server, fresh, 2), EAGAIN);
    CHECK(vmsock_readv(p.server, scatter, 3) == 0);  // buffers that hold nothing: 0, as readv(2) gives
    size_t filled = 0;
    for (;;) {
        ssize_t n = vmsock_write(p.client, out, sizeof out);
        if (n < 0) break;
        filled += (size_t)n;
        CHECK(filled < ((size_t)256 << 20));
    }
    CHECK(errno == EAGAIN);
    CHECK_ERRNO(vmsock_writev(p.client, gather, 3), EAGAIN);
    CHECK(filled >= 4096);

    // The arm contract, write side: full, so arming says "poll" (0); the reader drains; the poll fires.
    CHECK(vmsock_arm_writable(p.client) == 0);
    struct pollfd w = {vmsock_poll_fd(p.client, VMSOCK_WRITE), vmsock_poll_events(p.client, VMSOCK_WRITE), 0};
    CHECK(w.fd >= 0 && w.events == (policy == VMSOCK_POLICY_TCP ? POLLOUT : POLLIN));
    size_t drained = 0;
    while (drained < filled) {
        ssize_t n = vmsock_read(p.server, in, sizeof in);
        if (n < 0) {
            CHECK(errno == EAGAIN);
            CHECK(vmsock_arm_readable(p.server) >= 0);
            struct pollfd r = {vmsock_poll_fd(p.server, VMSOCK_READ), vmsock_poll_events(p.server, VMSOCK_READ), 0};
            CHECK(poll(&r, 1, 5000) == 1);
            continue;
        }
        drained += (size_t)n;
    }
    CHECK(poll(&w, 1, 5000) == 1);
    // Room now: over shared memory arming sees it (1: write instead of polling); over TCP arming checks nothing
    // and says "poll" (0), and the poll returns at once.
    if (policy == VMSOCK_POLICY_TCP) {
        CHECK(vmsock_arm_writable(p.client) == 0);
        CHECK(poll(&w, 1, 0) == 1);
    } else {
        CHECK(vmsock_arm_writable(p.client) == 1);
    }
    CHECK(vmsock_disarm_writable(p.client) == 0);

    // The arm contract, read side: nothing there, so 0; the peer writes; the poll fires; arm says 1; read.
    CHECK_ERRNO(vmsock_read(p.server, in, 1), EAGAIN);
    CHECK(vmsock_arm_readable(p.server) == 0);
    struct pollfd r = {vmsock_poll_fd(p.server, VMSOCK_READ), vmsock_poll_events(p.server, VMSOCK_READ), 0};
    CHECK(r.fd >= 0 && r.events == POLLIN);
    CHECK(poll(&r, 1, 50) == 0);  // nothing yet
    CHECK(vmsock_write(p.client, "z", 1) == 1);
    CHECK(poll(&r, 1, 5000) == 1);
    CHECK(vmsock_arm_readable(p.server) == (policy == VMSOCK_POLICY_TCP ? 0 : 1));
    CHECK(vmsock_read(p.server, in, sizeof in) == 1 && in[0] == 'z');
    CHECK(vmsock_arm_readable(p.server) == 0);
    CHECK(vmsock_disarm_readable(p.server) == 0);

    // Timeouts: a blocking read with a 150 ms timeout fails with ETIMEDOUT after about that long.
    CHECK(vmsock_set_nonblocking(p.server, 0) == 0);
    CHECK(vmsock_set_timeout(p.server, VMSOCK_READ, 150) == 0);
    double start = now();
    CHECK_ERRNO(vmsock_read(p.server, in, 1), ETIMEDOUT);
    double took = now() - start;
    CHECK(took >= 0.14 && took < 3);
    CHECK(vmsock_set_timeout(p.server, VMSOCK_READ, 0) == 0);
    CHECK(vmsock_set_timeout(p.client, VMSOCK_WRITE, 100) == 0);

    // Half-close: the client shuts down writing; the server reads what was sent, then end of stream, and can
    // still answer; the client's later writes fail with EPIPE.
    CHECK(vmsock_set_nonblocking(p.client, 0) == 0);
    write_all(p.client, out, 500);
    CHECK(vmsock_shutdown(p.client, SHUT_WR) == 0);
    read_exactly(p.server, in, 500);
    CHECK(memcmp(in, out, 500) == 0);
    CHECK(vmsock_read(p.server, in, sizeof in) == 0);
    CHECK(vmsock_read(p.server, in, sizeof in) == 0);  // and again
    CHECK_ERRNO(vmsock_write(p.client, out, 1), EPIPE);
    write_all(p.server, out + 500, 300);
    read_exactly(p.client, in, 300);
    CHECK(memcmp(in, out + 500, 300) == 0);

    // The peer closes: end of stream for the reader, EPIPE (TCP: EPIPE or ECONNRESET) for a writer.
    CHECK(vmsock_close(p.client) == 0);
    CHECK(vmsock_read(p.server, in, sizeof in) == 0);
    int write_error = 0;
    for (int i = 0; i < 100 && !write_error; i++) {
        if (vmsock_write(p.server, out, 100) < 0) write_error = errno;
        else usleep(10000);
    }
    CHECK(write_error == EPIPE || (policy == VMSOCK_POLICY_TCP && write_error == ECONNRESET));
    CHECK(vmsock_close(p.server) == 0);
    printf("ok: %s: transport, addresses, read/write, readv/writev, EAGAIN, arm and poll both ways, "
           "ETIMEDOUT, half-close, end of stream, EPIPE\n", name);
}

static void test_transport_and_fallback(void) {
    struct pair p = make_pair(VMSOCK_POLICY_AUTO, 0);
    char text[200];
    CHECK(vmsock_transport(p.client) == VMSOCK_TRANSPORT_SHM);
    errno = EINTR;
    CHECK(vmsock_fallback_reason(p.client) == NULL && errno == 0);
    CHECK(vmsock_fallback_reason(p.server) == NULL && errno == 0);
    CHECK(vmsock_transport_description(p.client, text, sizeof text) == (int)strlen("shared memory"));
    CHECK(strcmp(text, "shared memory") == 0);
    close_pair(p);

    // A vmsock listener under the tcp policy does not register: an auto client falls back, and says why.
    struct vmsock_options tcp = {0};
    tcp.policy = VMSOCK_POLICY_TCP;
    int listener = vmsock_listen("127.0.0.1", 0, 0, &tcp);
    CHECK(listener >= 0);
    uint16_t port = local_port(listener);
    int client = vmsock_connect("127.0.0.1", port, NULL);
    CHECK(client >= 0);
    CHECK(vmsock_transport(client) == VMSOCK_TRANSPORT_TCP);
    const char *reason = vmsock_fallback_reason(client);
    CHECK(reason != NULL && strcmp(reason, "no shared-memory listener") == 0);
    int length = vmsock_transport_description(client, text, sizeof text);
    CHECK(length > 0 && strncmp(text, "TCP (no shared-memory listener)", 31) == 0);
    CHECK(vmsock_transport_description(client, text, 4) == length && strcmp(text, "TCP") == 0);  // cut
    int server = vmsock_accept(listener, NULL, NULL);
    CHECK(server >= 0 && vmsock_transport(server) == VMSOCK_TRANSPORT_TCP);
    errno = EINTR;
    CHECK(vmsock_fallback_reason(server) == NULL && errno == 0);
    close_pair((struct pair){client, server});

    // The client's own tcp policy: "disabled by policy".
    client = vmsock_connect("127.0.0.1", port, &tcp);
    CHECK(client >= 0);
    reason = vmsock_fallback_reason(client);
    CHECK(reason != NULL && strcmp(reason, "disabled by policy") == 0);
    server = vmsock_accept(listener, NULL, NULL);
    CHECK(server >= 0);
    close_pair((struct pair){client, server});

    // The shm policy against a listener that offers TCP only: ECONNREFUSED, and the reason in words.
    struct vmsock_options shm = {0};
    shm.policy = VMSOCK_POLICY_SHM;
    CHECK_ERRNO(vmsock_connect("127.0.0.1", port, &shm), ECONNREFUSED);
    CHECK(strstr(vmsock_last_error(), "no shared-memory listener") != NULL);
    CHECK(vmsock_close(listener) == 0);
    vmsock_close_idle_links();
    printf("ok: transport and fallback reasons: shared memory, no shared-memory listener, disabled by policy, "
           "shm refused\n");
}

struct blocked_read {
    int handle;
    ssize_t result;
    int error;
};

static void *read_blocked(void *argument) {
    struct blocked_read *b = argument;
    char byte;
    b->result = vmsock_read(b->handle, &byte, 1);
    b->error = errno;
    return NULL;
}

static void test_close_wakes_reader(int policy, const char *name) {
    struct pair p = make_pair(policy, 0);
    struct blocked_read b = {.handle = p.server};
    pthread_t thread;
    CHECK(pthread_create(&thread, NULL, read_blocked, &b) == 0);
    usleep(100000);  // let it block
    CHECK(vmsock_close(p.server) == 0);
    CHECK(pthread_join(thread, NULL) == 0);
    CHECK(b.result == -1 && b.error == EBADF);
    CHECK(vmsock_close(p.client) == 0);
    printf("ok: %s: close from another thread wakes a blocked read with EBADF\n", name);
}

// MARK: two processes

static void test_two_processes(const char *transport_env, int expected, const char *expected_reason) {
    int listener = vmsock_listen("127.0.0.1", 0, 0, NULL);
    CHECK(listener >= 0);
    char port[16];
    snprintf(port, sizeof port, "%u", local_port(listener));
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        // Exec at once: the child must not use the parent's connections (or its Swift runtime state).
        if (transport_env) setenv("VMSOCK_TRANSPORT", transport_env, 1);
        execlp(program, program, "client", port, expected_reason ? expected_reason : "-", (char *)NULL);
        _exit(127);
    }
    int server = vmsock_accept(listener, NULL, NULL);
    CHECK(server >= 0);
    CHECK(vmsock_transport(server) == expected);
    // Echo until end of stream, then close.
    unsigned char buffer[65536];
    for (;;) {
        ssize_t n = vmsock_read(server, buffer, sizeof buffer);
        CHECK(n >= 0);
        if (n == 0) break;
        write_all(server, buffer, (size_t)n);
    }
    CHECK(vmsock_close(server) == 0);
    CHECK(vmsock_close(listener) == 0);
    int status;
    CHECK(waitpid(child, &status, 0) == child);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    printf("ok: two processes (VMSOCK_TRANSPORT=%s): %s, 4 MiB echoed\n", transport_env ? transport_env : "unset",
           expected == VMSOCK_TRANSPORT_SHM ? "shared memory" : "TCP");
}

// The child: connects, checks the transport, writes a pattern from one thread while reading the echo.
struct pump {
    int handle;
    size_t total;
};

static void *send_pattern(void *argument) {
    struct pump *s = argument;
    unsigned char chunk[7000];
    for (size_t sent = 0; sent < s->total;) {
        size_t n = s->total - sent < sizeof chunk ? s->total - sent : sizeof chunk;
        for (size_t i = 0; i < n; i++) chunk[i] = pattern(sent + i);
        write_all(s->handle, chunk, n);
        sent += n;
    }
    CHECK(vmsock_shutdown(s->handle, SHUT_WR) == 0);
    return NULL;
}

static int run_client(const char *port, const char *expected_reason) {
    int handle = vmsock_connect("127.0.0.1", (uint16_t)atoi(port), NULL);
    CHECK(handle >= 0);
    const char *reason = vmsock_fallback_reason(handle);
    if (strcmp(expected_reason, "-") == 0) {
        CHECK(vmsock_transport(handle) == VMSOCK_TRANSPORT_SHM && reason == NULL);
    } else {
        CHECK(vmsock_transport(handle) == VMSOCK_TRANSPORT_TCP && reason && strcmp(reason, expected_reason) == 0);
    }
    struct pump s = {handle, (size_t)4 << 20};
    pthread_t writer;
    CHECK(pthread_create(&writer, NULL, send_pattern, &s) == 0);  // one writer thread, one reader: the contract
    unsigned char buffer[65536];
    size_t received = 0;
    for (;;) {
        ssize_t n = vmsock_read(handle, buffer, sizeof buffer);
        CHECK(n >= 0);
        if (n == 0) break;
        for (ssize_t i = 0; i < n; i++) CHECK(buffer[i] == pattern(received + (size_t)i));
        received += (size_t)n;
    }
    CHECK(pthread_join(writer, NULL) == 0);
    CHECK(received == s.total);
    CHECK(vmsock_close(handle) == 0);
    return 0;
}

// MARK: pump (the data-path check)

// Writes (or reads) `total` bytes in `chunk`-byte calls, blocking, then closes.
static void pump(int handle, int writing, size_t total, size_t chunk) {
    static unsigned char buffer[1 << 20];
    CHECK(chunk > 0 && chunk <= sizeof buffer);
    size_t done = 0;
    while (done < total) {
        size_t want = total - done < chunk ? total - done : chunk;
        ssize_t n = writing ? vmsock_write(handle, buffer, want) : vmsock_read(handle, buffer, want);
        CHECK(n > 0);
        done += (size_t)n;
    }
}

static int run_pump(const char *direction, size_t total, size_t chunk) {
    int writing = strcmp(direction, "write") == 0;
    int listener = vmsock_listen("127.0.0.1", 0, 0, NULL);
    CHECK(listener >= 0);
    char port[16], bytes[32], size[32];
    snprintf(port, sizeof port, "%u", local_port(listener));
    snprintf(bytes, sizeof bytes, "%zu", total);
    snprintf(size, sizeof size, "%zu", chunk);
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        execlp(program, program, "pump-peer", port, writing ? "read" : "write", bytes, size, (char *)NULL);
        _exit(127);
    }
    int handle = vmsock_accept(listener, NULL, NULL);
    CHECK(handle >= 0 && vmsock_transport(handle) == VMSOCK_TRANSPORT_SHM);
    double start = now();
    pump(handle, writing, total, chunk);
    double took = now() - start;
    if (!writing) {
        char byte;
        CHECK(vmsock_read(handle, &byte, 1) == 0);
    }
    CHECK(vmsock_close(handle) == 0);
    CHECK(vmsock_close(listener) == 0);
    int status;
    CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    printf("pump: %s %zu bytes in %zu-byte calls: %.3f s, %.2f GB/s, %.1f ns per call\n", direction, total, chunk,
           took, total / took / 1e9, took * 1e9 / ((double)total / chunk));
    return 0;
}

static int run_pump_peer(const char *port, const char *direction, size_t total, size_t chunk) {
    int handle = vmsock_connect("127.0.0.1", (uint16_t)atoi(port), NULL);
    CHECK(handle >= 0);
    int writing = strcmp(direction, "write") == 0;
    pump(handle, writing, total, chunk > 65536 ? chunk : 65536);
    if (!writing) {
        char byte;
        CHECK(vmsock_read(handle, &byte, 1) == 0);
    }
    CHECK(vmsock_close(handle) == 0);
    return 0;
}

int main(int argc, char **argv) {
    program = argv[0];
    if (argc == 4 && strcmp(argv[1], "client") == 0) return run_client(argv[2], argv[3]);
    if (argc == 5 && strcmp(argv[1], "pump") == 0) {
        return run_pump(argv[2], strtoull(argv[3], NULL, 0), strtoull(argv[4], NULL, 0));
    }
    if (argc == 6 && strcmp(argv[1], "pump-peer") == 0) {
        return run_pump_peer(argv[2], argv[3], strtoull(argv[4], NULL, 0), strtoull(argv[5], NULL, 0));
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 2 && strcmp(argv[1], "ivshmem") == 0) {  // run with VMSOCK_IVSHMEM naming a running vmsockd
        test_data(VMSOCK_POLICY_IVSHMEM, "ivshmem region");
        test_close_wakes_reader(VMSOCK_POLICY_IVSHMEM, "ivshmem region");
        printf("ok: every ivshmem test passed\n");
        return 0;
    }
    test_bad_handles();
    test_listener();
    test_bad_arguments();
    test_stale_handle();
    test_data(VMSOCK_POLICY_SHM, "shared memory");
    test_data(VMSOCK_POLICY_TCP, "TCP");
    test_transport_and_fallback();
    test_close_wakes_reader(VMSOCK_POLICY_SHM, "shared memory");
    test_close_wakes_reader(VMSOCK_POLICY_TCP, "TCP");
    test_two_processes(NULL, VMSOCK_TRANSPORT_SHM, NULL);
    test_two_processes("tcp", VMSOCK_TRANSPORT_TCP, "disabled by policy");
    printf("ok: every test passed\n");
    return 0;
}
