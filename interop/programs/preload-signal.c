// Signal handlers that run while a wait spins on the rings (issue 19): the wait must end with EINTR as the
// kernel's would (poll, select and epoll always; recv unless the handler has SA_RESTART, which restarts it), and
// sigaction must report the handlers the program set. Prints one line per check, never timings.
// interop/preload-signal.test.sh runs it with and without vmsock-run (with a spin budget of seconds, so that
// the signal lands in the spin) and requires the same output.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static volatile sig_atomic_t handled;
static void on_alarm(int sig) { (void)sig; handled++; }
static void on_alarm_info(int sig, siginfo_t *info, void *context) { (void)info; (void)context; (void)sig; handled++; }

static void install(int flags) {
    struct sigaction act;
    memset(&act, 0, sizeof act);
    if (flags & SA_SIGINFO) act.sa_sigaction = on_alarm_info; else act.sa_handler = on_alarm;
    act.sa_flags = flags;
    sigemptyset(&act.sa_mask);
    if (sigaction(SIGALRM, &act, NULL) != 0) { perror("sigaction"); exit(1); }
}

static const char *outcome(long result) {
    static char text[64];
    if (result < 0) snprintf(text, sizeof text, "-1 %s", strerrorname_np(errno));
    else snprintf(text, sizeof text, "%ld", result);
    return text;
}

// SIGALRM in 250 ms, while the call below waits (a spin of seconds under the test's VMSOCK_SPIN_US).
static void arm_alarm(void) {
    handled = 0;
    ualarm(250000, 0);
}

struct later { int fd; int delay_ms; };
static void *send_later(void *arg) {
    struct later *l = arg;
    usleep((useconds_t)l->delay_ms * 1000);
    if (write(l->fd, "x", 1) != 1) perror("write");
    return NULL;
}

// Takes SIGALRM on this thread (both block it; sigsuspend lets it in here only), then sends a byte to `*arg`
// 50 ms later.
static void *take_alarm(void *arg) {
    sigset_t none;
    sigemptyset(&none);
    sigsuspend(&none);
    usleep(50000);
    if (write(*(int *)arg, "y", 1) != 1) perror("write");
    return NULL;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in bound = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t length = sizeof bound;
    if (bind(listener, (struct sockaddr *)&bound, sizeof bound) != 0 || listen(listener, 8) != 0 ||
        getsockname(listener, (struct sockaddr *)&bound, &length) != 0) { perror("listen"); return 1; }
    int client = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(client, (struct sockaddr *)&bound, sizeof bound) != 0) { perror("connect"); return 1; }
    int server = accept(listener, NULL, NULL);
    if (server < 0) { perror("accept"); return 1; }
    // A round trip first, so that every wait below has a live, idle connection.
    char byte;
    if (write(client, "h", 1) != 1 || read(server, &byte, 1) != 1) { perror("hello"); return 1; }

    for (int restart = 0; restart <= 1; restart++) {
        install(restart ? SA_RESTART : 0);
        const char *how = restart ? "SA_RESTART" : "no SA_RESTART";
        struct pollfd p = { .fd = server, .events = POLLIN };
        arm_alarm();
        long got = poll(&p, 1, -1);
        printf("%s: poll: %s, handler ran %d\n", how, outcome(got), handled);

        int set = epoll_create1(0);
        struct epoll_event e = { .events = EPOLLIN, .data.u32 = 1 }, out[4];
        epoll_ctl(set, EPOLL_CTL_ADD, server, &e);
        arm_alarm();
        got = epoll_wait(set, out, 4, -1);
        printf("%s: epoll_wait: %s, handler ran %d\n", how, outcome(got), handled);
        close(set);

        fd_set readable;
        FD_ZERO(&readable);
        FD_SET(server, &readable);
        arm_alarm();
        got = select(server + 1, &readable, NULL, NULL, NULL);
        printf("%s: select: %s, handler ran %d\n", how, outcome(got), handled);

        // recv: EINTR without SA_RESTART; with it, the wait goes on until the byte sent 700 ms later.
        pthread_t thread;
        struct later l = { client, 700 };
        if (restart) pthread_create(&thread, NULL, send_later, &l);
        arm_alarm();
        got = recv(server, &byte, 1, 0);
        printf("%s: recv: %s, handler ran %d\n", how, outcome(got), handled);
        if (restart) pthread_join(thread, NULL);
    }

    // A socket with SO_RCVTIMEO: even a handler with SA_RESTART ends recv with EINTR (signal(7)).
    install(SA_RESTART);
    struct timeval five = { 5, 0 };
    setsockopt(server, SOL_SOCKET, SO_RCVTIMEO, &five, sizeof five);
    arm_alarm();
    long timed = recv(server, &byte, 1, 0);
    printf("SA_RESTART, SO_RCVTIMEO: recv: %s, handler ran %d\n", outcome(timed), handled);
    struct timeval none = { 0, 0 };
    setsockopt(server, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof none);

    // A handler that runs on another thread does not end this thread's wait: this thread blocks SIGALRM, the
    // other takes it, then sends a byte that ends the wait.
    install(0);
    sigset_t alarm_only;
    sigemptyset(&alarm_only);
    sigaddset(&alarm_only, SIGALRM);
    pthread_sigmask(SIG_BLOCK, &alarm_only, NULL);
    pthread_t taker;
    pthread_create(&taker, NULL, take_alarm, &client);
    arm_alarm();
    struct pollfd q = { .fd = server, .events = POLLIN };
    long other = poll(&q, 1, -1);
    pthread_join(taker, NULL);
    printf("handler on another thread: poll: %s, handler ran %d\n", outcome(other), handled);
    if (other == 1 && read(server, &byte, 1) != 1) perror("read");
    pthread_sigmask(SIG_UNBLOCK, &alarm_only, NULL);

    // sysv_signal: the handler runs once (SA_RESETHAND), and the wait ends with EINTR.
    sysv_signal(SIGALRM, on_alarm);
    struct pollfd r = { .fd = server, .events = POLLIN };
    arm_alarm();
    long once = poll(&r, 1, -1);
    struct sigaction after;
    sigaction(SIGALRM, NULL, &after);
    printf("sysv_signal: poll: %s, handler ran %d, then %s\n", outcome(once), handled,
           after.sa_handler == SIG_DFL ? "SIG_DFL" : "still a handler");

    // What sigaction reports is what the program set.
    struct sigaction now;
    install(SA_SIGINFO | SA_RESTART);
    sigaction(SIGALRM, NULL, &now);
    printf("query after SA_SIGINFO|SA_RESTART: handler %s, SA_SIGINFO %d, SA_RESTART %d\n",
           now.sa_sigaction == on_alarm_info ? "the program's" : "another", !!(now.sa_flags & SA_SIGINFO),
           !!(now.sa_flags & SA_RESTART));
    install(0);
    sigaction(SIGALRM, NULL, &now);
    printf("query after 0: handler %s, SA_SIGINFO %d, SA_RESTART %d\n",
           now.sa_handler == on_alarm ? "the program's" : "another", !!(now.sa_flags & SA_SIGINFO),
           !!(now.sa_flags & SA_RESTART));
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"  // still in programs that vmsock-run must serve
    siginterrupt(SIGALRM, 0);
#pragma GCC diagnostic pop
    sigaction(SIGALRM, NULL, &now);
    printf("query after siginterrupt(0): handler %s, SA_RESTART %d\n",
           now.sa_handler == on_alarm ? "the program's" : "another", !!(now.sa_flags & SA_RESTART));
    sighandler_t previous = signal(SIGALRM, SIG_IGN);
    printf("signal(SIG_IGN) returned %s\n", previous == on_alarm ? "the program's handler" : "another");
    previous = signal(SIGALRM, on_alarm);
    printf("signal(handler) returned %s\n", previous == SIG_IGN ? "SIG_IGN" : "another");
    sigaction(SIGALRM, NULL, &now);
    printf("query after signal(handler): handler %s, SA_RESTART %d\n",
           now.sa_handler == on_alarm ? "the program's" : "another", !!(now.sa_flags & SA_RESTART));

    // sigset(3) and sigignore(3), System V: a handler without SA_RESTART ends the wait with EINTR; SIG_HOLD
    // blocks the signal and reports what was there; sigignore's SIG_IGN is what sigaction reports after it.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    previous = sigset(SIGALRM, on_alarm);
    printf("sigset(handler) returned %s\n", previous == on_alarm ? "the program's handler" : "another");
    arm_alarm();
    long held_poll = poll(&r, 1, -1);
    printf("sigset: poll: %s, handler ran %d\n", outcome(held_poll), handled);
    previous = sigset(SIGALRM, SIG_HOLD);
    printf("sigset(SIG_HOLD) returned %s\n", previous == on_alarm ? "the program's handler" : "another");
    previous = sigset(SIGALRM, SIG_HOLD);
    printf("sigset(SIG_HOLD) again returned %s\n", previous == SIG_HOLD ? "SIG_HOLD" : "another");
    previous = sigset(SIGALRM, on_alarm);
    printf("sigset(handler) while held returned %s\n", previous == SIG_HOLD ? "SIG_HOLD" : "another");
    sigignore(SIGALRM);
#pragma GCC diagnostic pop
    sigaction(SIGALRM, NULL, &now);
    printf("query after sigignore: %s\n", now.sa_handler == SIG_IGN ? "SIG_IGN" : "another");
    printf("done\n");
    return 0;
}
