// Exercises each call vmsock-run interposes, edge cases included, on connections within one process, and prints
// one line per check: what a program can observe (results, errno names, readiness), never addresses or
// timings. interop/preload-calls.test.sh runs it with and without vmsock-run and requires the same output.
// Built with -O2 -D_FORTIFY_SOURCE=2, so read, recv and recvfrom into buffers of known size are the _chk variants.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <unistd.h>

#include "observe.h"

static int listener;
static struct sockaddr_in bound;

static int connected_pair(int *server, int client_type) {
    int client = socket(AF_INET, SOCK_STREAM | client_type, 0);
    int r = connect(client, (struct sockaddr *)&bound, sizeof bound);
    if (r != 0 && errno == EINPROGRESS) {
        struct pollfd p = { client, POLLOUT, 0 };
        poll(&p, 1, 5000);
    }
    *server = accept4(listener, NULL, NULL, 0);
    return client;
}

static int readable(int fd, int timeout) {
    struct pollfd p = { fd, POLLIN, 0 };
    return poll(&p, 1, timeout) == 1 && (p.revents & POLLIN);
}

// splice with SPLICE_F_NONBLOCK on blocking pipes, as haproxy calls it: a full pipe, or an empty one, answers
// EAGAIN at once; then 60,000 bytes go from the socket through a pipe, every byte in order.
static void nonblocking_splices(int client, int server) {
    int p[2];
    (void)!pipe(p);
    static char block[65536];
    fcntl(p[1], F_SETFL, O_NONBLOCK);
    while (write(p[1], block, sizeof block) > 0) {}
    fcntl(p[1], F_SETFL, 0);
    static char sent[60000], got[60000];
    for (size_t i = 0; i < sizeof sent; i++) sent[i] = (char)(i * 7 + i / 251);
    CHECK("splice NONBLOCK: the peer writes", write(client, sent, sizeof sent));
    readable(server, 2000);
    errno = 0;
    ssize_t n = splice(server, NULL, p[1], NULL, 65536, SPLICE_F_NONBLOCK);
    SHOW("splice NONBLOCK into a full blocking pipe", "%zd %s", n, strerrorname_np(errno));
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    while (read(p[0], block, sizeof block) > 0) {}
    fcntl(p[0], F_SETFL, 0);
    errno = 0;
    n = splice(p[0], NULL, client, NULL, 65536, SPLICE_F_NONBLOCK);
    SHOW("splice NONBLOCK from an empty blocking pipe", "%zd %s", n, strerrorname_np(errno));
    size_t total = 0;
    int stalls = 0;
    while (total < sizeof got && stalls < 100) {
        n = splice(server, NULL, p[1], NULL, sizeof got - total, SPLICE_F_NONBLOCK);
        if (n > 0) {
            for (ssize_t done = 0, r; done < n; done += r) {
                r = read(p[0], got + total + done, (size_t)(n - done));
                if (r <= 0) break;
            }
            total += (size_t)n;
        } else if (!readable(server, 100)) {
            stalls++;
        }
    }
    SHOW("splice NONBLOCK: bytes through a pipe, in order", "%zu %s", total,
         memcmp(sent, got, sizeof got) == 0 ? "same" : "DIFFERENT");
    // An O_NONBLOCK pipe end makes a call without SPLICE_F_NONBLOCK not wait either; the kernel's refusals.
    CHECK("splice: the peer writes again", write(client, "abc", 3));
    readable(server, 2000);
    fcntl(p[1], F_SETFL, O_NONBLOCK);
    while (write(p[1], block, sizeof block) > 0) {}
    errno = 0;
    n = splice(server, NULL, p[1], NULL, 3, 0);
    SHOW("splice into a full O_NONBLOCK pipe, flags 0", "%zd %s", n, strerrorname_np(errno));
    char path[] = "/tmp/preload-calls-splice-XXXXXX";
    int file = mkstemp(path);
    unlink(path);
    errno = 0;
    n = splice(server, NULL, file, NULL, 3, 0);
    SHOW("splice socket to a regular file", "%zd %s", n, strerrorname_np(errno));
    loff_t offset = 0;
    errno = 0;
    n = splice(server, &offset, p[1], NULL, 3, 0);
    SHOW("splice with an offset on the socket", "%zd %s", n, strerrorname_np(errno));
    SHOW("splice: the bytes stay for a read", "%zd", recv(server, block, sizeof block, 0));
    close(file);
    close(p[0]);
    close(p[1]);
}

static void *late_writer(void *arg) {
    int fd = *(int *)arg;
    for (int i = 0; i < 3; i++) { usleep(20000); (void)!write(fd, "0123456789", 10); }
    return NULL;
}

static void *slow_writer(void *arg) {
    int fd = *(int *)arg;
    usleep(200000);
    (void)!write(fd, "late", 4);
    return NULL;
}

static volatile sig_atomic_t alarms;
static void on_alarm(int sig) { (void)sig; alarms++; }

// A blocking read interrupted by a signal: restarted under SA_RESTART, EINTR without it, as TCP does.
static void interrupted_read(int reader, int writer, int restart) {
    int flags = fcntl(reader, F_GETFL);
    fcntl(reader, F_SETFL, flags & ~O_NONBLOCK);
    struct sigaction action = { .sa_handler = on_alarm, .sa_flags = restart ? SA_RESTART : 0 };
    sigemptyset(&action.sa_mask);
    sigaction(SIGALRM, &action, NULL);
    alarms = 0;
    pthread_t thread;
    pthread_create(&thread, NULL, slow_writer, &writer);
    struct itimerval timer = { .it_value = { 0, 50000 } };
    setitimer(ITIMER_REAL, &timer, NULL);
    char buf[16];
    ssize_t n = read(reader, buf, sizeof buf);
    printf("%-44s %s alarm=%d\n", restart ? "read across a SA_RESTART signal" : "read across a signal without SA_RESTART",
           err(n), alarms > 0);
    pthread_join(thread, NULL);
    if (n < 0) { readable(reader, 2000); (void)!read(reader, buf, sizeof buf); }
    signal(SIGALRM, SIG_DFL);
    fcntl(reader, F_SETFL, flags);
}

static volatile sig_atomic_t sigpipes;
static void on_sigpipe(int sig) { (void)sig; sigpipes++; }

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    bound = (struct sockaddr_in){ .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    CHECK("bind", bind(listener, (struct sockaddr *)&bound, sizeof bound));
    socklen_t length = sizeof bound;
    getsockname(listener, (struct sockaddr *)&bound, &length);
    CHECK("listen", listen(listener, 16));

    // Blocking connect, accept4 with flags.
    int client = socket(AF_INET, SOCK_STREAM, 0);
    CHECK("connect (blocking)", connect(client, (struct sockaddr *)&bound, sizeof bound));
    int server = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    SHOW("accept4 NONBLOCK|CLOEXEC flags", "nonblock=%d cloexec=%d", (fcntl(server, F_GETFL) & O_NONBLOCK) != 0,
         (fcntl(server, F_GETFD) & FD_CLOEXEC) != 0);
    struct sockaddr_in a, b;
    socklen_t la = sizeof a, lb = sizeof b;
    getsockname(client, (struct sockaddr *)&a, &la);
    getpeername(server, (struct sockaddr *)&b, &lb);
    SHOW("client port == server's peer port", "%d", a.sin_port == b.sin_port && a.sin_addr.s_addr == b.sin_addr.s_addr);
    struct stat st;
    fstat(client, &st);
    SHOW("fstat is a socket", "%d", S_ISSOCK(st.st_mode));
    CHECK("setsockopt TCP_NODELAY", setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one));
    int value = 0;
    length = sizeof value;
    getsockopt(client, IPPROTO_TCP, TCP_NODELAY, &value, &length);
    SHOW("getsockopt TCP_NODELAY", "%d", value);
    length = sizeof value;
    CHECK("getsockopt SO_ERROR", getsockopt(client, SOL_SOCKET, SO_ERROR, &value, &length));

    // Readiness is exact: nothing, then data, then nothing again once read.
    char buf[256];
    SHOW("poll before any data", "%d", readable(server, 0));
    CHECK("read empty non-blocking", read(server, buf, sizeof buf));
    CHECK("write hello", write(client, "hello", 5));
    SHOW("poll after write", "%d", readable(server, 2000));
    int queued = -1;
    ioctl(server, FIONREAD, &queued);
    SHOW("FIONREAD", "%d", queued);
    CHECK("recv MSG_PEEK", recv(server, buf, sizeof buf, MSG_PEEK));
    SHOW("poll after peek", "%d", readable(server, 0));
    CHECK("read", read(server, buf, sizeof buf));
    SHOW("poll after read", "%d", readable(server, 0));
    CHECK("read again", read(server, buf, sizeof buf));

    // select and pselect, in a set with another descriptor.
    CHECK("send", send(client, "abc", 3, 0));
    int pipefd[2];
    (void)!pipe(pipefd);
    fd_set set;
    FD_ZERO(&set);
    FD_SET(server, &set);
    FD_SET(pipefd[0], &set);
    struct timeval tv = { 2, 0 };
    CHECK("select", select((server > pipefd[0] ? server : pipefd[0]) + 1, &set, NULL, NULL, &tv));
    SHOW("select: socket set, pipe not", "%d %d", FD_ISSET(server, &set) != 0, FD_ISSET(pipefd[0], &set) != 0);
    struct sockaddr_storage from;
    socklen_t fromlen = sizeof from;
    CHECK("recvfrom", recvfrom(server, buf, sizeof buf, 0, (struct sockaddr *)&from, &fromlen));
    SHOW("recvfrom address length", "%d", (int)fromlen);
    FD_ZERO(&set);
    FD_SET(server, &set);
    struct timespec ts = { 0, 0 };
    CHECK("pselect when drained", pselect(server + 1, &set, NULL, NULL, &ts, NULL));
    struct pollfd pp = { server, POLLIN | POLLOUT, 0 };
    CHECK("ppoll", ppoll(&pp, 1, &ts, NULL));
    SHOW("ppoll revents", "in=%d out=%d", (pp.revents & POLLIN) != 0, (pp.revents & POLLOUT) != 0);
    // A poll on the idle connection and a pipe that another process writes to while the poll spins on the rings:
    // the pipe's event ends the spin (wait.c peeks at the other descriptors) and is reported; the connection is not.
    int later[2];
    (void)!pipe(later);
    pid_t writer = fork();
    if (writer == 0) {
        usleep(20);
        (void)!write(later[1], "p", 1);
        _exit(0);
    }
    struct pollfd two[2] = { { server, POLLIN, 0 }, { later[0], POLLIN, 0 } };
    CHECK("poll: idle connection, pipe written", poll(two, 2, 5000));
    SHOW("poll: pipe readable, connection not", "%d %d", (two[1].revents & POLLIN) != 0, two[0].revents != 0);
    waitpid(writer, NULL, 0);
    close(later[0]);
    close(later[1]);

    // The FORTIFY_SOURCE variants: a length the compiler cannot check makes read, recv and recvfrom into a
    // buffer of known size call __read_chk, __recv_chk and __recvfrom_chk.
    volatile size_t runtime_length = sizeof buf;
    CHECK("write 3 x chk", write(client, "chk1chk2chk3", 12));
    readable(server, 2000);
    CHECK("__read_chk", read(server, buf, 4));
    CHECK("__read_chk (runtime length)", read(server, buf, runtime_length > 4 ? 4 : runtime_length));
    CHECK("__recv_chk", recv(server, buf, runtime_length - (sizeof buf - 2), 0));
    fromlen = sizeof from;
    CHECK("__recvfrom_chk", recvfrom(server, buf, runtime_length, 0, (struct sockaddr *)&from, &fromlen));

    // Vectors and messages.
    struct iovec out[3] = { { "one", 3 }, { "-two", 4 }, { "-three", 6 } };
    CHECK("writev", writev(client, out, 3));
    char x[5], y[32];
    struct iovec in[2] = { { x, sizeof x }, { y, sizeof y } };
    readable(server, 2000);
    ssize_t n = readv(server, in, 2);
    SHOW("readv", "%zd %.5s|%.*s", n, x, (int)(n > 5 ? n - 5 : 0), y);
    struct msghdr m = { .msg_iov = out, .msg_iovlen = 3 };
    CHECK("sendmsg", sendmsg(client, &m, MSG_NOSIGNAL));
    readable(server, 2000);
    struct msghdr r = { .msg_iov = in, .msg_iovlen = 2 };
    CHECK("recvmsg", recvmsg(server, &r, 0));
    SHOW("recvmsg flags, namelen", "%d %d", r.msg_flags, (int)r.msg_namelen);
    CHECK("sendto (address ignored)", sendto(client, "xy", 2, 0, NULL, 0));
    readable(server, 2000);
    CHECK("recv MSG_TRUNC (discards)", recv(server, NULL, 2, MSG_TRUNC));

    // recvmmsg and sendmmsg: on a stream socket, message after message.
    struct mmsghdr mm[2];
    struct iovec mo[2] = { { "mm-one", 6 }, { "mm-two", 6 } };
    memset(mm, 0, sizeof mm);
    mm[0].msg_hdr.msg_iov = &mo[0]; mm[0].msg_hdr.msg_iovlen = 1;
    mm[1].msg_hdr.msg_iov = &mo[1]; mm[1].msg_hdr.msg_iovlen = 1;
    CHECK("sendmmsg 2", sendmmsg(client, mm, 2, 0));
    readable(server, 2000);
    char m1[8], m2[8];
    struct iovec mi[2] = { { m1, 8 }, { m2, 8 } };
    memset(mm, 0, sizeof mm);
    mm[0].msg_hdr.msg_iov = &mi[0]; mm[0].msg_hdr.msg_iovlen = 1;
    mm[1].msg_hdr.msg_iov = &mi[1]; mm[1].msg_hdr.msg_iovlen = 1;
    int got_mm = recvmmsg(server, mm, 2, MSG_DONTWAIT, NULL);
    SHOW("recvmmsg", "%d %u %u %.8s|%.4s", got_mm, mm[0].msg_len, got_mm > 1 ? mm[1].msg_len : 0, m1,
         got_mm > 1 ? m2 : "");

    // splice through a pipe, both ways.
    int sp[2];
    (void)!pipe(sp);
    (void)!write(sp[1], "spliced!", 8);
    CHECK("splice pipe to socket", splice(sp[0], NULL, client, NULL, 8, 0));
    readable(server, 2000);
    CHECK("splice socket to pipe", splice(server, NULL, sp[1], NULL, 64, 0));
    n = read(sp[0], buf, sizeof buf);
    SHOW("what came through both splices", "%zd %.*s", n, (int)(n > 0 ? n : 0), buf);
    close(sp[0]);
    close(sp[1]);
    nonblocking_splices(client, server);

    // Blocking modes: ioctl FIONBIO, fcntl, MSG_DONTWAIT, MSG_WAITALL.
    int off = 0;
    CHECK("ioctl FIONBIO 0", ioctl(server, FIONBIO, &off));
    CHECK("recv MSG_DONTWAIT empty", recv(server, buf, sizeof buf, MSG_DONTWAIT));
    pthread_t thread;
    pthread_create(&thread, NULL, late_writer, &client);
    CHECK("recv MSG_WAITALL 30", recv(server, buf, 30, MSG_WAITALL));
    pthread_join(thread, NULL);
    CHECK("fcntl F_SETFL O_NONBLOCK", fcntl(server, F_SETFL, fcntl(server, F_GETFL) | O_NONBLOCK));
    CHECK("read non-blocking empty", read(server, buf, sizeof buf));

    // Duplicates share the connection; it lives until the last one closes.
    int d1 = dup(server), d2 = fcntl(server, F_DUPFD, 100), d3 = fcntl(server, F_DUPFD_CLOEXEC, 200);
    int d4 = dup3(server, 300, O_CLOEXEC);
    SHOW("dup, F_DUPFD, F_DUPFD_CLOEXEC, dup3", "%d %d %d %d", d1 >= 0, d2 >= 100, d3 >= 200, d4 == 300);
    CHECK("close original", close(server));
    CHECK("write after server's dup", write(client, "dup!", 4));
    readable(d1, 2000);
    CHECK("read through dup", read(d1, buf, sizeof buf));
    CHECK("dup2 over a dup", dup2(d1, d2));
    CHECK("close_range 200..300", close_range(200, 300, 0));
    CHECK("write", write(client, "more", 4));
    readable(d2, 2000);
    CHECK("read through F_DUPFD", read(d2, buf, sizeof buf));
    close(d2);
    server = d1;

    // epoll, level-triggered (not interposed: the TCP socket's readiness is the ring's).
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = server }, got[4];
    epoll_ctl(ep, EPOLL_CTL_ADD, server, &ev);
    CHECK("epoll_wait idle", epoll_wait(ep, got, 4, 0));
    CHECK("write", write(client, "ep", 2));
    CHECK("epoll_wait after write", epoll_wait(ep, got, 4, 2000));
    CHECK("read", read(server, buf, sizeof buf));
    CHECK("epoll_wait drained", epoll_wait(ep, got, 4, 0));
    close(ep);

    // sendfile from a file to the socket.
    char path[] = "/tmp/preload-calls.XXXXXX";
    int file = mkstemp(path);
    unlink(path);
    for (int i = 0; i < 1000; i++) (void)!write(file, "0123456789abcdef", 16);
    off_t offset = 100;
    CHECK("sendfile 5000 from offset 100", sendfile(client, file, &offset, 5000));
    SHOW("sendfile offset after", "%ld", (long)offset);
    size_t total = 0;
    int sums = 0;
    while (total < 5000 && readable(server, 2000)) {
        ssize_t k = read(server, buf, sizeof buf);
        if (k <= 0) break;
        for (ssize_t i = 0; i < k; i++) sums += buf[i];
        total += (size_t)k;
    }
    SHOW("sendfile received bytes, sum", "%zu %d", total, sums);
    close(file);

    // A megabyte each way through a non-blocking poll loop: full rings, EAGAIN, partial writes.
    int nb = 1;
    ioctl(client, FIONBIO, &nb);
    size_t size = 1 << 20, sent[2] = { 0, 0 }, received[2] = { 0, 0 };
    unsigned long check_sum[2] = { 0, 0 };
    char *block = malloc(65536);
    for (int i = 0; i < 65536; i++) block[i] = (char)(i * 7);
    int fds[2] = { client, server };
    while (received[0] < size || received[1] < size) {
        struct pollfd p[2] = { { client, POLLIN | (sent[0] < size ? POLLOUT : 0), 0 },
                               { server, POLLIN | (sent[1] < size ? POLLOUT : 0), 0 } };
        if (poll(p, 2, 5000) <= 0) { printf("poll loop stalled\n"); break; }
        for (int s = 0; s < 2; s++) {
            if ((p[s].revents & POLLOUT) && sent[s] < size) {
                size_t want = size - sent[s] < 65536 ? size - sent[s] : 65536;
                ssize_t k = send(fds[s], block + (sent[s] % 65536 ? 0 : 0), want, MSG_NOSIGNAL);
                if (k > 0) sent[s] += (size_t)k;
            }
            if (p[s].revents & POLLIN) {
                ssize_t k = recv(fds[s], buf, sizeof buf, 0);
                for (ssize_t i = 0; i < k; i++) check_sum[s] += (unsigned char)buf[i];
                if (k > 0) received[s] += (size_t)k;
            }
        }
    }
    SHOW("1 MiB each way via poll", "%zu %zu %lu %lu", received[0], received[1], check_sum[0], check_sum[1]);
    nb = 0;
    ioctl(client, FIONBIO, &nb);

    // Signals during a blocking read.
    interrupted_read(server, client, 1);
    interrupted_read(server, client, 0);

    // Half close: the peer reads what was sent, then end of stream; the other direction still works.
    CHECK("write before shutdown", write(client, "last", 4));
    CHECK("shutdown SHUT_WR", shutdown(client, SHUT_WR));
    readable(server, 2000);
    CHECK("read the last bytes", read(server, buf, sizeof buf));
    readable(server, 2000);
    CHECK("read end of stream", read(server, buf, sizeof buf));
    SHOW("poll at end of stream", "%d", readable(server, 0));
    CHECK("write back after half close", write(server, "reply", 5));
    CHECK("read the reply (blocking)", read(client, buf, sizeof buf));
    CHECK("write after SHUT_WR", send(client, "x", 1, MSG_NOSIGNAL));

    // A closed peer: EPIPE (and SIGPIPE unless MSG_NOSIGNAL), within a few writes as TCP gives it.
    int s2, c2 = connected_pair(&s2, 0);
    CHECK("close the peer", close(s2));
    int epipe = 0;
    for (int i = 0; i < 100 && !epipe; i++) {
        if (send(c2, "x", 1, MSG_NOSIGNAL) < 0) epipe = errno == EPIPE ? 1 : -errno;
        usleep(1000);
    }
    SHOW("send to a closed peer: EPIPE", "%d", epipe);
    signal(SIGPIPE, on_sigpipe);
    errno = 0;
    ssize_t w = write(c2, "x", 1);
    SHOW("write to a closed peer: EPIPE + SIGPIPE", "%s sig=%d", err(w), sigpipes > 0);
    readable(c2, 2000);
    ssize_t eof = read(c2, buf, sizeof buf);
    SHOW("read from a closed peer: 0 or ECONNRESET", "%d", eof == 0 || (eof < 0 && errno == ECONNRESET));
    close(c2);

    // Non-blocking connect: EINPROGRESS (or at once), then POLLOUT and SO_ERROR 0.
    int c3 = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int rc = connect(c3, (struct sockaddr *)&bound, sizeof bound);
    SHOW("non-blocking connect", "%d", rc == 0 || errno == EINPROGRESS);
    struct pollfd pc = { c3, POLLOUT, 0 };
    CHECK("poll POLLOUT", poll(&pc, 1, 5000));
    value = -1;
    length = sizeof value;
    getsockopt(c3, SOL_SOCKET, SO_ERROR, &value, &length);
    SHOW("SO_ERROR", "%d", value);
    int s3 = accept(listener, NULL, NULL);
    CHECK("write on it", write(c3, "nb", 2));
    readable(s3, 2000);
    CHECK("read on the accepted side", read(s3, buf, sizeof buf));
    close(c3);
    close(s3);

    // Writing at once after a non-blocking connect: the bytes arrive (TCP may say EAGAIN until it is up).
    int c5 = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    connect(c5, (struct sockaddr *)&bound, sizeof bound);
    ssize_t early = write(c5, "early", 5);
    if (early < 0 && errno == EAGAIN) {
        struct pollfd pw = { c5, POLLOUT, 0 };
        poll(&pw, 1, 5000);
        early = write(c5, "early", 5);
    }
    int s5 = accept(listener, NULL, NULL);
    readable(s5, 2000);
    ssize_t got5 = read(s5, buf, sizeof buf);
    SHOW("write right after a non-blocking connect", "%zd %zd", early, got5);
    close(c5);
    close(s5);

    // Nothing listens: refused, as TCP says.
    struct sockaddr_in nobody = bound;
    close(listener);
    int c4 = socket(AF_INET, SOCK_STREAM, 0);
    CHECK("connect to a closed listener", connect(c4, (struct sockaddr *)&nobody, sizeof nobody));
    close(c4);
    close(client);
    close(server);
    printf("done\n");
    return 0;
}
