// What each step of a shared-memory connection's set-up costs on this machine, in isolation (µs per call, mean
// over N calls made back to back). Build and run: tools/micro/run.sh. Backs the figures in README "Connection set-up".
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define N 4000
static int fds[N][2];
static char *maps[N];

static long long now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

#define STEP(name, body)                                                                   \
    do {                                                                                   \
        long long start = now();                                                           \
        for (int i = 0; i < N; i++) { body; }                                              \
        printf("%-44s %6.2f us\n", name, (now() - start) / 1e3 / N);                       \
    } while (0)

int main(void) {
    const long cap = 256 * 1024, header = 4096;
    STEP("getppid (a bare system call)", getppid());
    STEP("socketpair (a doorbell)", socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, fds[i]));
    STEP("shutdown(SHUT_WR) of its receiving end", shutdown(fds[i][0], SHUT_WR));
    STEP("close both ends", close(fds[i][0]); close(fds[i][1]));
    STEP("eventfd (for comparison)", fds[i][0] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    STEP("close eventfd", close(fds[i][0]));
    STEP("memfd_create", fds[i][0] = memfd_create("ring", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    STEP("ftruncate(header + 256 KiB)", ftruncate(fds[i][0], header + cap));
    STEP("mmap header + 2 x data (one call)",
         maps[i] = mmap(0, header + 2 * cap, PROT_READ | PROT_WRITE, MAP_SHARED, fds[i][0], 0));
    STEP("mmap the data again over the tail (MAP_FIXED)",
         mmap(maps[i] + header + cap, cap, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fds[i][0], header));
    STEP("F_ADD_SEALS", fcntl(fds[i][0], F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL | F_SEAL_FUTURE_WRITE));
    STEP("first write to the header page (a fault)", maps[i][0] = 1);
    STEP("first write to a data page (a fault)", maps[i][header] = 1);
    STEP("munmap", munmap(maps[i], header + 2 * cap));
    STEP("close memfd", close(fds[i][0]));

    // What a reused link's connection pays: the listener's looks for work, the reopen and its welcome, the
    // connector's port for the next connection (BENCHMARKS.md, "The listener accepts only where epoll says").
    int tcp = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), set = epoll_create1(0), pair[2];
    struct sockaddr_in loopback = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    if (tcp < 0 || set < 0 || bind(tcp, (struct sockaddr *)&loopback, sizeof loopback) != 0 || listen(tcp, 16) != 0 ||
        socketpair(AF_UNIX, SOCK_SEQPACKET, 0, pair) != 0) {
        perror("setup-costs");
        return 1;
    }
    struct epoll_event event = { .events = EPOLLIN }, ready[8];
    epoll_ctl(set, EPOLL_CTL_ADD, tcp, &event);
    char message[64] = { 0 };
    struct pollfd look = { .fd = pair[0], .events = POLLIN };
    STEP("accept4 on a TCP socket with nothing waiting", accept4(tcp, NULL, NULL, SOCK_NONBLOCK));
    STEP("epoll_wait without waiting", epoll_wait(set, ready, 8, 0));
    STEP("poll without waiting", poll(&look, 1, 0));
    STEP("sched_yield", sched_yield());
    STEP("getpid", getpid());
    STEP("64 bytes sent and received (SOCK_SEQPACKET)", send(pair[0], message, 64, 0); recv(pair[1], message, 64, 0));
    STEP("epoll_ctl DEL then ADD", epoll_ctl(set, EPOLL_CTL_DEL, tcp, NULL); epoll_ctl(set, EPOLL_CTL_ADD, tcp, &event));
    STEP("a port: socket, bind, getsockname, close", {
        int port = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        struct sockaddr_in bound = loopback;
        socklen_t length = sizeof bound;
        bind(port, (struct sockaddr *)&bound, sizeof bound);
        getsockname(port, (struct sockaddr *)&bound, &length);
        close(port);
    });
    return 0;
}
