// The floor under a first shared-memory connection, against TCP, between two processes, in one run: how long
// connect, one byte each way and close take when the connection is (a) TCP over loopback, (b) the least a
// memfd link needs: a knock on an abstract Unix socket, a memfd made, sized and mapped on each side, each passed
// to the other with SCM_RIGHTS and mapped there, the byte each way written into the shared pages with the
// control socket as the only wake-up, then everything unmapped and closed; and (c) as (b) with each side's memfd
// made and mapped ahead (a spare), so that only the peer's is mapped on the way. No seals, doorbells, checks or
// port: vmsock's set-up does all of (b) and more. For scale, (d): the knock alone, with the byte each way as
// messages on it (no memory shared). Alternates the four for ROUNDS rounds of N connections each (this VM's
// speed moves within seconds) and prints, per kind, the median of the rounds' means and the median of its time
// over TCP's in the same round.
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

// The listening side, in the child: kind 't' TCP, 'm' memfd, 's' memfd with a spare made before the accept.
static void serve(int commands) {
    char kind;
    while (read(commands, &kind, 1) == 1) {
        int n;
        if (read(commands, &n, sizeof n) != sizeof n) break;
        for (int i = 0; i < n; i++) {
            if (kind == 't' || kind == 'k') {
                int s = accept4(kind == 't' ? tcp_listener : unix_listener, NULL, NULL, SOCK_CLOEXEC);
                char b;
                if (s < 0 || read(s, &b, 1) != 1 || write(s, "b", 1) != 1) die("serve");
                close(s);
                continue;
            }
            int own = -1;
            char *ours = kind == 's' ? make_half(&own) : NULL;
            int control = accept4(unix_listener, NULL, NULL, SOCK_CLOEXEC);
            if (control < 0) die("accept4");
            int peer_fd = receive_fd(control);
            if (!ours) ours = make_half(&own);
            const char *theirs = mmap(NULL, RING, PROT_READ, MAP_SHARED, peer_fd, 0);
            if (theirs == MAP_FAILED) die("mmap peer");
            send_fd(control, own);
            exchange(control, ours, theirs, 0);
            munmap((void *)theirs, RING), munmap(ours, RING);
            close(peer_fd), close(own), close(control);
        }
        if (write(commands, "d", 1) != 1) break;
    }
    exit(0);
}

static double run(int commands, char kind, int n) {
    if (write(commands, &kind, 1) != 1 || write(commands, &n, sizeof n) != sizeof n) die("command");
    long long start = now();
    for (int i = 0; i < n; i++) {
        if (kind == 't') {
            int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
            setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            char b;
            if (connect(s, (struct sockaddr *)&tcp_address, sizeof tcp_address) != 0 || write(s, "a", 1) != 1 ||
                read(s, &b, 1) != 1) die("tcp");
            close(s);
            continue;
        }
        if (kind == 'k') {
            int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
            char b;
            if (connect(s, (struct sockaddr *)&unix_address, unix_length) != 0 || write(s, "a", 1) != 1 ||
                read(s, &b, 1) != 1) die("knock alone");
            close(s);
            continue;
        }
        int own = -1;
        char *ours = kind == 's' ? make_half(&own) : NULL;
        int control = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        if (connect(control, (struct sockaddr *)&unix_address, unix_length) != 0) die("knock");
        if (!ours) ours = make_half(&own);
        send_fd(control, own);
        int peer_fd = receive_fd(control);
        const char *theirs = mmap(NULL, RING, PROT_READ, MAP_SHARED, peer_fd, 0);
        if (theirs == MAP_FAILED) die("mmap peer");
        exchange(control, ours, theirs, 1);
        munmap((void *)theirs, RING), munmap(ours, RING);
        close(peer_fd), close(own), close(control);
    }
    double us = (now() - start) / 1e3 / n;
    char done;
    if (read(commands, &done, 1) != 1) die("done");
    return us;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
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
    double times[4][rounds], ratios[3][rounds];
    const char kinds[4] = { 't', 'm', 's', 'k' };
    for (int round = 0; round < rounds; round++) {
        for (int k = 0; k < 4; k++) times[k][round] = run(pair[0], kinds[k], n);
        for (int k = 1; k < 4; k++) ratios[k - 1][round] = times[k][round] / times[0][round];
    }
    const char *names[4] = { "tcp", "memfd floor", "memfd floor with spares", "the knock alone" };
    for (int k = 0; k < 4; k++) {
        qsort(times[k], rounds, sizeof(double), by_value);
        if (k > 0) qsort(ratios[k - 1], rounds, sizeof(double), by_value);
        printf("%-24s median %6.1f us per connection (quartiles %.1f to %.1f)", names[k], times[k][rounds / 2],
               times[k][rounds / 4], times[k][3 * rounds / 4]);
        if (k > 0) {
            printf("; its time over tcp's in the same round: median %.2fx (quartiles %.2fx to %.2fx)",
                   ratios[k - 1][rounds / 2], ratios[k - 1][rounds / 4], ratios[k - 1][3 * rounds / 4]);
        }
        printf("\n");
    }
    close(pair[0]);
    waitpid(child, NULL, 0);
    return 0;
}
