// Child processes. A child reaped (waitpid, wait4, wait, waitid) may have written to a connection through a
// relay (ferry.c) that is still moving its last bytes into the ring: the wait returns once they are there (at
// most 2 s), so that what this process writes next comes after them, as over TCP (a shell's `echo a >&3;
// cat f >&3; echo b >&3`).
//
// system() runs the shell through libc's own posix_spawn, which never reaches this library: a shell that
// inherits a shared-memory connection (socat's `SYSTEM:...,nofork` puts it on the shell's standard input and
// output) would see the bare TCP socket, whose bytes are wake-ups. So while one of our connections would be
// inherited (not close-on-exec), system() runs the shell through the posix_spawn wrapper (exec.c), which gives
// it a relay (ferry.c), and otherwise is libc's own. As libc's: SIGINT and SIGQUIT ignored and SIGCHLD blocked
// in the caller while the shell runs, the shell started with them as they were; exit status 127 when it could
// not be started. Not covered: a thread cancelled inside system() (libc's kills the shell).
//
// popen() is the same: libc's runs its shell through its own posix_spawn. So the library's popen runs `/bin/sh -c`
// through the posix_spawn wrapper (which makes relays only when a connection would be inherited) with a pipe on
// its standard output ("r") or input ("w"), as libc's: mode "r" or "w", and "e" for a close-on-exec stream; a
// shell does not inherit an earlier popen stream. pclose, and fclose as in libc, wait for the shell (and its
// relays) and give its status.
#include "preload.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define NEXT(type, name) \
    static type real_; \
    if (!real_) *(void **)&real_ = dlsym(RTLD_NEXT, name); \
    if (!real_) { errno = ENOSYS; return -1; }

// MARK: Waits for a child

typedef pid_t (*wait4_fn)(pid_t, int *, int, struct rusage *);
typedef int (*waitid_fn)(idtype_t, id_t, siginfo_t *, int);
typedef int (*system_fn)(const char *);

static pid_t reaped(pid_t pid, int status) {
    if (pid > 0 && (WIFEXITED(status) || WIFSIGNALED(status))) {
        int saved = errno;
        vmsp_relays_settle(pid);
        errno = saved;
    }
    return pid;
}

pid_t wait4(pid_t pid, int *status, int options, struct rusage *usage) {
    NEXT(wait4_fn, "wait4");
    int got = 0;
    pid_t result = real_(pid, &got, options, usage);
    if (status && result > 0) *status = got;
    return reaped(result, got);
}

pid_t wait3(int *status, int options, struct rusage *usage) { return wait4(-1, status, options, usage); }

pid_t waitpid(pid_t pid, int *status, int options) { return wait4(pid, status, options, NULL); }

pid_t wait(int *status) { return wait4(-1, status, 0, NULL); }

int waitid(idtype_t type, id_t id, siginfo_t *info, int options) {
    NEXT(waitid_fn, "waitid");
    int result = real_(type, id, info, options);
    if (result == 0 && info && info->si_pid > 0 && !(options & WNOWAIT) &&
        (info->si_code == CLD_EXITED || info->si_code == CLD_KILLED || info->si_code == CLD_DUMPED)) {
        int saved = errno;
        vmsp_relays_settle(info->si_pid);
        errno = saved;
    }
    return result;
}

// MARK: system

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
    NEXT(system_fn, "system");
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
    vmsp_shell_spawning = 1;
    int failed = posix_spawn(&pid, "/bin/sh", NULL, &attributes, argv, environ);
    vmsp_shell_spawning = 0;
    if (!failed) {
        while (waitpid(pid, &status, 0) < 0) {
            if (errno != EINTR) { status = -1; break; }
        }
    }
    posix_spawnattr_destroy(&attributes);
    int saved = failed ? failed : errno;
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

// MARK: popen

// A stream this popen made: its shell's pid. A list under `lock`, as libc keeps its own, held with every signal
// blocked (a handler's fclose would wait for it for ever); fclose looks at it only while it has records.
struct piped {
    FILE *stream;
    int fd, writing;
    pid_t pid;
    struct piped *next;
};
static struct piped *piped;
static atomic_int piped_count;

void vmsp_shell_after_fork(void) {
    // Another thread may have held it at the fork: the child's copy would stay held (newer libcs reset theirs).
    pthread_mutex_init(&lock, NULL);
}

static void lock_list(sigset_t *old) {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, old);
    pthread_mutex_lock(&lock);
}

static void unlock_list(const sigset_t *old) {
    pthread_mutex_unlock(&lock);
    pthread_sigmask(SIG_SETMASK, old, NULL);
}

// Mode "r" or "w", with "e" for close-on-exec, as libc's popen takes it: 0 for reading, 1 for writing, -1 if bad.
static int popen_mode(const char *mode, int *cloexec) {
    int reading = 0, writing = 0;
    *cloexec = 0;
    for (const char *m = mode; *m; m++) {
        if (*m == 'r') reading = 1;
        else if (*m == 'w') writing = 1;
        else if (*m == 'e') *cloexec = 1;
        else return -1;
    }
    return reading == writing ? -1 : writing;
}

// Runs the shell with `theirs` on its standard input or output and the caller's signal mask (`mask`); the earlier
// streams stay out of it. Under `lock`.
static int popen_spawn(pid_t *pid, const char *command, int theirs, int target, const sigset_t *mask) {
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attributes;
    if (posix_spawn_file_actions_init(&actions) != 0) return ENOMEM;
    if (posix_spawnattr_init(&attributes) != 0) {
        posix_spawn_file_actions_destroy(&actions);
        return ENOMEM;
    }
    posix_spawnattr_setsigmask(&attributes, mask);
    posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK);
    int failed = posix_spawn_file_actions_adddup2(&actions, theirs, target);
    for (struct piped *p = piped; p && !failed; p = p->next) {
        if (p->fd != target) failed = posix_spawn_file_actions_addclose(&actions, p->fd);
    }
    char *argv[] = { "sh", "-c", "--", (char *)command, NULL };
    vmsp_shell_spawning = 1;
    if (!failed) failed = posix_spawn(pid, "/bin/sh", &actions, &attributes, argv, environ);
    vmsp_shell_spawning = 0;
    posix_spawnattr_destroy(&attributes);
    posix_spawn_file_actions_destroy(&actions);
    return failed;
}

// Every popen is this one, so that one list knows every stream (a shell that kept an earlier command's pipe
// end open would keep that command waiting for its input's end); the posix_spawn wrapper gives the shell relays
// only when it inherits a connection.
FILE *popen(const char *command, const char *mode) {
    if (!command || !mode || vmsp_inside) return REAL(popen)(command, mode);
    int cloexec, writing = popen_mode(mode, &cloexec);
    if (writing < 0) { errno = EINVAL; return NULL; }
    struct piped *entry = malloc(sizeof *entry);
    int ends[2];
    if (!entry || pipe2(ends, O_CLOEXEC) != 0) {
        free(entry);
        if (!entry) errno = ENOMEM;
        return NULL;
    }
    int mine = ends[writing], theirs = ends[!writing];
    FILE *stream = REAL(fdopen)(mine, writing ? "w" : "r");  // first, as libc's: no shell to wait for if it fails
    if (!stream) {
        int saved = errno;
        REAL(close)(mine);
        REAL(close)(theirs);
        free(entry);
        errno = saved;
        return NULL;
    }
    if (inherits_connection()) {
        vmsp_debug("popen: the shell inherits a shared-memory connection: it runs through vmsock-run's posix_spawn");
    }
    sigset_t old;
    lock_list(&old);
    pid_t pid = 0;
    int failed = popen_spawn(&pid, command, theirs, writing ? 0 : 1, &old);
    REAL(close)(theirs);
    if (!failed) {
        if (!cloexec) REAL(fcntl)(mine, F_SETFD, 0);
        *entry = (struct piped){ .stream = stream, .fd = mine, .writing = writing, .pid = pid, .next = piped };
        piped = entry;
        atomic_fetch_add(&piped_count, 1);
    }
    unlock_list(&old);
    if (!failed) return stream;
    REAL(fclose)(stream);
    free(entry);
    errno = failed;
    return NULL;
}

// Whether `stream` is one of popen's: -1 if not, else whether it writes.
static int listed(FILE *stream) {
    sigset_t old;
    lock_list(&old);
    struct piped *p = piped;
    while (p && p->stream != stream) p = p->next;
    int writing = p ? p->writing : -1;
    unlock_list(&old);
    return writing;
}

// If `stream` is one of popen's: closes it, waits for its shell and returns 1 with what pclose returns in
// `result`: as libc's, the shell's wait status, or -1 when the wait failed, or when the status is 0 and the
// stream's last bytes could not be written (EPIPE: the command did not read them all).
static int close_piped(FILE *stream, int *result) {
    int writing = listed(stream);
    if (writing < 0) return 0;
    // Flushed while still listed: a popen meanwhile keeps its shell off this pipe, or this command would wait for
    // the end of its input for as long as that shell runs.
    int written = writing ? fflush(stream) : 0, flush_error = errno;
    sigset_t old;
    lock_list(&old);
    struct piped *entry = NULL;
    for (struct piped **p = &piped; *p; p = &(*p)->next) {
        if ((*p)->stream == stream) {
            entry = *p;
            *p = entry->next;
            atomic_fetch_sub(&piped_count, 1);
            break;
        }
    }
    unlock_list(&old);
    if (!entry) return 0;  // another thread closed it meanwhile
    pid_t pid = entry->pid;
    free(entry);
    if (REAL(fclose)(stream) == EOF && written == 0) {
        written = EOF;
        flush_error = errno;
    }
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) { status = -1; break; }
    }
    *result = status;
    if (status == 0 && written == EOF) {
        *result = -1;
        errno = flush_error;
    }
    return 1;
}

int pclose(FILE *stream) {
    int result;
    if (close_piped(stream, &result)) return result;
    return REAL(pclose)(stream);  // a stream libc's own popen made (from inside this library)
}

// As libc's: fclose of a popen stream is its pclose (the command's status, once it has ended).
int fclose(FILE *stream) {
    int result;
    if (atomic_load_explicit(&piped_count, memory_order_relaxed) && close_piped(stream, &result)) return result;
    return REAL(fclose)(stream);
}
