// fork, exec and posix_spawn with connections open: what each process observes, one line per check, never
// addresses, pids or timings. interop/preload-fork.test.sh runs it with and without vmsock-run and requires the
// same output. `preload-fork exec-child FD` is the program the exec checks run; `preload-fork torn-fork PORT`,
// run under vmsock-run only, forks while another thread is inside the library's set-up.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#include "observe.h"

static int listener;
static struct sockaddr_in bound;

// Close-on-exec: a listener a new image inherits stops its owner's welcomes (listener_handed_on below).
static int listen_local(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 64) != 0) { perror("listen"); exit(2); }
    socklen_t length = sizeof bound;
    getsockname(fd, (struct sockaddr *)&bound, &length);
    return fd;
}

static int connect_local(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fd, (struct sockaddr *)&bound, sizeof bound) != 0) { perror("connect"); exit(2); }
    return fd;
}

static void pair(int *client, int *server) {
    *client = connect_local();
    *server = accept(listener, NULL, NULL);
}

// Reads exactly n bytes (fewer at end of stream); returns what it got, or -1.
static long read_full(int fd, void *buffer, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)buffer + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return got ? (long)got : -1;
        if (r == 0) break;
        got += (size_t)r;
    }
    return (long)got;
}

static long write_full(int fd, const void *buffer, size_t n) {
    size_t done = 0;
    while (done < n) {
        ssize_t w = send(fd, (const char *)buffer + done, n - done, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return -1;
        done += (size_t)w;
    }
    return (long)done;
}

static uint8_t pattern(uint64_t i, int seed) { return (uint8_t)(i * 131 + seed + (i >> 11)); }

// Sends `total` pattern bytes in uneven pieces; returns 0 when all went.
static int send_pattern(int fd, size_t total, int seed) {
    static uint8_t chunk[70001];
    for (size_t at = 0; at < total;) {
        size_t n = total - at < sizeof chunk ? total - at : 1 + (at * 7919) % sizeof chunk;
        if (n > total - at) n = total - at;
        for (size_t i = 0; i < n; i++) chunk[i] = pattern(at + i, seed);
        if (write_full(fd, chunk, n) != (long)n) return -1;
        at += n;
    }
    return 0;
}

// Receives `total` bytes and checks them against the pattern: 0, or -1 at the first wrong or missing byte.
static int receive_pattern(int fd, size_t total, int seed) {
    static uint8_t chunk[65536];
    for (size_t at = 0; at < total;) {
        ssize_t n = read(fd, chunk, total - at < sizeof chunk ? total - at : sizeof chunk);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        for (ssize_t i = 0; i < n; i++) if (chunk[i] != pattern(at + (size_t)i, seed)) return -1;
        at += (size_t)n;
    }
    return 0;
}

static int child_status(pid_t pid) {
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int readable(int fd, int timeout) {
    struct pollfd p = { fd, POLLIN, 0 };
    return poll(&p, 1, timeout) == 1 && (p.revents & POLLIN);
}

// After fork, each process keeps one end: 3 MiB each way (the ring wraps), then the child's close ends the
// stream for the parent.
static void both_processes(int c, int s) {
    pid_t pid = fork();
    if (pid == 0) {
        close(s);
        int ok = send_pattern(c, 3 << 20, 1) == 0 && receive_pattern(c, 3 << 20, 2) == 0;
        close(c);
        _exit(ok ? 0 : 1);
    }
    close(c);
    int received = receive_pattern(s, 3 << 20, 1);
    int sent = send_pattern(s, 3 << 20, 2);
    SHOW("fork: parent sent 3 MiB", "%d", sent);
    SHOW("fork: parent received the child's 3 MiB", "%d", received);
    SHOW("fork: child exit status", "%d", child_status(pid));
    char byte;
    CHECK("fork: parent reads after the child closed", read(s, &byte, 1));
    close(s);
}

// The child closes both ends and exits: the parent's connection goes on.
static void close_in_child(int c, int s) {
    pid_t pid = fork();
    if (pid == 0) { close(c); close(s); _exit(0); }
    SHOW("close in child: exit status", "%d", child_status(pid));
    CHECK("close in child: parent writes", write(c, "hello", 5));
    char text[8] = "";
    CHECK("close in child: parent reads", read_full(s, text, 5));
    SHOW("close in child: bytes", "%s", text);
    CHECK("close in child: parent writes back", write(s, "world", 5));
    CHECK("close in child: parent reads back", read_full(c, text, 5));
    SHOW("close in child: bytes back", "%s", text);
    close(c);
    CHECK("close in child: end of stream after the parent's close", read(s, text, 1));
    close(s);
}

// shutdown is not counted per process: the child's ends the stream for the parent too.
static void shutdown_in_child(int c, int s) {
    CHECK("shutdown in child: parent writes first", write(c, "abc", 3));
    pid_t pid = fork();
    if (pid == 0) { shutdown(c, SHUT_WR); _exit(0); }
    SHOW("shutdown in child: exit status", "%d", child_status(pid));
    char text[8] = "";
    CHECK("shutdown in child: parent reads the bytes before", read_full(s, text, 8));
    SHOW("shutdown in child: bytes", "%s", text);
    CHECK("shutdown in child: then end of stream", read(s, text, 1));
    CHECK("shutdown in child: the other way still works", write(s, "xyz", 3));
    CHECK("shutdown in child: read it", read_full(c, text, 3));
    close(c);
    close(s);
}

// A child that exits without closing (redis BGSAVE: _exit) changes nothing; the parent's close ends the stream
// with FIN (a read returns 0, not ECONNRESET).
static void exit_without_close(int c, int s) {
    pid_t pid = fork();
    if (pid == 0) _exit(0);
    SHOW("_exit in child: exit status", "%d", child_status(pid));
    CHECK("_exit in child: parent writes", write(c, "hello", 5));
    char text[8] = "";
    CHECK("_exit in child: parent reads", read_full(s, text, 5));
    CHECK("_exit in child: readable after the read", readable(s, 0));
    close(c);
    CHECK("_exit in child: readable after the close", readable(s, 2000));
    CHECK("_exit in child: end of stream", read(s, text, 1));
    close(s);
}

// nginx's shape: the parent listens, a forked child accepts (the parent's listener thread answered the hello).
static void accept_in_child(void) {
    pid_t pid = fork();
    if (pid == 0) {
        int s = accept(listener, NULL, NULL);
        char text[8] = "";
        int ok = read_full(s, text, 5) == 5 && memcmp(text, "hello", 5) == 0 && write(s, "world", 5) == 5 &&
                 send_pattern(s, 2 << 20, 3) == 0 && receive_pattern(s, 1 << 20, 4) == 0;
        close(s);
        _exit(ok ? 0 : 1);
    }
    int c = connect_local();
    char text[8] = "";
    CHECK("accept in child: parent writes", write(c, "hello", 5));
    CHECK("accept in child: parent reads the answer", read_full(c, text, 5));
    SHOW("accept in child: bytes", "%s", text);
    SHOW("accept in child: 2 MiB from the child", "%d", receive_pattern(c, 2 << 20, 3));
    SHOW("accept in child: 1 MiB to the child", "%d", send_pattern(c, 1 << 20, 4));
    CHECK("accept in child: end of stream", read(c, text, 1));
    SHOW("accept in child: exit status", "%d", child_status(pid));
    close(c);
}

// A prefork server's worker (nginx proxying, a gunicorn worker reaching its database): a forked child connects
// on its own, to a listener of its parent's here, and the two talk both ways (under vmsock-run over shared
// memory).
// A forked process's side of its own connection to the listener: hello, world, then `sent` bytes of pattern
// `seed` out and `received` of pattern `seed + 1` in. Exits 0 when all of it went as it should.
static void talk_as_child(size_t sent, size_t received, int seed) {
    int c = connect_local();
    char text[8] = "";
    int ok = write(c, "hello", 5) == 5 && read_full(c, text, 5) == 5 && memcmp(text, "world", 5) == 0 &&
             (sent == 0 || send_pattern(c, sent, seed) == 0) &&
             (received == 0 || receive_pattern(c, received, seed + 1) == 0);
    close(c);
    _exit(ok ? 0 : 1);
}

static void connect_in_child(void) {
    pid_t pid = fork();
    if (pid == 0) talk_as_child(2 << 20, 1 << 20, 5);
    int s = accept(listener, NULL, NULL);
    char text[8] = "";
    CHECK("connect in child: parent reads", read_full(s, text, 5));
    SHOW("connect in child: bytes", "%s", text);
    CHECK("connect in child: parent answers", write(s, "world", 5));
    SHOW("connect in child: 2 MiB from the child", "%d", receive_pattern(s, 2 << 20, 5));
    SHOW("connect in child: 1 MiB to the child", "%d", send_pattern(s, 1 << 20, 6));
    CHECK("connect in child: end of stream", read(s, text, 1));
    SHOW("connect in child: exit status", "%d", child_status(pid));
    close(s);
}

// A worker's worker: a child forks again, and the grandchild connects (under vmsock-run over shared memory too:
// its copy of the set-up is whole when its parent's was).
static void connect_in_grandchild(void) {
    pid_t pid = fork();
    if (pid == 0) {
        pid_t grandchild = fork();
        if (grandchild == 0) talk_as_child(1 << 20, 0, 7);
        _exit(child_status(grandchild));
    }
    int s = accept(listener, NULL, NULL);
    char text[8] = "";
    CHECK("connect in grandchild: parent reads", read_full(s, text, 5));
    SHOW("connect in grandchild: bytes", "%s", text);
    CHECK("connect in grandchild: parent answers", write(s, "world", 5));
    SHOW("connect in grandchild: 1 MiB from it", "%d", receive_pattern(s, 1 << 20, 7));
    CHECK("connect in grandchild: end of stream", read(s, text, 1));
    SHOW("connect in grandchild: exit status", "%d", child_status(pid));
    close(s);
}

// After the forks, the parent's own accepts still work.
static void accept_after_fork(void) {
    int c, s;
    pair(&c, &s);
    char text[8] = "";
    CHECK("accept after fork: write", write(c, "again", 5));
    CHECK("accept after fork: read", read_full(s, text, 5));
    SHOW("accept after fork: bytes", "%s", text);
    close(c);
    CHECK("accept after fork: end of stream", read(s, text, 1));
    close(s);
}

// The program the vfork and close-on-exec cases run: reads what is there on the inherited descriptor. Over TCP
// that is the data; under vmsock-run, through a relay, the data too, unless no relay could be made (the
// close-on-exec case): then the connection has ended for the new image. Never anything else (a wake-up byte as
// data). `closed_too`: an unconnected socket in its place passes as well (an image that inherited a full table
// has no room for a socket whose peer is gone).
static int exec_child(int fd, int closed_too) {
    char text[64];
    struct pollfd p = { fd, POLLIN, 0 };
    long n = poll(&p, 1, 2000) == 1 ? read(fd, text, sizeof text) : -2;
    int sane = n == 0 || (n == 5 && memcmp(text, "hello", 5) == 0) || (closed_too && n == -1 && errno == EINVAL);
    printf("%-48s %s\n", "exec child: data or end of stream, nothing else", sane ? "yes" : "no");
    fflush(stdout);
    return sane ? 0 : 1;
}

static char self_path[4096];

// The parent keeps using the connection after a child exec'd with the socket inherited.
static void after_exec(const char *label, int c, int s, pid_t pid) {
    char text[64];
    SHOW(label, "%d", child_status(pid));
    CHECK("exec: parent writes the other way", write(s, "back", 4));
    CHECK("exec: parent reads it", read_full(c, text, 4));
}

// The exec'd program that answers: reads "hello" on the inherited descriptor and writes "olleh" back. Under
// vmsock-run the exec wrapper hands the connection to a relay, and the new image's descriptor carries the data.
static int exec_answer(int fd) {
    char text[8] = "";
    long n = read_full(fd, text, 5);
    int sane = n == 5 && memcmp(text, "hello", 5) == 0 && write_full(fd, "olleh", 5) == 5;
    printf("%-48s %s\n", "exec child: read hello, answered", sane ? "yes" : "no");
    fflush(stdout);
    return sane ? 0 : 1;
}

// The child gets the socket as its standard input; the parent keeps its copy and reads nothing while the child
// runs, as Python's subprocess does.
static void exec_inherited(void) {
    int c, s;
    pair(&c, &s);
    CHECK("exec: parent writes", write(c, "hello", 5));
    pid_t pid = fork();
    if (pid == 0) {
        dup2(s, 0);
        execl(self_path, self_path, "exec-answer", "0", (char *)NULL);
        _exit(127);
    }
    char text[8] = "";
    long n = read_full(c, text, 5);
    int status = child_status(pid);  // printed after the child's own line
    SHOW("exec: the parent's client read the answer", "%s", n == 5 ? text : "(nothing)");
    SHOW("exec: child exit status", "%d", status);
    CHECK("exec: parent writes the other way", write(s, "back", 4));
    CHECK("exec: parent reads it", read_full(c, text, 4));
    close(s);
    CHECK("exec: then end of stream", read(c, text, 1));
    close(c);
}

// A child that execs with a connection it does not use (the socket leaked into a helper): the parent keeps
// reading and writing it, and nothing of it goes astray. Under vmsock-run the relay reads nothing while the
// parent holds the connection.
static void exec_leaked(void) {
    int c, s;
    pair(&c, &s);
    int ready[2];
    if (pipe(ready) != 0) { perror("pipe"); exit(2); }
    pid_t pid = fork();
    if (pid == 0) {
        close(ready[1]);
        char fd_text[16];
        snprintf(fd_text, sizeof fd_text, "%d", ready[0]);
        execl(self_path, self_path, "wait-for-end", fd_text, (char *)NULL);
        _exit(127);
    }
    close(ready[0]);
    char text[8] = "";
    CHECK("leaked: write after the exec", write(c, "hello", 5));
    CHECK("leaked: the parent reads it", read_full(s, text, 5));
    CHECK("leaked: and writes back", write(s, "olleh", 5));
    CHECK("leaked: the client reads it", read_full(c, text, 5));
    close(ready[1]);
    SHOW("leaked: child exit status", "%d", child_status(pid));
    close(s);
    CHECK("leaked: end of stream once the parent closes", read(c, text, 1));
    close(c);
}

// The helper of exec_leaked: waits for the end of the pipe, reading nothing else.
static int wait_for_end(int fd) {
    char byte;
    while (read(fd, &byte, 1) > 0) {}
    return 0;
}

// An inetd-like service: standard input and output are the connection. Echoes until end of stream.
static int inetd_service(void) {
    static char buffer[65536];
    ssize_t n;
    while ((n = read(0, buffer, sizeof buffer)) > 0) {
        if (write_full(1, buffer, (size_t)n) != n) return 1;
    }
    return n == 0 ? 0 : 2;
}

// inetd's way: the accepted socket moved to standard input and output in a forked child, which execs the
// service; the parent closes its copy at once. 4 MiB go through the service and back, with end of stream each
// way (the writer shuts its side down, the service's exit ends the other).
static void inetd_exec(void) {
    int c, s;
    pair(&c, &s);
    pid_t service = fork();
    if (service == 0) {
        dup2(s, 0);
        dup2(s, 1);
        close(s);
        close(c);
        execl(self_path, self_path, "inetd-service", (char *)NULL);
        _exit(127);
    }
    close(s);
    enum { total = 4 << 20 };
    pid_t writer = fork();
    if (writer == 0) _exit(send_pattern(c, total, 9) == 0 && shutdown(c, SHUT_WR) == 0 ? 0 : 1);
    SHOW("inetd: 4 MiB echoed in order", "%s", receive_pattern(c, total, 9) == 0 ? "yes" : "no");
    char byte;
    CHECK("inetd: then end of stream", read(c, &byte, 1));
    SHOW("inetd: writer exit status", "%d", child_status(writer));
    SHOW("inetd: service exit status", "%d", child_status(service));
    close(c);
}

// In a child (of vfork or a raw clone): `s` becomes standard input, then this program runs as exec-child.
static void exec_child_on_stdin_as(int s, char *mode) {
    char *argv[] = { self_path, mode, "0", NULL };
    dup2(s, 0);
    execve(self_path, argv, environ);
    _exit(127);
}

static void exec_child_on_stdin(int s) { exec_child_on_stdin_as(s, "exec-child"); }

static void vfork_exec(void) {
    int c, s;
    pair(&c, &s);
    CHECK("vfork: parent writes", write(c, "hello", 5));
    pid_t pid = vfork();
    if (pid == 0) exec_child_on_stdin(s);
    after_exec("vfork: child exit status", c, s, pid);
    close(c);
    close(s);
}

// A raw clone made as a fork (no fork handlers run: as some runtimes and sandboxes make one), then exec with the
// socket as standard input. Over TCP the new image reads the data. Under vmsock-run no relay is made (the library
// cannot tell such a child from one that shares its parent's memory), so the connection ends for the new image:
// it reads end of stream, never a wake-up byte as data. The parent keeps its connection.
static void raw_clone_exec(void) {
    int c, s;
    pair(&c, &s);
    CHECK("raw clone: parent writes", write(c, "hello", 5));
    fflush(stdout);
    pid_t pid = (pid_t)syscall(SYS_clone, SIGCHLD, NULL, NULL, NULL, 0);
    if (pid == 0) exec_child_on_stdin(s);
    after_exec("raw clone: child exit status", c, s, pid);
    close(c);
    close(s);
}

// exec with only `spare` descriptors free, the rest taken by close-on-exec copies of /dev/null: under vmsock-run
// the relay cannot start, failing at each of its steps in turn as `spare` grows (keeping a copy of the socket,
// its TCP pair, its start pair, the ended socket put in its place), until it starts. The new image reads the data
// or end of stream, never a wake-up byte, and never waits for good; the parent keeps its connection (a process
// short of descriptors took its fellow holders for gone, and ended it for them). Last, copies that are not
// close-on-exec: the new image inherits a full table, and its descriptor may be closed for it instead.
static void exec_short_of_descriptors(void) {
    for (int spare = 0; spare <= 9; spare++) {
        int inherit = spare == 9;
        int c, s;
        pair(&c, &s);
        CHECK("short of descriptors: parent writes", write(c, "hello", 5));
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            dup2(s, 0);
            struct rlimit limit = { 64, 64 };
            setrlimit(RLIMIT_NOFILE, &limit);
            int last = -1, fd;
            while ((fd = open("/dev/null", O_RDONLY | (inherit ? 0 : O_CLOEXEC))) >= 0) last = fd;
            for (int i = 0; i < spare && !inherit && last - i > 2; i++) close(last - i);
            exec_child_on_stdin_as(0, inherit ? "exec-child-or-closed" : "exec-child");
        }
        after_exec("short of descriptors: child exit status", c, s, pid);
        close(c);
        close(s);
    }
}

// Spawns `program` (a build of this program; with `search`, a name posix_spawnp looks for along PATH) in MODE
// with `s` moved to its standard input by a file action, in environment `envp`: posix_spawn's result.
static int spawn_on_stdin_with(const char *program, int search, int s, const char *mode, pid_t *pid,
                               char *const envp[]) {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, s, 0);
    char *argv[] = { (char *)program, (char *)mode, "0", NULL };
    int spawned = search ? posix_spawnp(pid, program, &actions, NULL, argv, envp)
                         : posix_spawn(pid, program, &actions, NULL, argv, envp);
    posix_spawn_file_actions_destroy(&actions);
    return spawned;
}

static int spawn_on_stdin(int s, const char *mode, pid_t *pid) {
    return spawn_on_stdin_with(self_path, 0, s, mode, pid, environ);
}

// posix_spawn with the socket moved to the child's standard input by a file action, the parent's copy closed at
// once (as inetd does): the spawned program reads "hello" there and answers.
static void spawn_inherited(void) {
    int c, s;
    pair(&c, &s);
    CHECK("posix_spawn: parent writes", write(c, "hello", 5));
    pid_t pid;
    int spawned = spawn_on_stdin(s, "exec-answer", &pid);
    close(s);
    char text[8] = "";
    long n = read_full(c, text, 5);
    // Printed once the child has printed its line: the two processes share standard output.
    int status = spawned == 0 ? child_status(pid) : -1;
    SHOW("posix_spawn: spawned", "%s", spawned == 0 ? "0" : strerrorname_np(spawned));
    SHOW("posix_spawn: the parent's client read the answer", "%s", n == 5 ? text : "(nothing)");
    SHOW("posix_spawn: child exit status", "%d", status);
    CHECK("posix_spawn: then end of stream", read(c, text, 1));
    close(c);
}

// posix_spawn with a close-on-exec socket copied to the child's standard input by a file action (the usual way to
// hand a socket to a child's standard input with posix_spawn): the copy is not close-on-exec, so the spawned
// program has the connection, reads "hello" there and answers. Under vmsock-run it gets a relay, as for an
// inherited socket. The parent keeps its copy and uses it once the child is done.
static void spawn_cloexec(void) {
    int c, s;
    pair(&c, &s);
    fcntl(s, F_SETFD, FD_CLOEXEC);
    CHECK("posix_spawn close-on-exec: parent writes", write(c, "hello", 5));
    pid_t pid;
    int spawned = spawn_on_stdin(s, "exec-answer", &pid);
    char text[8] = "";
    long n = read_full(c, text, 5);
    int status = spawned == 0 ? child_status(pid) : -1;
    SHOW("posix_spawn close-on-exec: the parent's client read the answer", "%s", n == 5 ? text : "(nothing)");
    SHOW("posix_spawn close-on-exec: child exit status", "%d", status);
    CHECK("posix_spawn close-on-exec: parent writes back", write(s, "back", 4));
    CHECK("posix_spawn close-on-exec: parent reads it", read_full(c, text, 4));
    close(c);
    close(s);
}

// posix_spawn with file actions that do not name the connection (standard input from /dev/null), which the
// program merely leaks (not close-on-exec) into a child that never reads it. Bytes the peer sends while the child
// runs are the parent's to read after, as over TCP. Under vmsock-run the child gets a relay, which must leave them
// in the ring: read for the child, they would be gone with it.
static void spawn_leaked(void) {
    int c, s;
    pair(&c, &s);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    char *argv[] = { "sleep", "1", NULL };
    pid_t pid;
    int spawned = posix_spawn(&pid, "/bin/sleep", &actions, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    CHECK("posix_spawn, a leaked socket: the peer writes", write(c, "hello", 5));
    int status = spawned == 0 ? child_status(pid) : -1;
    char text[8] = "";
    long n = readable(s, 2000) ? read_full(s, text, 5) : -2;
    SHOW("posix_spawn, a leaked socket: child exit status", "%d", status);
    SHOW("posix_spawn, a leaked socket: the parent read", "%s", n == 5 ? text : "(nothing)");
    close(c);
    close(s);
}

// The same spawn, with the connection passed on purpose by its number: the program cleared its close-on-exec
// flag itself (as Python's subprocess does for pass_fds), and the child reads "hello" there and answers while the
// parent keeps its copy and waits for the child. Under vmsock-run the relay reads for the child.
static void spawn_passed(void) {
    int c, s;
    pair(&c, &s);
    fcntl(s, F_SETFD, FD_CLOEXEC);
    fcntl(s, F_SETFD, 0);
    CHECK("posix_spawn, a passed socket: parent writes", write(c, "hello", 5));
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    char number[16];
    snprintf(number, sizeof number, "%d", s);
    char *argv[] = { self_path, "exec-answer", number, NULL };
    pid_t pid;
    fflush(stdout);
    int spawned = posix_spawn(&pid, self_path, &actions, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    int status = spawned == 0 ? child_status(pid) : -1;
    char text[8] = "";
    long n = read_full(c, text, 5);
    SHOW("posix_spawn, a passed socket: child exit status", "%d", status);
    SHOW("posix_spawn, a passed socket: the parent's client read", "%s", n == 5 ? text : "(nothing)");
    close(c);
    close(s);
}

// popen, whose shell inherits the connection (not close-on-exec): a command reads it through a "r" stream, another
// writes it through a "w" stream, and the parent writes after pclose. The peer gets the command's bytes before
// the parent's. A "re" stream is close-on-exec and a bad mode is EINVAL, as libc's. Under vmsock-run the shells
// get relays: libc's popen would give them the bare TCP socket, whose bytes are wake-ups. The connection is made
// inheritable on purpose, as spawn_passed's (a merely leaked one is read for a new image only once this process
// has closed it: spawn_leaked).
static void popen_inherited(void) {
    int c, s;
    pair(&c, &s);
    fcntl(s, F_SETFD, FD_CLOEXEC);
    fcntl(s, F_SETFD, 0);
    char command[64];
    snprintf(command, sizeof command, "head -c 5 <&%d", s);
    CHECK("popen: the peer writes", write(c, "hello", 5));
    fflush(stdout);
    FILE *in = popen(command, "re");
    char text[64] = "";
    size_t n = in ? fread(text, 1, sizeof text - 1, in) : 0;
    int flags = in ? fcntl(fileno(in), F_GETFD) : -1;
    SHOW("popen r: the command read", "%.*s", (int)n, text);
    SHOW("popen re: close-on-exec", "%s", flags >= 0 && (flags & FD_CLOEXEC) ? "yes" : "no");
    SHOW("popen r: pclose status", "%d", in ? pclose(in) : -1);
    errno = 0;
    FILE *bad = popen("true", "rw");
    SHOW("popen rw: refused", "%s", bad ? "no" : strerrorname_np(errno));
    if (bad) pclose(bad);
    snprintf(command, sizeof command, "cat >&%d", s);
    FILE *out = popen(command, "w");
    flags = out ? fcntl(fileno(out), F_GETFD) : -1;
    SHOW("popen w: close-on-exec", "%s", flags >= 0 && (flags & FD_CLOEXEC) ? "yes" : "no");
    if (out) fputs("from the command, ", out);
    SHOW("popen w: pclose status", "%d", out ? pclose(out) : -1);
    CHECK("popen: the parent writes after pclose", write(s, "then the parent", 15));
    shutdown(s, SHUT_WR);
    memset(text, 0, sizeof text);
    n = 0;
    for (long got = 1; got > 0 && n < sizeof text - 1; n += (size_t)(got > 0 ? got : 0)) {
        got = read(c, text + n, sizeof text - 1 - n);
    }
    SHOW("popen: the peer read", "%s", text);

    // The connection as this process's standard input, and a "w" stream, whose pipe replaces the shell's: the
    // shell never gets the connection, so the peer's bytes stay for this process (no relay may read them).
    int kept = dup(0);
    fcntl(s, F_SETFD, FD_CLOEXEC);  // only standard input carries it
    dup2(s, 0);
    CHECK("popen w on standard input: the peer writes", write(c, "stays", 5));
    FILE *quiet = popen("sleep 0.2; cat >/dev/null", "w");
    SHOW("popen w on standard input: pclose status", "%d", quiet ? pclose(quiet) : -1);
    memset(text, 0, sizeof text);
    SHOW("popen w on standard input: this process read", "%s", readable(0, 2000) && read(0, text, 5) == 5 ? text : "(nothing)");
    dup2(kept, 0);
    close(kept);

    // Two streams at once: the second shell must not hold the first one's pipe (its command would never see the
    // end of its input, and pclose would wait for ever); fclose of a popen stream waits as pclose does.
    FILE *first = popen("cat >/dev/null", "w"), *second = popen("cat >/dev/null", "w");
    SHOW("popen twice: pclose of the first", "%d", first ? pclose(first) : -1);
    SHOW("popen twice: pclose of the second", "%d", second ? pclose(second) : -1);
    FILE *exits = popen("exit 3", "r");
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-dealloc"  // on purpose: fclose of a popen stream is its pclose
#endif
    int status = exits ? fclose(exits) : -1;
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
    SHOW("popen, then fclose: the command's exit status", "%d", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    // A command that exits without reading (SIGPIPE is ignored here): pclose's flush fails, and pclose says so.
    FILE *unread = popen("exit 0", "w");
    usleep(200000);
    if (unread) fputs("never read", unread);
    errno = 0;
    status = unread ? pclose(unread) : 0;
    SHOW("popen w, the command reads nothing: pclose", "%d %s", status, strerrorname_np(errno));
    close(c);
    close(s);
}

// MARK: Descriptors passed in SCM_RIGHTS messages

static void send_descriptor(int unix_socket, int fd) {
    char byte = 'x', control[CMSG_SPACE(sizeof(int))] __attribute__((aligned(8))) = { 0 };
    struct iovec v = { &byte, 1 };
    struct msghdr m = { .msg_iov = &v, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control };
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    if (sendmsg(unix_socket, &m, 0) != 1) { perror("sendmsg"); exit(2); }
}

static int receive_descriptor(int unix_socket) {
    char byte, control[CMSG_SPACE(sizeof(int))] __attribute__((aligned(8)));
    struct iovec v = { &byte, 1 };
    struct msghdr m = { .msg_iov = &v, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control };
    if (recvmsg(unix_socket, &m, 0) != 1) return -1;
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    int fd = -1;
    if (c && c->cmsg_type == SCM_RIGHTS) memcpy(&fd, CMSG_DATA(c), sizeof fd);
    return fd;
}

// The receiving program (a new image, unrelated to the connection's set-up): gets a connection, or a listening
// socket to accept one on, reads "hello" and answers. Its exit status says how it went.
static int receive_and_answer(int unix_socket, const char *kind) {
    int fd = receive_descriptor(unix_socket);
    if (fd >= 0 && strcmp(kind, "listener") == 0) fd = accept(fd, NULL, NULL);
    if (fd < 0) return 2;
    char text[8] = "";
    return read_full(fd, text, 5) == 5 && memcmp(text, "hello", 5) == 0 && write_full(fd, "olleh", 5) == 5 ? 0 : 1;
}

// A listening socket that is not close-on-exec (most C servers'), then popen: the shell is taken not to accept on
// it, so the listener's next connection is still shared memory (the test reads the debug lines). Run alone
// (`popen-listener`).
static int popen_listener(void) {
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t length = sizeof bound;
    if (bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 8) != 0) { perror("listen"); return 2; }
    getsockname(l, (struct sockaddr *)&bound, &length);
    FILE *command = popen("echo from the shell", "r");
    char line[64] = "";
    if (!command || !fgets(line, sizeof line, command)) strcpy(line, "(nothing)\n");
    SHOW("popen after listen: the shell said", "%s", strtok(line, "\n"));
    SHOW("popen after listen: pclose", "%d", command ? pclose(command) : -1);
    listener = l;
    int c, s;
    pair(&c, &s);
    char text[8] = "";
    CHECK("popen after listen: the client writes", write(c, "hello", 5));
    SHOW("popen after listen: the server read", "%s", read_full(s, text, 5) == 5 ? text : "(nothing)");
    close(c);
    close(s);
    close(l);
    return 0;
}

// Spawns this program to receive a descriptor on the other end of `*unix_socket` (a new socket pair).
static pid_t spawn_receiver(int *unix_socket, const char *kind) {
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, pair) != 0) { perror("socketpair"); exit(2); }
    fcntl(pair[0], F_SETFD, FD_CLOEXEC);
    char number[16];
    snprintf(number, sizeof number, "%d", pair[1]);
    char *argv[] = { self_path, "receive", number, (char *)kind, NULL };
    pid_t pid;
    fflush(stdout);
    if (posix_spawn(&pid, self_path, NULL, NULL, argv, environ) != 0) { perror("posix_spawn"); exit(2); }
    close(pair[1]);
    *unix_socket = pair[0];
    return pid;
}

// A connection handed to another program with sendmsg (as Dovecot's login process hands its client over): that
// program reads "hello" on it and answers, and this process has closed its copy.
static void pass_connection(void) {
    int c, s, u;
    pair(&c, &s);
    pid_t pid = spawn_receiver(&u, "connection");
    CHECK("SCM_RIGHTS connection: the peer writes", write(c, "hello", 5));
    send_descriptor(u, s);
    close(s);
    close(u);
    char text[8] = "";
    long n = read_full(c, text, 5);
    SHOW("SCM_RIGHTS connection: receiver's exit status", "%d", child_status(pid));
    SHOW("SCM_RIGHTS connection: the peer read", "%s", n == 5 ? text : "(nothing)");
    close(c);
}

// Many connections in one message (to this process itself), the sender's copies closed, and the peers' bytes
// read on the received ones; and control data whose header runs past its end: the kernel's EINVAL, nothing passed.
static void pass_many(void) {
    enum { N = 20 };
    int c[N], s[N], got[N], u[2];
    for (int i = 0; i < N; i++) pair(&c[i], &s[i]);
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, u) != 0) { perror("socketpair"); exit(2); }
    char control[CMSG_SPACE(N * sizeof(int))] __attribute__((aligned(8))) = { 0 }, byte = 'x';
    struct iovec v = { &byte, 1 };
    struct msghdr m = { .msg_iov = &v, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control };
    struct cmsghdr *h = CMSG_FIRSTHDR(&m);
    *h = (struct cmsghdr){ .cmsg_len = CMSG_LEN(N * sizeof(int)) + 64, .cmsg_level = SOL_SOCKET, .cmsg_type = SCM_RIGHTS };
    memcpy(CMSG_DATA(h), s, sizeof s);
    errno = 0;
    long n = sendmsg(u[0], &m, MSG_DONTWAIT);
    SHOW("SCM_RIGHTS, a header past the end: sendmsg", "%ld %s", n, strerrorname_np(errno));
    h->cmsg_len = CMSG_LEN(N * sizeof(int));
    CHECK("SCM_RIGHTS, 20 connections in one message", sendmsg(u[0], &m, 0));
    struct msghdr r = { .msg_iov = &v, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control };
    memset(control, 0, sizeof control);
    n = recvmsg(u[1], &r, 0);
    h = CMSG_FIRSTHDR(&r);
    int count = h ? (int)((h->cmsg_len - CMSG_LEN(0)) / sizeof(int)) : 0;
    if (count == N) memcpy(got, CMSG_DATA(h), sizeof got);
    int answered = 0;
    for (int i = 0; i < N; i++) close(s[i]);
    for (int i = 0; i < N && count == N; i++) {
        char text[8] = "";
        answered += write(c[i], "hello", 5) == 5 && read_full(got[i], text, 5) == 5 && memcmp(text, "hello", 5) == 0;
        close(got[i]);
    }
    SHOW("SCM_RIGHTS, 20 connections: received, read hello", "%d %d", count, answered);
    for (int i = 0; i < N; i++) close(c[i]);
    close(u[0]);
    close(u[1]);
}

// A listening socket handed to another program with sendmsg (haproxy's reload, envoy's hot restart), whose
// owner keeps it: the other program accepts a connection on it, reads "hello" and answers. Run alone (`pass-listener`):
// this process welcomes nobody after it.
static int pass_listener(void) {
    int l = listen_local(), u;
    pid_t pid = spawn_receiver(&u, "listener");
    send_descriptor(u, l);
    close(u);
    int c = connect_local();
    CHECK("SCM_RIGHTS listener: the client writes", write(c, "hello", 5));
    char text[8] = "";
    long n = read_full(c, text, 5);
    SHOW("SCM_RIGHTS listener: receiver's exit status", "%d", child_status(pid));
    SHOW("SCM_RIGHTS listener: the client read", "%s", n == 5 ? text : "(nothing)");
    close(c);
    close(l);
    return 0;
}

// The programs spawn_unloaded runs: exec_answer's, and whether they have vmsock-run's library loaded (they must
// not); with `preload`, also the LD_PRELOAD they were given.
static int exec_answer_bare(int fd, int preload) {
    int loaded = dlsym(RTLD_DEFAULT, "vmsp_trampoline_paths") != NULL;
    printf("%-48s %s\n", "spawned program: vmsock-run's library loaded", loaded ? "yes" : "no");
    const char *given = getenv("LD_PRELOAD");
    if (preload) printf("%-48s %s\n", "spawned program: its LD_PRELOAD", given ? given : "(none)");
    // What spawn_without_library's process set, which exec keeps (a handler becomes the default): under
    // vmsock-run, the Swift runtime in the vmsock-run it ran through must not have changed any of it.
    struct sigaction hup, usr1;
    sigset_t blocked;
    sigaction(SIGHUP, NULL, &hup);
    sigaction(SIGUSR1, NULL, &usr1);
    sigprocmask(SIG_BLOCK, NULL, &blocked);
    printf("%-48s %s %s %s\n", "spawned program: SIGHUP, SIGUSR1, SIGUSR2",
           hup.sa_handler == SIG_IGN ? "ignored" : "-", usr1.sa_handler == SIG_DFL ? "default" : "-",
           sigismember(&blocked, SIGUSR2) ? "blocked" : "-");
    return exec_answer(fd);
}

// posix_spawn of a program that will not load vmsock-run's library, with the socket moved to its standard input:
// `program` (looked for along PATH with `search`) in MODE and environment `envp`. Under vmsock-run it runs through
// vmsock-run, which puts the relay in place and then runs it with the environment it was given: it reads "hello"
// and answers, as over TCP, and never reads a wake-up byte as data.
static void spawn_unloaded(const char *label, const char *program, int search, const char *mode, char *const envp[]) {
    int c, s;
    pair(&c, &s);
    CHECK(label, write(c, "hello", 5));
    pid_t pid;
    fflush(stdout);
    int spawned = spawn_on_stdin_with(program, search, s, mode, &pid, envp);
    close(s);
    char text[8] = "";
    long got = read_full(c, text, 5);
    int status = spawned == 0 ? child_status(pid) : -1;
    printf("%-48s %s, exit status %d\n", label, got == 5 ? text : "(nothing)", status);
    close(c);
}

static void on_signal(int sig) { (void)sig; }

// Two such programs. This one, by name along PATH (posix_spawnp), in an environment whose LD_PRELOAD names
// another library only (as a program that sets its own passes): it must get that LD_PRELOAD, and not ours. And a
// static build of it (PRELOAD_FORK_STATIC, which the test makes), in the environment as it is, whose LD_PRELOAD
// it ignores.
static void spawn_without_library(void) {
    // Signal state that exec keeps (ignored, blocked) or resets (a handler), which the programs print.
    sigset_t usr2, mask;
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    sigprocmask(SIG_BLOCK, &usr2, &mask);
    signal(SIGHUP, SIG_IGN);
    signal(SIGUSR1, on_signal);
    size_t n = 0;
    while (environ[n]) n++;
    char *other[n + 2];
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        if (strncmp(environ[i], "LD_PRELOAD=", 11) != 0) other[kept++] = environ[i];
    }
    other[kept++] = "LD_PRELOAD=libm.so.6";
    other[kept] = NULL;
    char directory[4096], *slash, *path = getenv("PATH"), saved_path[8192] = "";
    snprintf(directory, sizeof directory, "%s", self_path);
    slash = strrchr(directory, '/');
    if (slash) *slash = 0;
    if (path) snprintf(saved_path, sizeof saved_path, "%s", path);
    char searched[sizeof directory + sizeof saved_path + 2];
    snprintf(searched, sizeof searched, "%s:%s", directory, saved_path);
    setenv("PATH", searched, 1);
    spawn_unloaded("posix_spawnp, another LD_PRELOAD: the answer", slash ? slash + 1 : self_path, 1,
                   "exec-answer-preload", other);
    if (path) setenv("PATH", saved_path, 1);
    else unsetenv("PATH");
    const char *static_build = getenv("PRELOAD_FORK_STATIC");
    if (static_build) {
        spawn_unloaded("posix_spawn of a static program: the answer", static_build, 0, "exec-answer-bare", environ);
    } else {
        printf("posix_spawn of a static program: not run (PRELOAD_FORK_STATIC is not set)\n");
    }
    signal(SIGHUP, SIG_DFL);
    signal(SIGUSR1, SIG_DFL);
    sigprocmask(SIG_SETMASK, &mask, NULL);
}

// A thread's connect to PORT, whose vmsock-run listener is stopped (SIGSTOP): under vmsock-run it waits inside
// the library's set-up for a welcome that does not come (up to 1 s), then connects over TCP.
static void *connect_to_stopped(void *port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)(intptr_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    return (void *)(intptr_t)(connect(fd, (struct sockaddr *)&a, sizeof a) == 0 ? fd : -1);
}

// A fork while that thread waits: the fork goes ahead after 20 ms with the thread inside, so the child's copy of
// the set-up may be half made, and its own connect must use TCP (its debug line says why) and work. Exit status 0
// when it did.
static int torn_fork(int port) {
    listener = listen_local();
    pthread_t thread;
    if (pthread_create(&thread, NULL, connect_to_stopped, (void *)(intptr_t)port) != 0) return 2;
    usleep(200 * 1000);
    pid_t pid = fork();
    if (pid == 0) talk_as_child(0, 0, 0);
    int s = accept(listener, NULL, NULL);
    char text[8] = "";
    int ok = read_full(s, text, 5) == 5 && memcmp(text, "hello", 5) == 0 && write(s, "world", 5) == 5;
    int status = child_status(pid);
    void *stopped;
    pthread_join(thread, &stopped);
    printf("torn fork: parent %s, child exit status %d, connect to the stopped listener %s\n", ok ? "ok" : "failed",
           status, (intptr_t)stopped >= 0 ? "ok" : "failed");
    return ok && status == 0 && (intptr_t)stopped >= 0 ? 0 : 1;
}

// Accepts one connection on l, reads its line, answers "reply", and writes what it read to `report`.
static void accept_and_report(int l, int report) {
    int s = accept(l, NULL, NULL);
    char text[16] = "";
    long n = read(s, text, sizeof text - 1);
    if (n == 5 && write(s, "reply", 5) != 5) n = -1;
    (void)!write(report, n == 5 ? text : "(nothing)", n == 5 ? 5 : 9);
    close(s);
    _exit(0);
}

// A daemon's first process O (a new image, run by daemon_case: a forked child of a process that listened would
// not offer shared memory) listens, then forks the daemon D (setsid), which waits until O has exited and then
// forks K: under vmsock-run, D takes the listener over at that fork when it is O's only child since the listen.
// With `sibling`, O also forked W first, which accepts on the same socket: then D must not take over (W would
// claim links from O, which is gone, and read a connection D welcomed as TCP).
static int daemon_first(int sibling, int ready, int report) {
    int l = listen_local();
    (void)!write(ready, &bound, sizeof bound);
    if (sibling && fork() == 0) accept_and_report(l, report);
    pid_t parent = getpid();
    if (fork() == 0) {
        setsid();
        while (getppid() == parent) usleep(1000);
        pid_t k = fork();
        if (k == 0) {
            if (!sibling) accept_and_report(l, report);
            _exit(0);
        }
        (void)!write(ready, "d", 1);
        waitpid(k, NULL, 0);
        _exit(0);
    }
    return 0;
}

// Runs daemon_first, then connects, sends "hello", and prints what the acceptor (K, or W) read and what came back.
static void daemon_case(int sibling) {
    int ready[2], report[2];
    if (pipe(ready) != 0 || pipe(report) != 0) { perror("pipe"); exit(2); }
    char mode[4], ready_fd[16], report_fd[16];
    snprintf(mode, sizeof mode, "%d", sibling);
    snprintf(ready_fd, sizeof ready_fd, "%d", ready[1]);
    snprintf(report_fd, sizeof report_fd, "%d", report[1]);
    char *argv[] = { self_path, "daemon-first", mode, ready_fd, report_fd, NULL };
    pid_t first;
    if (posix_spawn(&first, self_path, NULL, NULL, argv, environ) != 0) { perror("posix_spawn"); exit(2); }
    waitpid(first, NULL, 0);
    struct sockaddr_in address;
    char forked;
    if (read(ready[0], &address, sizeof address) != sizeof address || read(ready[0], &forked, 1) != 1) {
        perror("daemon case");
        exit(2);
    }
    int c = socket(AF_INET, SOCK_STREAM, 0);
    char answer[8] = "", heard[16] = "";
    if (connect(c, (struct sockaddr *)&address, sizeof address) != 0 || write(c, "hello", 5) != 5) perror("connect");
    struct pollfd p = { c, POLLIN, 0 };
    if (poll(&p, 1, 3000) == 1) (void)!read(c, answer, sizeof answer - 1);
    (void)!read(report[0], heard, sizeof heard - 1);
    printf("daemon%s: the acceptor read %s, the client got %s\n", sibling ? " with a sibling acceptor" : "", heard,
           answer[0] ? answer : "(nothing)");
    close(c);
    close(ready[0]), close(ready[1]), close(report[0]), close(report[1]);
}

// A daemon whose first process passed its listener to another program (SCM_RIGHTS) before it daemonized: the
// daemon must not take the listener over (its renewed book would forget the mark), so the other program's accept
// gets a TCP connection and its data. The first process: listens, spawns the receiver and passes it the listener,
// forks the daemon and exits; the daemon forks a worker (where a take-over would happen) and says so on `ready`.
static int daemon_pass_first(int ready) {
    listener = listen_local();
    int u;
    spawn_receiver(&u, "listener");
    send_descriptor(u, listener);
    close(u);
    pid_t parent = getpid();
    if (fork() == 0) {
        setsid();
        while (getppid() == parent) usleep(1000);
        pid_t worker = fork();
        if (worker == 0) _exit(0);
        waitpid(worker, NULL, 0);
        (void)!write(ready, &bound, sizeof bound);  // the receiver holds the listener from here on
        _exit(0);
    }
    return 0;
}

static int daemon_pass(void) {
    int ready[2];
    if (pipe(ready) != 0) { perror("pipe"); return 2; }
    char ready_fd[16];
    snprintf(ready_fd, sizeof ready_fd, "%d", ready[1]);
    char *argv[] = { self_path, "daemon-pass-first", ready_fd, NULL };
    pid_t first;
    if (posix_spawn(&first, self_path, NULL, NULL, argv, environ) != 0) { perror("posix_spawn"); return 2; }
    waitpid(first, NULL, 0);
    struct sockaddr_in address;
    if (read(ready[0], &address, sizeof address) != sizeof address) { perror("daemon-pass"); return 2; }
    int c = socket(AF_INET, SOCK_STREAM, 0);
    char answer[8] = "";
    if (connect(c, (struct sockaddr *)&address, sizeof address) != 0 || write(c, "hello", 5) != 5) perror("connect");
    struct pollfd p = { c, POLLIN, 0 };
    if (poll(&p, 1, 3000) == 1) (void)!read(c, answer, sizeof answer - 1);
    SHOW("daemon after passing its listener: the client got", "%s", answer[0] ? answer : "(nothing)");
    close(c);
    return 0;
}

// The new image of listener_handed_on: accepts on the listening socket it inherited and reads a line.
static int accept_inherited(int l) {
    int s = accept(l, NULL, NULL);
    char text[16] = "";
    long n = read_full(s, text, 5);
    // Its exit status says what it read: a line printed here would race the parent's lines.
    return n == 5 && memcmp(text, "hello", 5) == 0 ? 0 : 1;
}

// A new image gets a registered listening socket and accepts on it: a close-on-exec one that a file action
// copies to another number (which the copy is not). It knows nothing of the links this process (the owner)
// welcomes, so from the spawn on this process welcomes nobody: the connection the new image accepts is TCP, and
// its data arrives.
static void listener_handed_on(void) {
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t length = sizeof a;
    if (bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 8) != 0) { perror("listen"); exit(2); }
    getsockname(l, (struct sockaddr *)&a, &length);
    char *argv[] = { self_path, "accept-inherited", "50", NULL };
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, l, 50);
    pid_t pid;
    fflush(stdout);
    if (posix_spawn(&pid, self_path, &actions, NULL, argv, environ) != 0) { perror("posix_spawn"); exit(2); }
    posix_spawn_file_actions_destroy(&actions);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    CHECK("handed-on listener: connect", connect(c, (struct sockaddr *)&a, sizeof a));
    CHECK("handed-on listener: write", write(c, "hello", 5));
    int status = child_status(pid);
    SHOW("handed-on listener: the new image read", "%s", status == 0 ? "hello" : "(not hello)");
    SHOW("handed-on listener: new image's exit status", "%d", status);
    close(c);
    close(l);
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "exec-child") == 0) return exec_child(atoi(argv[2]), 0);
    if (argc == 3 && strcmp(argv[1], "exec-child-or-closed") == 0) return exec_child(atoi(argv[2]), 1);
    if (argc == 3 && strcmp(argv[1], "exec-answer") == 0) return exec_answer(atoi(argv[2]));
    if (argc == 3 && strcmp(argv[1], "exec-answer-bare") == 0) return exec_answer_bare(atoi(argv[2]), 0);
    if (argc == 3 && strcmp(argv[1], "exec-answer-preload") == 0) return exec_answer_bare(atoi(argv[2]), 1);
    if (argc == 2 && strcmp(argv[1], "inetd-service") == 0) return inetd_service();
    if (argc == 3 && strcmp(argv[1], "wait-for-end") == 0) return wait_for_end(atoi(argv[2]));
    if (argc == 3 && strcmp(argv[1], "torn-fork") == 0) return torn_fork(atoi(argv[2]));
    if (argc == 3 && strcmp(argv[1], "accept-inherited") == 0) return accept_inherited(atoi(argv[2]));
    if (argc == 5 && strcmp(argv[1], "daemon-first") == 0) return daemon_first(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]));
    ssize_t n = readlink("/proc/self/exe", self_path, sizeof self_path - 1);
    if (n > 0) self_path[n] = 0;
    signal(SIGPIPE, SIG_IGN);
    if (argc == 4 && strcmp(argv[1], "receive") == 0) return receive_and_answer(atoi(argv[2]), argv[3]);
    if (argc == 2 && strcmp(argv[1], "pass-listener") == 0) {
        listener = -1;
        return pass_listener();
    }
    if (argc == 2 && strcmp(argv[1], "popen-listener") == 0) return popen_listener();
    if (argc == 2 && strcmp(argv[1], "daemon-pass") == 0) return daemon_pass();
    if (argc == 3 && strcmp(argv[1], "daemon-pass-first") == 0) return daemon_pass_first(atoi(argv[2]));
    if (argc == 3 && strcmp(argv[1], "daemon-cases") == 0) {
        for (int i = 0, count = atoi(argv[2]); i < count; i++) daemon_case(0);
        return 0;
    }
    listener = listen_local();
    // Made before the first fork: a listener whose process forked offered no shared memory before issue 19.
    int pairs[4][2];
    for (int i = 0; i < 4; i++) pair(&pairs[i][0], &pairs[i][1]);
    both_processes(pairs[0][0], pairs[0][1]);
    close_in_child(pairs[1][0], pairs[1][1]);
    shutdown_in_child(pairs[2][0], pairs[2][1]);
    exit_without_close(pairs[3][0], pairs[3][1]);
    accept_in_child();
    connect_in_child();
    connect_in_grandchild();
    accept_after_fork();
    exec_inherited();
    inetd_exec();
    exec_leaked();
    vfork_exec();
    spawn_inherited();
    spawn_cloexec();
    spawn_leaked();
    spawn_passed();
    popen_inherited();
    pass_connection();
    pass_many();
    raw_clone_exec();
    exec_short_of_descriptors();
    spawn_without_library();
    daemon_case(0);
    daemon_case(1);
    listener_handed_on();  // last: this process welcomes nobody after it
    close(listener);
    printf("done\n");
    return 0;
}
