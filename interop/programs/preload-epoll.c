// Exercises the waits vmsock-run answers from the rings (epoll, poll, select) on connections within one process,
// and prints one line per check: what a program can observe (event masks, counts, data), never timings.
// interop/preload-epoll.test.sh runs it with and without vmsock-run and requires the same output (issue 19).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <unistd.h>

static int listener;
static struct sockaddr_in bound;

static void pair(int *client, int *server) {
    *client = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(*client, (struct sockaddr *)&bound, sizeof bound) != 0) { perror("connect"); exit(1); }
    *server = accept(listener, NULL, NULL);
    if (*server < 0) { perror("accept"); exit(1); }
}

static void put(int fd, const char *text) {
    if (write(fd, text, strlen(text)) != (ssize_t)strlen(text)) { perror("write"); exit(1); }
}

static long take(int fd, size_t count) {
    char buf[4096];
    return read(fd, buf, count < sizeof buf ? count : sizeof buf);
}

// One epoll_wait, printed as "label: N [data:events ...]" with events sorted by data.
static void show(const char *label, int set, int timeout) {
    struct epoll_event events[16];
    int n = epoll_wait(set, events, 16, timeout);
    for (int i = 1; i < n; i++) {
        for (int j = i; j > 0 && events[j - 1].data.u64 > events[j].data.u64; j--) {
            struct epoll_event t = events[j]; events[j] = events[j - 1]; events[j - 1] = t;
        }
    }
    printf("%-40s %d", label, n);
    for (int i = 0; i < n; i++) printf(" %llu:%#x", (unsigned long long)events[i].data.u64, events[i].events);
    printf("\n");
    fflush(stdout);
}

static void add(int set, int op, int fd, uint32_t events, uint64_t data) {
    struct epoll_event e = { .events = events, .data.u64 = data };
    if (epoll_ctl(set, op, fd, &e) != 0) { printf("epoll_ctl %d: %s\n", op, strerrorname_np(errno)); }
}

struct later { int fd; int delay_ms; const char *text; int set; int add_fd; };

static void *write_later(void *arg) {
    struct later *l = arg;
    usleep((useconds_t)l->delay_ms * 1000);
    if (l->text) put(l->fd, l->text);
    if (l->add_fd >= 0) add(l->set, EPOLL_CTL_ADD, l->add_fd, EPOLLIN, 7);
    return NULL;
}

// Sleeps in the set while another thread writes "late" to c 50 ms later, then reads it from s: "LABEL: woken by
// a write" and "LABEL: read", for a registration whose arm must make the writer ring.
static void woken_by_write(const char *label, int set, int c, int s) {
    char line[64];
    pthread_t t;
    struct later l = { c, 50, "late", -1, -1 };
    pthread_create(&t, NULL, write_later, &l);
    snprintf(line, sizeof line, "%s: woken by a write", label);
    show(line, set, 5000);
    pthread_join(t, NULL);
    snprintf(line, sizeof line, "%s: read", label);
    printf("%-40s %ld\n", line, take(s, 100));
}

static void levels(void) {
    int c, s;
    pair(&c, &s);
    int set = epoll_create1(EPOLL_CLOEXEC);
    add(set, EPOLL_CTL_ADD, s, EPOLLIN, 1);
    show("level: idle", set, 0);
    put(c, "0123456789");
    show("level: written", set, 1000);
    printf("%-40s %ld\n", "level: read 5", take(s, 5));
    show("level: 5 left", set, 0);
    printf("%-40s %ld\n", "level: read rest", take(s, 100));
    show("level: drained", set, 0);

    add(set, EPOLL_CTL_MOD, s, EPOLLIN | EPOLLET, 1);
    put(c, "abcdefghij");
    show("edge: written", set, 1000);
    printf("%-40s %ld\n", "edge: read 5", take(s, 5));
    show("edge: no new data", set, 0);
    put(c, "k");
    show("edge: one more byte", set, 1000);
    printf("%-40s %ld\n", "edge: read rest", take(s, 100));

    add(set, EPOLL_CTL_MOD, s, EPOLLIN | EPOLLONESHOT, 1);
    put(c, "x");
    show("oneshot: first", set, 1000);
    put(c, "y");
    show("oneshot: disabled", set, 50);
    add(set, EPOLL_CTL_MOD, s, EPOLLIN | EPOLLONESHOT, 1);
    show("oneshot: re-armed by MOD", set, 1000);
    printf("%-40s %ld\n", "oneshot: read", take(s, 100));

    add(set, EPOLL_CTL_MOD, s, EPOLLOUT, 1);
    show("out: writable", set, 0);
    add(set, EPOLL_CTL_ADD, s, EPOLLIN, 1);  // EEXIST
    add(set, EPOLL_CTL_DEL, s, 0, 0);
    add(set, EPOLL_CTL_DEL, s, 0, 0);  // ENOENT
    add(set, EPOLL_CTL_MOD, s, EPOLLIN, 1);  // ENOENT

    // Asleep when the data comes: the arm must make the writer ring.
    add(set, EPOLL_CTL_ADD, s, EPOLLIN | EPOLLRDHUP, 1);
    woken_by_write("asleep", set, c, s);
    shutdown(c, SHUT_WR);
    show("rdhup: peer shut its side", set, 1000);
    printf("%-40s %ld\n", "rdhup: read end", take(s, 100));
    close(c);
    close(s);
    show("closed: nothing", set, 0);
    close(set);
}

// Deleted and added again at every turn, as ae (redis, redis-benchmark) and libuv do: under vmsock-run the kernel
// keeps a deleted connection's registration parked, so it must behave exactly as a fresh one.
static void deleted_and_added(void) {
    int c, s;
    pair(&c, &s);
    int set = epoll_create1(EPOLL_CLOEXEC);
    int right = 0;
    for (int round = 0; round < 200; round++) {
        add(set, EPOLL_CTL_ADD, s, round % 2 ? EPOLLIN : EPOLLIN | EPOLLOUT, (uint64_t)round);
        put(c, "ping");
        struct epoll_event events[4];
        int n = epoll_wait(set, events, 4, 1000);
        right += n == 1 && events[0].data.u64 == (uint64_t)round && (events[0].events & EPOLLIN) &&
                 (!(events[0].events & EPOLLOUT)) == (round % 2) && take(s, 100) == 4;
        add(set, EPOLL_CTL_DEL, s, 0, 0);
    }
    printf("%-40s %d of 200\n", "del/add: rounds reported right", right);
    put(c, "unseen");
    show("del/add: deleted reports nothing", set, 50);
    add(set, EPOLL_CTL_MOD, s, EPOLLIN, 1);  // ENOENT
    add(set, EPOLL_CTL_DEL, s, 0, 0);  // ENOENT
    add(set, EPOLL_CTL_ADD, s, EPOLLIN, 1);
    show("del/add: added with data waiting", set, 1000);
    printf("%-40s %ld\n", "del/add: read", take(s, 100));

    // Asleep after coming back: the arm must still make the writer ring.
    add(set, EPOLL_CTL_DEL, s, 0, 0);
    add(set, EPOLL_CTL_ADD, s, EPOLLIN | EPOLLRDHUP, 2);
    woken_by_write("del/add: asleep", set, c, s);

    // The peer hangs up while deleted: seen when added again.
    add(set, EPOLL_CTL_DEL, s, 0, 0);
    shutdown(c, SHUT_WR);
    usleep(50000);
    add(set, EPOLL_CTL_ADD, s, EPOLLIN | EPOLLRDHUP, 3);
    show("del/add: peer shut while deleted", set, 1000);
    printf("%-40s %ld\n", "del/add: read end", take(s, 100));

    // Deleted, kept open by a dup, and its number given to a new connection: the new one starts clean, and what
    // happens to the old one is not reported for it.
    add(set, EPOLL_CTL_DEL, s, 0, 0);
    int kept = dup(s);
    int c2, s2;
    pair(&c2, &s2);
    if (dup2(s2, s) != s) { perror("dup2"); exit(1); }
    close(s2);
    add(set, EPOLL_CTL_ADD, s, EPOLLIN | EPOLLRDHUP, 4);
    close(c);  // the old connection ends
    usleep(50000);
    show("reuse: new connection idle", set, 50);
    put(c2, "new");
    show("reuse: new connection written", set, 1000);
    printf("%-40s %ld\n", "reuse: read", take(s, 100));
    printf("%-40s %ld\n", "reuse: old one ended", take(kept, 100));
    close(kept);
    close(c2);
    close(s);

    // Every connection of the set deleted, and then one's peer goes: the set still holds it in the kernel, and its
    // hang-up is not the application's event.
    int c3, s3;
    pair(&c3, &s3);
    add(set, EPOLL_CTL_ADD, s3, EPOLLIN | EPOLLRDHUP, 6);
    put(c3, "x");
    show("deleted: added and written", set, 1000);
    printf("%-40s %ld\n", "deleted: read", take(s3, 100));
    show("deleted: asleep once, empty", set, 20);
    add(set, EPOLL_CTL_DEL, s3, 0, 0);
    close(c3);
    usleep(50000);
    show("deleted: peer gone, nothing reported", set, 100);
    close(s3);
    close(set);
}

// A registration the application left by closing its descriptor without EPOLL_CTL_DEL (haproxy does), and the
// number given to a new connection after the old one's memory was freed (ten seconds on, at a later close), so
// that the new one's may sit at the old one's address: the new connection is added afresh and reports its data.
// The old registration once looked valid for it, the add failed with EEXIST, and the new connection's data was
// never reported (haproxy's requests waited for their timeout). Run on its own (PRELOAD_EPOLL_CASE=reused).
static void reused_after_free(void) {
    int set = epoll_create1(EPOLL_CLOEXEC);
    int c, s;
    pair(&c, &s);
    add(set, EPOLL_CTL_ADD, s, EPOLLIN | EPOLLRDHUP, 1);
    put(c, "x");
    show("freed: written", set, 1000);
    printf("%-40s %ld\n", "freed: read", take(s, 100));
    // Idle through sleeps, so that the registration stays armed and is not looked at until its writer rings.
    show("freed: asleep once", set, 20);
    show("freed: asleep twice", set, 20);
    show("freed: asleep three times", set, 20);
    int old = s;
    close(s);
    close(c);
    sleep(11);
    pair(&c, &s);  // a later close frees the first pair's memory
    close(s);
    close(c);
    pair(&c, &s);
    printf("%-40s %s\n", "freed: the number given again", s == old ? "yes" : "no");
    add(set, EPOLL_CTL_ADD, s, EPOLLIN | EPOLLRDHUP, 2);
    put(c, "new");
    show("freed: new connection written", set, 1000);
    printf("%-40s %ld\n", "freed: read", take(s, 100));
    close(s);
    close(c);
    close(set);
}

// Threads that wait in one set (timeout 0) while others add connections with data waiting and close them without
// EPOLL_CTL_DEL: a wait that judged a registration valid just before the close must not read the rings after the
// close unmapped them (it crashed: SIGSEGV in 9 of 12 runs of 10 s). PRELOAD_EPOLL_CASE=closers.
static volatile int closers_stop;
static pthread_mutex_t closers_accept = PTHREAD_MUTEX_INITIALIZER;

static void *closers_wait(void *arg) {
    int set = *(int *)arg;
    struct epoll_event events[64];
    while (!closers_stop) (void)epoll_wait(set, events, 64, 0);
    return NULL;
}

static void *closers_close(void *arg) {
    int set = *(int *)arg;
    while (!closers_stop) {
        int c, s;
        pthread_mutex_lock(&closers_accept);
        pair(&c, &s);
        pthread_mutex_unlock(&closers_accept);
        put(c, "x");
        add(set, EPOLL_CTL_ADD, s, EPOLLIN | EPOLLOUT, 1);
        for (volatile int i = 0; i < 20000; i++) {}
        close(s);
        close(c);
    }
    return NULL;
}

static void closers(void) {
    int set = epoll_create1(EPOLL_CLOEXEC);
    pthread_t threads[4];
    for (int i = 0; i < 4; i++) pthread_create(&threads[i], NULL, i < 2 ? closers_wait : closers_close, &set);
    sleep(3);
    closers_stop = 1;
    for (int i = 0; i < 4; i++) pthread_join(threads[i], NULL);
    printf("%-40s %s\n", "closers: waits and closes for 3 s", "survived");
    close(set);
}

// A thread waits in a set (timeout 0) holding a set that holds a connection with data waiting, while the main
// thread forks children that close every descriptor from 3 up and exit, as a subprocess does before exec. A child
// forked while the waiter held a set's lock inherited it held, and its close of the set waited for ever (1 to 6
// children of 20); a fork that took the sets' locks first deadlocked with the waiter (outer, then inner).
// PRELOAD_EPOLL_CASE=fork.
static void *fork_waiter(void *arg) {
    int set = *(int *)arg;
    struct epoll_event events[8];
    for (;;) (void)epoll_wait(set, events, 8, 0);
    return NULL;
}

static void forks_while_waiting(void) {
    int c, s;
    pair(&c, &s);
    int inner = epoll_create1(0), set = epoll_create1(0);  // the waiter's set holds a set holding the connection
    add(inner, EPOLL_CTL_ADD, s, EPOLLIN, 1);
    add(set, EPOLL_CTL_ADD, inner, EPOLLIN, 2);
    put(c, "x");
    pthread_t waiter;
    pthread_create(&waiter, NULL, fork_waiter, &set);
    int ended = 0;
    for (int i = 0; i < 20; i++) {
        usleep(10000);
        pid_t child = fork();
        if (child == 0) {
            close_range(3, ~0u, 0);
            _exit(0);
        }
        int status, done = 0;
        for (int k = 0; k < 500 && !done; k++) {  // 5 s: a child that has not ended by then hangs
            done = waitpid(child, &status, WNOHANG) == child;
            if (!done) usleep(10000);
        }
        if (!done) { kill(child, SIGKILL); waitpid(child, &status, 0); }
        ended += done;
    }
    printf("%-40s %d of 20\n", "fork: children that ended", ended);
}

static void *peek_blocking(void *arg) {
    int fd = *(int *)arg;
    char byte;
    return (void *)(intptr_t)recv(fd, &byte, 1, MSG_PEEK);
}

// An epoll set and a blocking read asleep on one connection at once: under vmsock-run the set listens on the
// connection's data doorbell and the read on its TCP socket, and one write must wake both.
static void two_kinds_asleep(void) {
    int c, s;
    pair(&c, &s);
    int set = epoll_create1(EPOLL_CLOEXEC);
    add(set, EPOLL_CTL_ADD, s, EPOLLIN, 5);
    pthread_t reader, writer;
    pthread_create(&reader, NULL, peek_blocking, &s);
    struct later l = { c, 100, "both", -1, -1 };
    pthread_create(&writer, NULL, write_later, &l);
    show("two kinds asleep: the set woken", set, 5000);
    void *peeked;
    pthread_join(reader, &peeked);
    pthread_join(writer, NULL);
    printf("%-40s %ld\n", "two kinds asleep: the read woken", (long)(intptr_t)peeked);
    printf("%-40s %ld\n", "two kinds asleep: read", take(s, 100));
    close(c);
    close(s);
    close(set);
}

static void mixed(void) {
    int c, s;
    pair(&c, &s);
    int pipes[2];
    if (pipe2(pipes, O_CLOEXEC) != 0) exit(1);
    int event = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    int timer = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    int set = epoll_create1(EPOLL_CLOEXEC);
    add(set, EPOLL_CTL_ADD, s, EPOLLIN | EPOLLRDHUP, 1);
    add(set, EPOLL_CTL_ADD, pipes[0], EPOLLIN, 2);
    add(set, EPOLL_CTL_ADD, event, EPOLLIN, 3);
    add(set, EPOLL_CTL_ADD, timer, EPOLLIN, 4);
    show("mixed: idle", set, 0);
    struct itimerspec in = { .it_value = { 0, 20000000 } };
    timerfd_settime(timer, 0, &in, NULL);
    show("mixed: timer fires", set, 5000);
    uint64_t count;
    (void)!read(timer, &count, sizeof count);
    uint64_t one = 1;
    (void)!write(event, &one, sizeof one);
    put(pipes[1], "p");
    put(c, "conn");
    // All three are ready now; a short wait lets the wake-up of the connection arrive.
    show("mixed: eventfd, pipe, connection", set, 1000);
    (void)!read(event, &count, sizeof count);
    char b;
    (void)!read(pipes[0], &b, 1);
    printf("%-40s %ld\n", "mixed: read", take(s, 100));
    show("mixed: drained", set, 0);

    // A set inside a set.
    int outer = epoll_create1(EPOLL_CLOEXEC);
    add(outer, EPOLL_CTL_ADD, set, EPOLLIN, 9);
    show("nested: idle", outer, 0);
    struct later l = { c, 30, "nest", -1, -1 };
    pthread_t t;
    pthread_create(&t, NULL, write_later, &l);
    show("nested: woken through the inner set", outer, 5000);
    pthread_join(t, NULL);
    show("nested: the inner set says", set, 0);
    printf("%-40s %ld\n", "nested: read", take(s, 100));
    show("nested: inner drained", set, 0);

    // Added while another thread sleeps in the set, data already there.
    int c2, s2;
    pair(&c2, &s2);
    put(c2, "before");
    usleep(20000);
    int lonely = epoll_create1(EPOLL_CLOEXEC);
    struct later l2 = { -1, 50, NULL, lonely, s2 };
    pthread_create(&t, NULL, write_later, &l2);
    show("added while asleep: reported", lonely, 5000);
    pthread_join(t, NULL);
    printf("%-40s %ld\n", "added while asleep: read", take(s2, 100));
    close(lonely);
    close(outer);
    close(set);
    close(c2); close(s2); close(c); close(s);
    close(pipes[0]); close(pipes[1]); close(event); close(timer);
}

// A non-blocking writer that waits for EPOLLOUT (edge-triggered) with a reader in another thread that waits for
// EPOLLIN (edge-triggered): 16 MiB must arrive whole and in order.
struct stream { int fd; uint64_t sum; long total; };

static void *edge_reader(void *arg) {
    struct stream *r = arg;
    int set = epoll_create1(EPOLL_CLOEXEC);
    add(set, EPOLL_CTL_ADD, r->fd, EPOLLIN | EPOLLET | EPOLLRDHUP, 1);
    unsigned char buf[65536];
    for (;;) {
        ssize_t n = read(r->fd, buf, sizeof buf);
        if (n > 0) {
            for (ssize_t i = 0; i < n; i++) r->sum = r->sum * 31 + buf[i];
            r->total += n;
            continue;
        }
        if (n == 0) break;
        if (errno != EAGAIN) { perror("read"); break; }
        struct epoll_event e;
        epoll_wait(set, &e, 1, 5000);
    }
    close(set);
    return NULL;
}

static void transfer(const char *label, int use_poll) {
    int c, s;
    pair(&c, &s);
    fcntl(c, F_SETFL, O_NONBLOCK);
    fcntl(s, F_SETFL, O_NONBLOCK);
    struct stream r = { s, 0, 0 };
    pthread_t t;
    pthread_create(&t, NULL, edge_reader, &r);
    int set = epoll_create1(EPOLL_CLOEXEC);
    add(set, EPOLL_CTL_ADD, c, EPOLLOUT | EPOLLET, 1);
    static unsigned char chunk[100000];
    uint64_t sum = 0;
    long total = 16L << 20, sent = 0;
    while (sent < total) {
        size_t n = total - sent < (long)sizeof chunk ? (size_t)(total - sent) : sizeof chunk;
        for (size_t i = 0; i < n; i++) chunk[i] = (unsigned char)((sent + (long)i) * 7 + 3);
        size_t off = 0;
        while (off < n) {
            ssize_t w = write(c, chunk + off, n - off);
            if (w > 0) { off += (size_t)w; continue; }
            if (errno != EAGAIN) { perror("write"); exit(1); }
            if (use_poll) {
                struct pollfd p = { c, POLLOUT, 0 };
                poll(&p, 1, 5000);
            } else {
                struct epoll_event e;
                epoll_wait(set, &e, 1, 5000);
            }
        }
        for (size_t i = 0; i < n; i++) sum = sum * 31 + chunk[i];
        sent += (long)n;
    }
    shutdown(c, SHUT_WR);
    pthread_join(t, NULL);
    printf("%-40s %ld bytes, %s\n", label, r.total, r.sum == sum && r.total == total ? "intact" : "CORRUPT");
    close(set);
    close(c);
    close(s);
}

// nginx's upstream: a non-blocking socket added to two sets (one holding 400 eventfds, so the kernel's listing
// of it is long) before it connects, edge-triggered in the first. 3 MiB from the peer must arrive through
// EPOLLIN edges, and the second set must see a later write.
static void *send_3mib(void *arg) {
    int fd = *(int *)arg;
    static unsigned char chunk[65536];
    for (long sent = 0; sent < (3L << 20); sent += (long)sizeof chunk) {
        for (size_t i = 0; i < sizeof chunk; i++) chunk[i] = (unsigned char)((sent + (long)i) * 13 + 1);
        size_t off = 0;
        while (off < sizeof chunk) {
            ssize_t w = write(fd, chunk + off, sizeof chunk - off);
            if (w < 0) { perror("write"); exit(1); }
            off += (size_t)w;
        }
    }
    return NULL;
}

static void added_before_connect(void) {
    int first = epoll_create1(EPOLL_CLOEXEC), second = epoll_create1(EPOLL_CLOEXEC);
    int others[400];
    for (int i = 0; i < 400; i++) {
        others[i] = eventfd(0, EFD_CLOEXEC);
        add(first, EPOLL_CTL_ADD, others[i], EPOLLIN, 1000 + (uint64_t)i);
    }
    int c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    add(first, EPOLL_CTL_ADD, c, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, 9);
    add(second, EPOLL_CTL_ADD, c, EPOLLIN, 5);
    int r = connect(c, (struct sockaddr *)&bound, sizeof bound);
    printf("%-40s %s\n", "before connect: connect", r == 0 || errno == EINPROGRESS ? "started" : strerrorname_np(errno));
    int s = accept(listener, NULL, NULL);
    pthread_t t;
    pthread_create(&t, NULL, send_3mib, &s);
    long total = 0;
    int intact = 1;
    unsigned char buf[65536];
    while (total < (3L << 20)) {
        ssize_t n = read(c, buf, sizeof buf);
        if (n > 0) {
            for (ssize_t i = 0; i < n; i++) intact &= buf[i] == (unsigned char)((total + i) * 13 + 1);
            total += n;
            continue;
        }
        if (n == 0 || errno != EAGAIN) break;
        struct epoll_event e[8];
        if (epoll_wait(first, e, 8, 5000) == 0) break;  // an edge lost: the rest never comes
    }
    pthread_join(t, NULL);
    printf("%-40s %ld bytes, %s\n", "before connect: 3 MiB, EPOLLET", total, intact ? "intact" : "CORRUPT");
    show("before connect: second set, idle", second, 0);
    put(s, "ping");
    show("before connect: second set, written", second, 1000);
    printf("%-40s %ld\n", "before connect: read", take(c, 100));
    for (int i = 0; i < 400; i++) close(others[i]);
    close(first);
    close(second);
    close(c);
    close(s);
}

static void polls(void) {
    int c, s;
    pair(&c, &s);
    struct pollfd p = { s, POLLIN, 0 };
    int r = poll(&p, 1, 0);
    printf("%-40s %d %#x\n", "poll: idle", r, p.revents);
    put(c, "hello");
    r = poll(&p, 1, 1000);
    printf("%-40s %d %#x\n", "poll: written", r, p.revents);
    printf("%-40s %ld\n", "poll: read", take(s, 100));
    r = poll(&p, 1, 0);
    printf("%-40s %d %#x\n", "poll: drained", r, p.revents);
    struct later l = { c, 30, "late", -1, -1 };
    pthread_t t;
    pthread_create(&t, NULL, write_later, &l);
    fd_set readers;
    FD_ZERO(&readers);
    FD_SET(s, &readers);
    struct timeval tv = { 5, 0 };
    int n = select(s + 1, &readers, NULL, NULL, &tv);
    printf("%-40s %d %d\n", "select: woken by a write", n, FD_ISSET(s, &readers) != 0);
    pthread_join(t, NULL);
    printf("%-40s %ld\n", "select: read", take(s, 100));
    FD_ZERO(&readers);
    FD_SET(s, &readers);
    tv = (struct timeval){ 0, 0 };
    printf("%-40s %d\n", "select: drained", select(s + 1, &readers, NULL, NULL, &tv));
    close(c);
    r = poll(&p, 1, 1000);
    printf("%-40s %d %#x\n", "poll: peer closed", r, p.revents & (POLLIN | POLLHUP | POLLERR));
    printf("%-40s %ld\n", "poll: read end", take(s, 100));
    close(s);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    listener = socket(AF_INET, SOCK_STREAM, 0);
    bound = (struct sockaddr_in){ .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t length = sizeof bound;
    if (bind(listener, (struct sockaddr *)&bound, sizeof bound) != 0 || listen(listener, 16) != 0 ||
        getsockname(listener, (struct sockaddr *)&bound, &length) != 0) {
        perror("listen");
        return 1;
    }
    const char *only = getenv("PRELOAD_EPOLL_CASE");
    if (only) {
        if (strcmp(only, "reused") == 0) reused_after_free();
        if (strcmp(only, "closers") == 0) closers();
        if (strcmp(only, "fork") == 0) forks_while_waiting();
        printf("done\n");
        fflush(stdout);
        _exit(0);  // (the fork case's waiter never returns)
    }
    levels();
    deleted_and_added();
    two_kinds_asleep();
    mixed();
    polls();
    added_before_connect();
    transfer("transfer: epoll EPOLLOUT|EPOLLET", 0);
    transfer("transfer: poll POLLOUT", 1);
    printf("done\n");
    return 0;
}
