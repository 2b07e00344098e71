// system() runs the shell through libc's own posix_spawn, which never reaches this library: a shell that
// inherits a shared-memory connection (socat's `SYSTEM:...,nofork` puts it on the shell's standard input and
// output) would see the bare TCP socket, whose bytes are wake-ups. So while one of our connections would be
// inherited (not close-on-exec), system() runs the shell through the posix_spawn wrapper (exec.c), which gives
// it a relay (ferry.c), and otherwise is libc's own. As libc's: SIGINT and SIGQUIT ignored and SIGCHLD blocked
// in the caller while the shell runs, the shell started with them as they were; exit status 127 when it could
// not be started. Not covered: popen.
#include "preload.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

// Whether a new image would inherit one of our connections.
static int inherits_connection(void) {
    int high = atomic_load(&vmsp_table_high);
    for (int fd = 0; fd <= high && fd < vmsp_table_size; fd++) {
        if (!vmsp_lookup(fd)) continue;
        int flags = REAL(fcntl)(fd, F_GETFD);
        if (flags >= 0 && !(flags & FD_CLOEXEC)) return 1;
    }
    return 0;
}

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int running;  // system() calls under way: the first ignores SIGINT and SIGQUIT, the last restores them
static struct sigaction saved_intr, saved_quit;

int system(const char *command) {
    static int (*real_)(const char *);
    if (!real_) *(void **)&real_ = dlsym(RTLD_NEXT, "system");
    if (!real_) { errno = ENOSYS; return -1; }
    if (!command || vmsp_inside || !inherits_connection()) return real_(command);
    struct sigaction ignore = { .sa_handler = SIG_IGN };
    sigemptyset(&ignore.sa_mask);
    pthread_mutex_lock(&lock);
    if (running++ == 0) {
        REAL(sigaction)(SIGINT, &ignore, &saved_intr);
        REAL(sigaction)(SIGQUIT, &ignore, &saved_quit);
    }
    pthread_mutex_unlock(&lock);
    sigset_t child, old;
    sigemptyset(&child);
    sigaddset(&child, SIGCHLD);
    pthread_sigmask(SIG_BLOCK, &child, &old);
    sigset_t reset;
    sigemptyset(&reset);
    if (saved_intr.sa_handler != SIG_IGN) sigaddset(&reset, SIGINT);
    if (saved_quit.sa_handler != SIG_IGN) sigaddset(&reset, SIGQUIT);
    posix_spawnattr_t attributes;
    posix_spawnattr_init(&attributes);
    posix_spawnattr_setsigdefault(&attributes, &reset);
    posix_spawnattr_setsigmask(&attributes, &old);
    posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
    vmsp_debug("system: the shell inherits a shared-memory connection: it runs through vmsock-run's posix_spawn");
    pid_t pid;
    char *argv[] = { "sh", "-c", "--", (char *)command, NULL };
    int status = 127 << 8;  // libc's: as a shell that could not run
    if (posix_spawn(&pid, "/bin/sh", NULL, &attributes, argv, environ) == 0) {
        while (waitpid(pid, &status, 0) < 0) {
            if (errno != EINTR) { status = -1; break; }
        }
    }
    posix_spawnattr_destroy(&attributes);
    int saved = errno;
    pthread_mutex_lock(&lock);
    if (--running == 0) {
        REAL(sigaction)(SIGINT, &saved_intr, NULL);
        REAL(sigaction)(SIGQUIT, &saved_quit, NULL);
    }
    pthread_mutex_unlock(&lock);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    errno = saved;
    return status;
}
