// Ways into the kernel other than the named calls, on connections within one process, and one line per check of
// what a program can observe: calls through libc's syscall(), preadv2 and pwritev2 at offset -1 (readv and
// writev on a socket), and stdio streams on a socket (fdopen, dprintf),
// whose reads and writes libc makes internally. interop/preload-indirect.test.sh runs it with and without
// vmsock-run and requires the same output: under vmsock-run, the connections are shared memory, and these ways
// must reach the rings, never the wake-up bytes. At the end a forked worker, then the program itself, call
// io_uring_setup through syscall(): from then on the connections made to the listener the worker inherited, and
// the program's own, must be TCP (the debug lines say it).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#include "observe.h"

static int listener;
static struct sockaddr_in bound;

// A connected pair, connect and accept through syscall().
static int connected_pair(int *server) {
    int client = socket(AF_INET, SOCK_STREAM, 0);
    if (syscall(SYS_connect, client, &bound, sizeof bound) != 0) { perror("connect"); exit(1); }
    *server = (int)syscall(SYS_accept4, listener, NULL, NULL, 0);
    return client;
}

enum { BIG = 4 << 20 };
static unsigned char pattern(size_t i) { return (unsigned char)(i * 131 + (i >> 12)); }

static void *big_writer(void *arg) {
    int fd = *(int *)arg;
    static unsigned char chunk[65536];
    for (size_t sent = 0; sent < BIG;) {
        size_t n = BIG - sent < sizeof chunk ? BIG - sent : sizeof chunk;
        for (size_t i = 0; i < n; i++) chunk[i] = pattern(sent + i);
        long w = syscall(SYS_write, fd, chunk, n);
        if (w <= 0) { perror("write"); exit(1); }
        sent += (size_t)w;
    }
    return NULL;
}

// 4 MiB through raw write and raw read, with a thread writing: every byte checked.
static void big_transfer(int client, int server) {
    pthread_t thread;
    pthread_create(&thread, NULL, big_writer, &client);
    static unsigned char buf[70000];
    size_t got = 0, bad = 0;
    while (got < BIG) {
        long n = syscall(SYS_read, server, buf, sizeof buf);
        if (n <= 0) { perror("read"); break; }
        for (long i = 0; i < n; i++) bad += buf[i] != pattern(got + (size_t)i);
        got += (size_t)n;
    }
    pthread_join(thread, NULL);
    SHOW("4 MiB by raw write and read", "%zu bytes, %zu wrong", got, bad);
}

static void raw_waits(int client, int server) {
    struct pollfd p = { server, POLLIN, 0 };
    CHECK("SYS_poll idle", syscall(SYS_poll, &p, 1, 0));
    CHECK("SYS_write", syscall(SYS_write, client, "ping", 4));
    CHECK("SYS_poll with data", syscall(SYS_poll, &p, 1, 2000));
    SHOW("SYS_poll revents", "%#x", p.revents);
    struct timespec timeout = { 2, 0 };
    uint64_t kernel_mask = 0;  // the kernel's 8-byte signal set
    CHECK("SYS_ppoll with a mask", syscall(SYS_ppoll, &p, 1, &timeout, &kernel_mask, (size_t)8));
    SHOW("SYS_ppoll wrote the time left back", "%d", timeout.tv_sec < 2 && (timeout.tv_sec > 0 || timeout.tv_nsec > 0));
    CHECK("SYS_ppoll with a wrong mask size", syscall(SYS_ppoll, &p, 1, &timeout, &kernel_mask, 4));
    fd_set readers;
    FD_ZERO(&readers);
    FD_SET(server, &readers);
    struct { const void *set; size_t size; } packed = { &kernel_mask, 8 };
    struct timespec two = { 2, 0 };
    CHECK("SYS_pselect6 with data", syscall(SYS_pselect6, server + 1, &readers, NULL, NULL, &two, &packed));
    SHOW("SYS_pselect6 wrote the time left back", "%d", two.tv_sec < 2 && (two.tv_sec > 0 || two.tv_nsec > 0));
    SHOW("SYS_pselect6 says readable", "%d", FD_ISSET(server, &readers));
    int queued = -1;
    CHECK("SYS_ioctl FIONREAD", syscall(SYS_ioctl, server, FIONREAD, &queued));
    SHOW("FIONREAD", "%d", queued);
    int set = (int)syscall(SYS_epoll_create1, EPOLL_CLOEXEC);
    struct epoll_event event = { .events = EPOLLIN | EPOLLET, .data.u32 = 7 }, out[4];
    CHECK("SYS_epoll_ctl ADD", syscall(SYS_epoll_ctl, set, EPOLL_CTL_ADD, server, &event));
    CHECK("SYS_epoll_pwait with data", syscall(SYS_epoll_pwait, set, out, 4, 2000, &kernel_mask, (size_t)8));
    SHOW("SYS_epoll_pwait data", "%u %#x", out[0].data.u32, out[0].events);
    char buf[16] = "";
    CHECK("SYS_read", syscall(SYS_read, server, buf, sizeof buf));
    SHOW("SYS_read got", "%s", buf);
    CHECK("SYS_epoll_pwait after the read (ET)", syscall(SYS_epoll_pwait, set, out, 4, 0, NULL, (size_t)8));
    CHECK("SYS_write again", syscall(SYS_write, client, "pong", 4));
    CHECK("SYS_epoll_pwait2 with new data", syscall(SYS_epoll_pwait2, set, out, 4, &timeout, NULL, (size_t)8));
    CHECK("SYS_recvfrom", syscall(SYS_recvfrom, server, buf, sizeof buf, 0, NULL, NULL));
    CHECK("SYS_close of the set", syscall(SYS_close, set));
}

static void raw_calls(int client, int server) {
    char buf[64] = "";
    CHECK("SYS_sendto", syscall(SYS_sendto, client, "abc", 3, 0, NULL, 0));
    CHECK("SYS_recvfrom MSG_PEEK", syscall(SYS_recvfrom, server, buf, sizeof buf, MSG_PEEK, NULL, NULL));
    struct iovec two[2] = { { "de", 2 }, { "fgh", 3 } };
    CHECK("SYS_writev", syscall(SYS_writev, client, two, 2));
    char x[3], y[5];
    struct iovec in[2] = { { x, 3 }, { y, 5 } };
    CHECK("SYS_readv", syscall(SYS_readv, server, in, 2));
    SHOW("SYS_readv got", "%.3s%.5s", x, y);
    struct msghdr message = { .msg_iov = two, .msg_iovlen = 2 };
    CHECK("SYS_sendmsg", syscall(SYS_sendmsg, client, &message, MSG_NOSIGNAL));
    memset(buf, 0, sizeof buf);
    struct iovec one = { buf, sizeof buf - 1 };
    struct msghdr reply = { .msg_iov = &one, .msg_iovlen = 1 };
    CHECK("SYS_recvmsg", syscall(SYS_recvmsg, server, &reply, 0));
    SHOW("SYS_recvmsg got", "%s", buf);
    // preadv2 and pwritev2 at offset -1 are readv and writev on a socket (RWF_NOWAIT: non-blocking).
    struct iovec whole = { buf, sizeof buf - 1 };
    CHECK("preadv2 -1 RWF_NOWAIT, nothing there", preadv2(server, &whole, 1, -1, RWF_NOWAIT));
    CHECK("pwritev2 -1", pwritev2(client, two, 2, -1, 0));
    CHECK("preadv2 at offset 0", preadv2(server, &whole, 1, 0, 0));
    memset(buf, 0, sizeof buf);
    CHECK("preadv2 -1", preadv2(server, &whole, 1, -1, 0));
    SHOW("preadv2 got", "%s", buf);
    CHECK("SYS_pwritev2 -1", syscall(SYS_pwritev2, client, two, 2, -1L, 0L, 0L));
    struct pollfd ready = { server, POLLIN, 0 };
    poll(&ready, 1, 2000);
    memset(buf, 0, sizeof buf);
    CHECK("SYS_preadv2 -1 RWF_NOWAIT", syscall(SYS_preadv2, server, &whole, 1, -1L, 0L, (long)RWF_NOWAIT));
    SHOW("SYS_preadv2 got", "%s", buf);
    long flags = syscall(SYS_fcntl, server, F_GETFL);
    CHECK("SYS_fcntl F_SETFL O_NONBLOCK", syscall(SYS_fcntl, server, F_SETFL, flags | O_NONBLOCK));
    CHECK("SYS_read empty non-blocking", syscall(SYS_read, server, buf, sizeof buf));
    int copy = (int)syscall(SYS_dup, client);
    CHECK("SYS_write through a dup", syscall(SYS_write, copy, "dup", 3));
    CHECK("SYS_close of the dup", syscall(SYS_close, copy));
    struct pollfd p = { server, POLLIN, 0 };
    poll(&p, 1, 2000);
    memset(buf, 0, sizeof buf);
    CHECK("read after the dup closed", read(server, buf, sizeof buf));
    SHOW("read got", "%s", buf);
    int spare = (int)syscall(SYS_dup, client);
    CHECK("SYS_close_range of a dup", syscall(SYS_close_range, spare, spare, 0));
    CHECK("write after close_range of the dup", write(client, "!", 1));
    poll(&p, 1, 2000);
    CHECK("read it", read(server, buf, sizeof buf));
    syscall(SYS_fcntl, server, F_SETFL, flags);
}

// A child forked through the raw call writes; the parent reads.
static void raw_fork(int client, int server) {
    fflush(stdout);
    long child = syscall(SYS_fork);
    if (child == 0) {
        long w = syscall(SYS_write, client, "from the child", 14);
        _exit(w == 14 ? 0 : 1);
    }
    int status = 0;
    waitpid((pid_t)child, &status, 0);
    SHOW("SYS_fork child wrote", "exit %d", WEXITSTATUS(status));
    char buf[32] = "";
    struct pollfd p = { server, POLLIN, 0 };
    poll(&p, 1, 2000);
    CHECK("parent reads it", read(server, buf, sizeof buf));
    SHOW("parent got", "%s", buf);
}

static void shutdown_and_close(int client, int server) {
    CHECK("SYS_shutdown SHUT_WR", syscall(SYS_shutdown, client, SHUT_WR));
    char buf[8];
    CHECK("SYS_read at end of stream", syscall(SYS_read, server, buf, sizeof buf));
    CHECK("SYS_close client", syscall(SYS_close, client));
    CHECK("SYS_close server", syscall(SYS_close, server));
}

enum { LINES = 20000 };

static void *line_writer(void *arg) {
    FILE *out = arg;
    for (int i = 0; i < LINES; i++) fprintf(out, "line %d of %d, padded to some length .....................\n", i, LINES);
    fclose(out);  // closes the socket too: the reader sees the end
    return NULL;
}

// fdopen streams both ways: lines with fprintf and fgets, dprintf, then 20,000 lines from a thread read back with
// getline, every one checked, and the end of the stream after the writer's fclose.
static void stdio_streams(void) {
    int server, client = connected_pair(&server);
    FILE *out = fdopen(client, "w"), *in = fdopen(server, "r+");
    SHOW("fdopen both ends", "%d %d", out != NULL, in != NULL);
    SHOW("fileno gives the sockets", "%d %d", fileno(out) == client, fileno(in) == server);
    CHECK("fprintf two lines", fprintf(out, "line one\nline %d\n", 2));
    CHECK("fflush", fflush(out));
    char line[128] = "";
    SHOW("fgets", "%s", fgets(line, sizeof line, in) ? line : "(null)\n");
    SHOW("fgets", "%s", fgets(line, sizeof line, in) ? line : "(null)\n");
    CHECK("dprintf to the server's socket", dprintf(server, "reply %d\n", 42));
    CHECK("fprintf on the server's stream", fprintf(in, "and %s\n", "more"));
    CHECK("fflush it", fflush(in));
    memset(line, 0, sizeof line);
    struct pollfd p = { client, POLLIN, 0 };
    size_t got = 0;
    while (got < 17 && poll(&p, 1, 2000) == 1) {
        ssize_t n = read(client, line + got, sizeof line - 1 - got);
        if (n <= 0) break;
        got += (size_t)n;
    }
    SHOW("client read", "%zu %s", got, strchr(line, '\n') ? "(lines)" : line);
    SHOW("what it read", "%s", line);
    pthread_t thread;
    pthread_create(&thread, NULL, line_writer, out);
    char *text = NULL, want[128];
    size_t capacity = 0;
    int lines = 0, wrong = 0;
    while (getline(&text, &capacity, in) > 0) {
        snprintf(want, sizeof want, "line %d of %d, padded to some length .....................\n", lines, LINES);
        wrong += strcmp(text, want) != 0;
        lines++;
    }
    pthread_join(thread, NULL);
    SHOW("getline after the writer's fclose", "%d lines, %d wrong, eof %d", lines, wrong, feof(in) != 0);
    free(text);
    CHECK("fclose the reader", fclose(in));
}

static long setup_ring(void) {
    struct io_uring_params params;
    memset(&params, 0, sizeof params);
    return syscall(SYS_io_uring_setup, 4, &params);
}

// Another process connects to the listener, sends a line and waits for the end (client_process below).
static pid_t spawn_client(void) {
    char port[16];
    snprintf(port, sizeof port, "%d", ntohs(bound.sin_port));
    char *argv[] = { "preload-indirect", "client", port, NULL };
    pid_t pid = -1;
    SHOW("posix_spawn a client process", "%d", posix_spawn(&pid, "/proc/self/exe", NULL, NULL, argv, environ));
    return pid;
}

static void wait_client(pid_t pid) {
    int status = 0;
    waitpid(pid, &status, 0);
    SHOW("client process", "exit %d", WEXITSTATUS(status));
}

// A forked worker sets up a ring, then accepts on the listener it inherited: the process that registered it
// (this one) must welcome nobody from then on, so the client's connection is TCP and the worker reads its line.
static void worker_uring(void) {
    int ready[2], report[2];
    if (pipe(ready) != 0 || pipe(report) != 0) { perror("pipe"); exit(1); }
    fflush(stdout);
    pid_t worker = fork();
    if (worker == 0) {
        char c = setup_ring() >= 0 ? 'y' : 'n';
        (void)!write(ready[1], &c, 1);
        int accepted = accept4(listener, NULL, NULL, 0);
        char hello[16] = "";
        ssize_t n = read(accepted, hello, sizeof hello);
        (void)!write(report[1], hello, n > 0 ? (size_t)n : 0);
        close(accepted);
        _exit(0);
    }
    close(report[1]);
    char c = 0;
    (void)!read(ready[0], &c, 1);
    SHOW("worker's io_uring_setup", "%s", c == 'y' ? "ok" : "refused");
    pid_t client = spawn_client();
    char hello[16] = "";
    (void)!read(report[0], hello, sizeof hello - 1);
    SHOW("the worker read", "%s", hello);
    wait_client(client);
    waitpid(worker, NULL, 0);
    close(ready[0]), close(ready[1]), close(report[0]);
}

// After io_uring_setup through syscall() in this process: a connection both ways still works, and so does one
// from another process, whatever they are made of.
static void after_uring(void) {
    long ring = setup_ring();
    SHOW("io_uring_setup", "%s", ring >= 0 ? "ok" : "refused");
    pid_t pid = spawn_client();
    int accepted = (int)syscall(SYS_accept4, listener, NULL, NULL, 0);
    char hello[16] = "";
    CHECK("read what it sent", read(accepted, hello, sizeof hello));
    SHOW("it sent", "%s", hello);
    close(accepted);
    wait_client(pid);
    int server, client = connected_pair(&server);
    CHECK("write after io_uring_setup", write(client, "after", 5));
    char buf[8] = "";
    CHECK("read it", read(server, buf, sizeof buf));
    SHOW("got", "%s", buf);
    close(client);
    close(server);
    if (ring >= 0) close((int)ring);
}

// The client process of after_uring: connects to the port, sends a line, and waits for the end.
static int client_process(const char *port) {
    struct sockaddr_in to = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = htons((uint16_t)atoi(port)) };
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fd, (struct sockaddr *)&to, sizeof to) != 0) return 1;
    if (write(fd, "from a process", 14) != 14) return 2;
    shutdown(fd, SHUT_WR);
    char buf[8];
    return read(fd, buf, sizeof buf) == 0 ? 0 : 3;
}

// Standard streams on a connection, as an inetd-like server uses them without exec: a forked child moves the
// socket onto 0 and 1 and uses stdin and stdout, made long before (libc reads and writes them internally); its
// standard output moved back (bash's way with `echo >&3`) writes to the old descriptor again; stdin is reopened
// on /dev/null (freopen); stdout, moved onto the socket once more, leaves a last line in its buffer for exit.
static void standard_streams(void) {
    int server, client = connected_pair(&server);
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
        int saved = dup(1);
        dup2(client, 0);
        dup2(client, 1);
        close(client);
        printf("printf %d\n", 1);
        puts("puts");
        putchar('c');
        putchar('\n');
        fflush(stdout);
        char line[64] = "";
        if (!fgets(line, sizeof line, stdin)) strcpy(line, "(nothing)\n");
        printf("fgets got %s", line);
        fflush(stdout);
        int moved = dup(1);
        dup2(saved, 1);
        SHOW("the child's stdout, moved back", "%s", "writes here");
        dup2(moved, 1);
        // An inetd-like child's freopen of its standard input (libc's would crash on the library's stream).
        if (!freopen("/dev/null", "r", stdin) || getchar() != EOF) printf("freopen of stdin failed\n");
        setvbuf(stdout, NULL, _IOFBF, 4096);
        printf("left for exit to flush");
        exit(0);
    }
    close(client);
    CHECK("a line for the child's fgets", write(server, "hello\n", 6));
    char text[256] = "";
    size_t got = 0;
    ssize_t n;
    while (got < sizeof text - 1 && (n = read(server, text + got, sizeof text - 1 - got)) > 0) got += (size_t)n;
    int status = 0;
    waitpid(child, &status, 0);
    SHOW("the child", "exit %d", WEXITSTATUS(status));
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) SHOW("the child's stdout wrote", "%s", line);
    close(server);
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "client") == 0) return client_process(argv[2]);
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    bound = (struct sockaddr_in){ .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    CHECK("bind", bind(listener, (struct sockaddr *)&bound, sizeof bound));
    socklen_t length = sizeof bound;
    getsockname(listener, (struct sockaddr *)&bound, &length);
    CHECK("SYS_listen", syscall(SYS_listen, listener, 16));

    int server, client = connected_pair(&server);
    raw_waits(client, server);
    raw_calls(client, server);
    raw_fork(client, server);
    big_transfer(client, server);
    shutdown_and_close(client, server);
    stdio_streams();
    standard_streams();
    worker_uring();
    after_uring();
    printf("done\n");
    return 0;
}
