// The floor under a first shared-memory connection, against TCP, between two processes, in one run. Times, per
// kind, a connection's set-up (from connect until the connector has seen one byte from each side) and the whole
// of it (set-up, then the connector's own close and teardown):
//   tcp        TCP over loopback: connect, a byte each way, close.
//   knock      for scale: the knock alone, an abstract Unix socket with the byte each way as messages on it.
//   answered   the least a memfd link needs, in the order vmsock's set-up takes today: a knock, a memfd made, sized
//              and mapped on each side (its first page touched, as a ring header is), the connector's passed with
//              SCM_RIGHTS and mapped by the listener, the listener's passed back (the answer) and mapped; only
//              then the byte each way through the shared pages, with the knock's socket as the only wake-up.
//   pipelined  the same memory, but the connector does not wait for the answer: it writes its byte into its own
//              pages and passes them at once, as a TCP client writes before the server accepts; the listener
//              maps them, finds the byte, writes its own and answers with its memfd, which carries the wake-up.
//   + spares   each side's memfd made and mapped ahead, as vmsock's spare halves are, outside the timed window.
// No seals, doorbells, checks or port: vmsock's set-up does all of that and more. Each connection starts once the
// listener has torn down the last one (and made its next spare), so no teardown overlaps a timed window. Kinds
// alternate for ROUNDS rounds of N connections each (this VM's speed moves within seconds); prints, per kind, the
// median of the rounds' means and the median of its time over TCP's in the same round, for set-up and whole.
// Usage: setup-floor [N [ROUNDS]]   (default 200 and 30; tools/micro/run.sh floor)
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { RING = 256 * 1024 + 4096 };

static long long now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void die(const char *what) { perror(what); exit(1); }

static void send_fd(int sock, int fd) {
    char byte = 'h', control[CMSG_SPACE(sizeof(int))];
    struct iovec iov = { &byte, 1 };
    struct msghdr message = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control };
    struct cmsghdr *c = CMSG_FIRSTHDR(&message);
    c->cmsg_level = SOL_SOCKET, c->cmsg_type = SCM_RIGHTS, c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    if (sendmsg(sock, &message, 0) != 1) die("sendmsg");
}

static int receive_fd(int sock) {
    char byte, control[CMSG_SPACE(sizeof(int))];
    struct iovec iov = { &byte, 1 };
    struct msghdr message = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control };
    if (recvmsg(sock, &message, MSG_CMSG_CLOEXEC) != 1) die("recvmsg");
    int fd;
    memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&message)), sizeof fd);
    return fd;
}

// A memfd of RING bytes, mapped; its first page is touched, as a ring header is.
static char *make_half(int *fd) {
    *fd = memfd_create("floor", MFD_CLOEXEC);
    if (*fd < 0 || ftruncate(*fd, RING) != 0) die("memfd");
    char *map = mmap(NULL, RING, PROT_READ | PROT_WRITE, MAP_SHARED, *fd, 0);
    if (map == MAP_FAILED) die("mmap");
    map[0] = 0;
    return map;
}

// One byte into our pages, then a one-byte message as the wake-up; the peer's byte, read from its pages.
static void exchange(int control, char *ours, const char *theirs, int first) {
    char note;
    if (first) { ours[64] = 1; if (write(control, "w", 1) != 1) die("write"); }
    if (read(control, &note, 1) != 1 || theirs[64] != 1) die("exchange");
    if (!first) { ours[64] = 1; if (write(control, "w", 1) != 1) die("write"); }
}

static struct sockaddr_un knock_address(socklen_t *length) {
    struct sockaddr_un address = { .sun_family = AF_UNIX };
    int n = snprintf(address.sun_path + 1, sizeof address.sun_path - 1, "vmsock-floor-%d", (int)getpid());
    *length = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
    return address;
}

static int tcp_listener, unix_listener;
static struct sockaddr_in tcp_address;
static struct sockaddr_un unix_address;
static socklen_t unix_length;

enum { KINDS = 6 };
static const char kinds[KINDS] = { 't', 'k', 'm', 's', 'p', 'q' };
static const char *names[KINDS] = { "tcp", "knock alone", "answered", "answered + spares", "pipelined",
                                    "pipelined + spares" };
static int spares(char kind) { return kind == 's' || kind == 'q'; }
static int pipelined(char kind) { return kind == 'p' || kind == 'q'; }

// The listener's side of one memfd connection, on `control` (accepted): see the kinds above.
static void serve_memfd(char kind, int control, char *ours, int own) {
    int peer_fd = receive_fd(control);
    if (!ours) ours = make_half(&own);
    const char *theirs = mmap(NULL, RING, PROT_READ, MAP_SHARED, peer_fd, 0);
    if (theirs == MAP_FAILED) die("mmap peer");
    if (pipelined(kind)) {
        char b;
        if (theirs[64] != 1) die("pipelined: no byte");
        ours[64] = 1;
        send_fd(control, own);
        if (read(control, &b, 1) != 0) die("pipelined: no close");
    } else {
        send_fd(control, own);
        exchange(control, ours, theirs, 0);
    }
    munmap((void *)theirs, RING), munmap(ours, RING);
    close(peer_fd), close(own);
}

// The listening side, in the child: N connections of a kind per command, an acknowledgement after each one's
// teardown (and the next spare).
static void serve(int commands) {
    char kind;
    while (read(commands, &kind, 1) == 1) {
        int n, own = -1;
        if (read(commands, &n, sizeof n) != sizeof n) break;
        char *ours = spares(kind) ? make_half(&own) : NULL;
        for (int i = 0; i < n; i++) {
            int s = accept4(kind == 't' ? tcp_listener : unix_listener, NULL, NULL, SOCK_CLOEXEC);
            if (s < 0) die("accept4");
            if (kind == 't' || kind == 'k') {
                char b;
                if (read(s, &b, 1) != 1 || write(s, "b", 1) != 1) die("serve");
            } else {
                serve_memfd(kind, s, ours, own);
                ours = spares(kind) && i + 1 < n ? make_half(&own) : NULL;
            }
            close(s);
            if (write(commands, "a", 1) != 1) die("acknowledge");
        }
    }
    exit(0);
}

// The connector's side of one connection of `kind`; returns its set-up time and adds its whole time to *whole.
static long long connect_one(char kind, long long *whole) {
    int own = -1;
    char *ours = spares(kind) ? make_half(&own) : NULL;
    char b;
    long long start = now(), setup;
    if (kind == 't' || kind == 'k') {
        int s = kind == 't' ? socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0) : socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        int one = 1;
        if (kind == 't') setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        int failed = kind == 't' ? connect(s, (struct sockaddr *)&tcp_address, sizeof tcp_address)
                                 : connect(s, (struct sockaddr *)&unix_address, unix_length);
        if (failed || write(s, "a", 1) != 1 || read(s, &b, 1) != 1) die(names[kind == 't' ? 0 : 1]);
        setup = now() - start;
        close(s);
        *whole += now() - start;
        return setup;
    }
    int control = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (connect(control, (struct sockaddr *)&unix_address, unix_length) != 0) die("knock");
    if (!ours) ours = make_half(&own);
    if (pipelined(kind)) ours[64] = 1;
    send_fd(control, own);
    int peer_fd = receive_fd(control);
    const char *theirs = mmap(NULL, RING, PROT_READ, MAP_SHARED, peer_fd, 0);
    if (theirs == MAP_FAILED) die("mmap peer");
    if (pipelined(kind)) {
        if (theirs[64] != 1) die("pipelined: no answer");
    } else {
        exchange(control, ours, theirs, 1);
    }
    setup = now() - start;
    munmap((void *)theirs, RING), munmap(ours, RING);
    close(peer_fd), close(own), close(control);
    *whole += now() - start;
    return setup;
}

// N connections of `kind`: mean set-up and whole times in microseconds.
static void run(int commands, char kind, int n, double *setup_us, double *whole_us) {
    if (write(commands, &kind, 1) != 1 || write(commands, &n, sizeof n) != sizeof n) die("command");
    long long setup = 0, whole = 0;
    for (int i = 0; i < n; i++) {
        setup += connect_one(kind, &whole);
        char acknowledged;
        if (read(commands, &acknowledged, 1) != 1) die("acknowledgement");
    }
    *setup_us = setup / 1e3 / n, *whole_us = whole / 1e3 / n;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void print_kind(const char *label, double *times, double *ratios, int rounds, int with_ratio) {
    qsort(times, rounds, sizeof(double), by_value);
    printf("%-30s median %6.1f us per connection (quartiles %.1f to %.1f)", label, times[rounds / 2],
           times[rounds / 4], times[3 * rounds / 4]);
    if (with_ratio) {
        qsort(ratios, rounds, sizeof(double), by_value);
        printf("; over tcp's in the same round: median %.2fx (quartiles %.2fx to %.2fx)", ratios[rounds / 2],
               ratios[rounds / 4], ratios[3 * rounds / 4]);
    }
    printf("\n");
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 200, rounds = argc > 2 ? atoi(argv[2]) : 30;
    if (n < 1 || rounds < 1) { fprintf(stderr, "usage: setup-floor [N [ROUNDS]]\n"); return 2; }
    tcp_listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    tcp_address = (struct sockaddr_in){ .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t length = sizeof tcp_address;
    if (bind(tcp_listener, (struct sockaddr *)&tcp_address, length) != 0 || listen(tcp_listener, 128) != 0 ||
        getsockname(tcp_listener, (struct sockaddr *)&tcp_address, &length) != 0) die("tcp listener");
    unix_listener = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    unix_address = knock_address(&unix_length);
    if (bind(unix_listener, (struct sockaddr *)&unix_address, unix_length) != 0 || listen(unix_listener, 128) != 0)
        die("unix listener");
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) die("socketpair");
    pid_t child = fork();
    if (child == 0) { close(pair[0]); serve(pair[1]); }
    close(pair[1]);
    printf("%d rounds of %d connections of each kind, alternating: connect, 1 byte each way, close\n", rounds, n);
    double (*setup)[rounds] = calloc(KINDS, sizeof *setup), (*whole)[rounds] = calloc(KINDS, sizeof *whole);
    double (*setup_ratio)[rounds] = calloc(KINDS, sizeof *setup_ratio), (*whole_ratio)[rounds] = calloc(KINDS, sizeof *whole_ratio);
    if (!setup || !whole || !setup_ratio || !whole_ratio) die("calloc");
    for (int round = 0; round < rounds; round++) {
        for (int k = 0; k < KINDS; k++) run(pair[0], kinds[k], n, &setup[k][round], &whole[k][round]);
        for (int k = 1; k < KINDS; k++) {
            setup_ratio[k][round] = setup[k][round] / setup[0][round];
            whole_ratio[k][round] = whole[k][round] / whole[0][round];
        }
    }
    printf("set-up (connect until a byte from each side):\n");
    for (int k = 0; k < KINDS; k++) print_kind(names[k], setup[k], setup_ratio[k], rounds, k > 0);
    printf("whole (set-up, then the connector's close and teardown):\n");
    for (int k = 0; k < KINDS; k++) print_kind(names[k], whole[k], whole_ratio[k], rounds, k > 0);
    close(pair[0]);
    waitpid(child, NULL, 0);
    return 0;
}
