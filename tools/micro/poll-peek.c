// A poll that watches an idle connection and a pipe: round trips through two pipes to a forked child, while the
// poll also waits on a connection to PORT that never becomes readable. Under vmsock-run (that connection over
// shared memory) this measures how long the poll's spin on the rings holds back the pipe's event
// (tools/bench-poll-peek.sh). Usage: poll-peek PORT ROUNDS
#include <arpa/inet.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int compare(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: poll-peek PORT ROUNDS\n"); return 2; }
    int port = atoi(argv[1]), rounds = atoi(argv[2]);
    if (rounds < 1) { fprintf(stderr, "poll-peek: ROUNDS must be at least 1\n"); return 2; }
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons((unsigned short)port) };
    inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    if (connect(s, (struct sockaddr *)&to, sizeof to) != 0) { perror("poll-peek: connect"); return 1; }
    int go[2], back[2];
    if (pipe(go) || pipe(back)) { perror("poll-peek: pipe"); return 1; }
    if (fork() == 0) {  // the echo: one byte back for each byte
        close(s);
        close(go[1]);
        close(back[0]);
        char c;
        while (read(go[0], &c, 1) == 1) {
            if (write(back[1], &c, 1) != 1) break;
        }
        _exit(0);
    }
    close(go[0]);
    close(back[1]);
    long long *times = malloc((size_t)rounds * sizeof *times);
    for (int i = 0; i < rounds; i++) {
        long long start = now_ns();
        char c = 'x';
        if (write(go[1], &c, 1) != 1) { perror("poll-peek: write"); return 1; }
        struct pollfd p[2] = { { s, POLLIN, 0 }, { back[0], POLLIN, 0 } };
        do {
            if (poll(p, 2, -1) < 0) { perror("poll-peek: poll"); return 1; }
            if (p[0].revents) { fprintf(stderr, "poll-peek: the idle connection became ready (0x%x)\n", p[0].revents); return 1; }
        } while (!p[1].revents);
        if (read(back[0], &c, 1) != 1) { perror("poll-peek: read"); return 1; }
        times[i] = now_ns() - start;
    }
    qsort(times, (size_t)rounds, sizeof *times, compare);
    printf("median %.1f us, p90 %.1f us\n", times[rounds / 2] / 1e3, times[rounds * 9 / 10] / 1e3);
    close(go[1]);
    return 0;
}
