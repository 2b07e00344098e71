// exec with shared-memory sockets open. The new image would see only the TCP socket, whose bytes are wake-ups,
// not data, and the rings cannot go with it (DESIGN.md). So a process that execs hands each connection its new
// image inherits (not close-on-exec, or copied by posix_spawn's file actions: actions.c) to a relay (ferry.c): the
// new image gets a TCP socket in its place, which carries the connection's data. Where no relay can be made (a
// raw clone's exec, or a relay that could not be started), the connection ends for the new image, as a TCP
// connection whose peer vanished looks: the wrappers put the inodes of those sockets in VMSOCK_INHERITED, and the
// new image's constructor replaces each descriptor it inherited of them with a socket whose peer is gone (reads
// return 0, writes EPIPE), with a debug line saying so.
// Inodes, not descriptor numbers: posix_spawn's file actions may move a socket to another number (stdin, as inetd
// does). A process that execs leaves the connections' holders first (its close is then this one, unless a relay
// holds the connection), and joins them again if exec fails.
#include "preload.h"

#include <dirent.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

extern char **environ;
static const char variable[] = "VMSOCK_INHERITED=";

// MARK: Before exec (runs in a vfork child too: no allocation, no write to memory the parent uses)

// Writes "VMSOCK_INHERITED=ino,ino,..." into `out`, leaving out the descriptors a relay carries; 0 when there is
// no other shared-memory socket.
static int inherited_entry(char *out, size_t capacity, const struct vmsp_relays *relays) {
    int high = atomic_load(&vmsp_table_high), count = 0;
    size_t length = strlen(variable);
    memcpy(out, variable, length);
    for (int fd = 0; fd <= high && fd < vmsp_table_size; fd++) {
        struct stat info;
        if (!vmsp_lookup(fd) || vmsp_relay_carries(relays, fd) || fstat(fd, &info) != 0) continue;
        int n = snprintf(out + length, capacity - length, "%s%llu", count ? "," : "", (unsigned long long)info.st_ino);
        if (n < 0 || (size_t)n >= capacity - length) break;  // more than fit: the rest are not recognized
        length += (size_t)n;
        count++;
    }
    out[length] = 0;
    return count;
}

// This process gives up its hold on every connection (its descriptors go with the old image): the last
// holder's close happens here. Skipped in a vfork child, which never held them and shares the parent's memory.
static void leave_all(int rejoin) {
    if (!vmsp_holders_is_self()) return;
    int high = atomic_load(&vmsp_table_high);
    for (int fd = 0; fd <= high && fd < vmsp_table_size; fd++) {
        struct vmsp_ref *r = vmsp_lookup(fd);
        if (!r) continue;
        if (rejoin) { vmsp_holders_add_self(r->conn); continue; }
        if (vmsp_holders_leave(r->conn)) continue;
        __atomic_or_fetch((uint32_t *)(r->conn->local + 640), 4u, __ATOMIC_SEQ_CST);  // closed
        vmsp_drain_wakeups(r->conn, fd);
    }
}

static const char relayed_variable[] = "VMSOCK_RELAYED=";

// envp with our entries (`relayed` and `preload` may be NULL; any older ones left out), in `out` (room for count +
// 4 pointers). With `preload` (vmsock-run's, for a spawn through it), the program's LD_PRELOAD entry goes in
// `saved` as VMSOCK_SPAWN_PRELOAD (room for its length + 32).
static char *const *with_entry(char *const *envp, char *entry, char *relayed, char *preload, char *saved,
                               char **out, size_t slots) {
    size_t n = 0;
    for (size_t i = 0; envp && envp[i] && n + 4 < slots; i++) {
        if (strncmp(envp[i], variable, sizeof variable - 1) == 0 ||
            strncmp(envp[i], relayed_variable, sizeof relayed_variable - 1) == 0 ||
            strncmp(envp[i], "VMSOCK_SPAWN_PRELOAD=", 21) == 0) {
            continue;
        }
        if (preload && strncmp(envp[i], "LD_PRELOAD=", 11) == 0) {
            if (!saved[0]) {  // the first (preload_of's); a repeated one is left out
                strcpy(saved, "VMSOCK_SPAWN_PRELOAD=");
                strcat(saved, envp[i] + 11);
                out[n++] = saved;
            }
            continue;
        }
        out[n++] = envp[i];
    }
    out[n++] = entry;
    if (relayed) out[n++] = relayed;
    if (preload) out[n++] = preload;
    out[n] = NULL;
    return out;
}

static size_t env_count(char *const *envp) {
    size_t n = 0;
    while (envp && envp[n]) n++;
    return n;
}

// A registered listening socket the new image inherits (not close-on-exec, or copied by posix_spawn's file
// `actions`): that image may accept on it, and it knows nothing of the links the listener's owner welcomes, so it
// would read a welcomed connection's wake-up bytes as data. The owner then welcomes nobody, for good (the welcome
// book's mark; connectors use TCP).
// A shell that popen or system runs (shell.c, `vmsp_shell_spawning`) is taken not to accept on a listener it
// inherits, as before those went through this wrapper: a server that runs `popen("hostname")` keeps its shared
// memory.
__thread int vmsp_shell_spawning;

static void listeners_handed_on(const posix_spawn_file_actions_t *actions) {
    if (vmsp_shell_spawning) return;
    int end = atomic_load(&vmsp_listening_end);
    for (int fd = 0; fd < end && fd < vmsp_table_size; fd++) {
        if (!atomic_load(&vmsp_listening[fd]) || vmsp_spawn_takes(actions, fd)) continue;
        int flags = REAL(fcntl)(fd, F_GETFD);
        if (flags < 0 || ((flags & FD_CLOEXEC) && !vmsp_spawn_copies(actions, fd))) continue;
        vmsp_welcome_book_note_handed_on();
        vmsp_debug("exec: listening fd %d goes to the new image, which may accept on it: process %d offers shared "
                   "memory on its listeners no more", fd, (int)vmsp_listen_owner);
        return;
    }
}

// Runs `call` with envp extended and the relays in place; the exec wrappers below differ only in the call.
#define WITH_INHERITED(envp, call) WITH_INHERITED_IF(1, envp, call)
// `runnable`: whether the exec may succeed. A search along PATH tries (and fails) many: those leave everything as
// it is (no relay; no leaving the holders, whose last one would end the connection).
#define WITH_INHERITED_IF(runnable, envp, call)                                       \
    do {                                                                              \
        if (vmsp_inside || !(runnable)) { /* this one fails: nothing to hand on */    \
            char *const *env = (envp);                                                \
            return call;                                                              \
        }                                                                             \
        listeners_handed_on(NULL);                                                    \
        struct vmsp_relays relays_;                                                   \
        vmsp_relay_prepare(&relays_);                                                 \
        char entry_[8192];                                                            \
        int listed_ = inherited_entry(entry_, sizeof entry_, &relays_);               \
        if (!listed_ && !relays_.count) {                                             \
            char *const *env = (envp);                                                \
            return call;                                                              \
        }                                                                             \
        size_t slots_ = env_count(envp) + 4;                                          \
        char *array_[slots_];                                                         \
        char *const *env = listed_ ? with_entry((envp), entry_, NULL, NULL, NULL, array_, slots_) : (envp); \
        leave_all(0);                                                                 \
        vmsp_relay_swap(&relays_);                                                    \
        int result_ = call;                                                           \
        int saved_ = errno;                                                           \
        leave_all(1);                                                                 \
        vmsp_relay_exec_failed(&relays_);                                             \
        errno = saved_;                                                               \
        return result_;                                                               \
    } while (0)

int execve(const char *path, char *const argv[], char *const envp[]) {
    WITH_INHERITED_IF(faccessat(AT_FDCWD, path, X_OK, AT_EACCESS) == 0, envp, REAL(execve)(path, argv, env));
}

int execv(const char *path, char *const argv[]) { return execve(path, argv, environ); }

int execvpe(const char *file, char *const argv[], char *const envp[]) {
    WITH_INHERITED(envp, REAL(execvpe)(file, argv, env));
}

int execvp(const char *file, char *const argv[]) { return execvpe(file, argv, environ); }

int fexecve(int fd, char *const argv[], char *const envp[]) {
    WITH_INHERITED(envp, REAL(fexecve)(fd, argv, env));
}

int vmsp_execveat(int dirfd, const char *path, char *const argv[], char *const envp[], int flags) {
    WITH_INHERITED(envp, (int)REAL(syscall)(SYS_execveat, dirfd, path, argv, env, flags));
}

// glibc 2.34 and later: the system call alone, as its own execveat is.
int execveat(int dirfd, const char *path, char *const argv[], char *const envp[], int flags) {
    return vmsp_execveat(dirfd, path, argv, envp, flags);
}

static int preloads_us(char *const *envp) {
    for (size_t i = 0; envp && envp[i]; i++) {
        if (strncmp(envp[i], "LD_PRELOAD=", 11) == 0) return strstr(envp[i], "libvmsock-preload.so") != NULL;
    }
    return 0;
}

// posix_spawn runs in the parent until the clone: the child never held the connections, so nothing is left. The
// parent keeps its descriptors, so the relays' sockets are put in place by the new image's constructor.
typedef int (*spawn_fn)(pid_t *, const char *, const posix_spawn_file_actions_t *, const posix_spawnattr_t *,
                        char *const[], char *const[]);

// The LD_PRELOAD value of `envp`, or NULL.
static const char *preload_of(char *const *envp) {
    for (size_t i = 0; envp && envp[i]; i++) {
        if (strncmp(envp[i], "LD_PRELOAD=", 11) == 0) return envp[i] + 11;
    }
    return NULL;
}

// A program that will not load this library is spawned through vmsock-run (trampoline.c), which runs `program`
// with `argv` and `envp` once the library, preloaded into vmsock-run, has put the relays in place. Fills
// `runner_argv` (room for the arguments and 4 more) and `preload` (vmsock-run's LD_PRELOAD entry, this library
// alone); the program's own LD_PRELOAD goes as VMSOCK_SPAWN_PRELOAD (with_entry), which vmsock-run puts back.
static int through_runner(char *const argv[], char *const envp[], char *runner, char *program, char **runner_argv,
                          size_t argv_slots, char *preload, size_t capacity) {
    char library[4096];
    if (!vmsp_trampoline_paths(library, runner, 4096)) return 0;
    int n = snprintf(preload, capacity, "LD_PRELOAD=%s", library);
    if (n < 0 || (size_t)n >= capacity) return 0;
    size_t count = 0;
    runner_argv[count++] = runner;
    runner_argv[count++] = "--spawned";
    runner_argv[count++] = program;
    for (size_t i = 0; argv && argv[i] && count + 1 < argv_slots; i++) runner_argv[count++] = argv[i];
    runner_argv[count] = NULL;
    return 1;
}

static int spawn_with_inherited(spawn_fn real, int search, pid_t *pid, const char *program,
                                const posix_spawn_file_actions_t *actions, const posix_spawnattr_t *attributes,
                                char *const argv[], char *const envp[]) {
    char entry[8192], relayed[4096];
    struct vmsp_relays none = { 0 }, relays;
    if (vmsp_inside) return real(pid, program, actions, attributes, argv, envp);
    listeners_handed_on(actions);
    if (!inherited_entry(entry, sizeof entry, &none)) return real(pid, program, actions, attributes, argv, envp);
    // The relays' sockets are put in place by this library in the new image; a program that will not load it
    // runs through vmsock-run, which does (trampoline.c). Where neither can be, no relay is made.
    char runner[4096], path[4096], preload[8192];
    size_t argv_slots = env_count(argv) + 4;  // a NULL-terminated array, as envp
    char *runner_argv[argv_slots];
    int found = vmsp_trampoline_program(program, search, path, sizeof path);
    int ours = preloads_us(envp) && !(found && vmsp_program_skips_preload(path));
    int runs_through = !ours && found && through_runner(argv, envp, runner, path, runner_argv, argv_slots, preload,
                                                        sizeof preload);
    if (ours || runs_through) vmsp_relay_prepare_spawn(&relays, actions);
    else memset(&relays, 0, sizeof relays);
    int has_relays = relays.count && vmsp_relay_entry(&relays, relayed, sizeof relayed);
    size_t slots = env_count(envp) + 4;
    char *array[slots];
    // Through vmsock-run whenever the program receives one of our sockets: there the constructor ends any that
    // has no relay, which the program itself could not.
    int through = runs_through && relays.inherited > 0;
    const char *theirs = preload_of(envp);
    char saved[theirs ? strlen(theirs) + 32 : 1];
    saved[0] = 0;
    char *const *env = with_entry(envp, entry, has_relays ? relayed : NULL, through ? preload : NULL, saved, array,
                                  slots);
    int result;
    if (through) {
        vmsp_debug("posix_spawn: %s will not load vmsock-run's library: it runs through %s, which puts the "
                   "connections' relays in place", path, runner);
        result = REAL(posix_spawn)(pid, runner, actions, attributes, runner_argv, env);
    } else {
        result = real(pid, program, actions, attributes, argv, env);
    }
    vmsp_relay_spawned(&relays, result == 0 && has_relays, result == 0 && pid ? *pid : 0);
    return result;
}

int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *actions,
                const posix_spawnattr_t *attributes, char *const argv[], char *const envp[]) {
    return spawn_with_inherited(REAL(posix_spawn), 0, pid, path, actions, attributes, argv, envp);
}

int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *actions,
                 const posix_spawnattr_t *attributes, char *const argv[], char *const envp[]) {
    return spawn_with_inherited(REAL(posix_spawnp), 1, pid, file, actions, attributes, argv, envp);
}

// The list forms: the arguments gathered on the stack, then the vector forms above.
#define GATHER(first, args, argv, envp_out)                                           \
    size_t count_ = 1;                                                                \
    va_list args;                                                                     \
    va_start(args, first);                                                            \
    while (va_arg(args, char *)) count_++;                                            \
    va_end(args);                                                                     \
    char *argv[count_ + 1];                                                           \
    argv[0] = (char *)(first);                                                        \
    va_start(args, first);                                                            \
    for (size_t i_ = 1; i_ <= count_; i_++) argv[i_] = va_arg(args, char *);          \
    envp_out;                                                                         \
    va_end(args)

int execl(const char *path, const char *arg, ...) {
    GATHER(arg, args, argv, (void)0);
    return execve(path, argv, environ);
}

int execlp(const char *file, const char *arg, ...) {
    GATHER(arg, args, argv, (void)0);
    return execvpe(file, argv, environ);
}

int execle(const char *path, const char *arg, ...) {
    char *const *envp;
    GATHER(arg, args, argv, envp = va_arg(args, char *const *));
    return execve(path, argv, envp);
}

// MARK: In the new image's constructor

static int listed(const char *list, unsigned long long inode) {
    for (const char *at = list; *at;) {
        char *end;
        unsigned long long value = strtoull(at, &end, 10);
        if (end == at) return 0;
        if (value == inode) return 1;
        at = *end == ',' ? end + 1 : end;
    }
    return 0;
}

// A descriptor the old image held for a shared-memory socket becomes a socket whose peer is gone.
static void end_inherited(int fd) {
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
        // No descriptor left for one (the image inherited a full table): an unconnected socket takes its number
        // (the one just freed), so that reads fail (EINVAL) rather than return wake-up bytes as data, and the
        // number is not free for the program's next file to be taken for the connection.
        int flags = REAL(fcntl)(fd, F_GETFD);
        REAL(close)(fd);
        int unconnected = socket(AF_UNIX, SOCK_STREAM | (flags >= 0 && (flags & FD_CLOEXEC) ? SOCK_CLOEXEC : 0), 0);
        if (unconnected >= 0 && unconnected != fd) {
            REAL(dup3)(unconnected, fd, flags >= 0 && (flags & FD_CLOEXEC) ? O_CLOEXEC : 0);
            REAL(close)(unconnected);
        }
        if (unconnected < 0) {
            vmsp_debug("exec: fd %d was a shared-memory connection of the previous image: closed for this one (no "
                       "relay was made for it, and no socket could take its place)", fd);
        } else {
            vmsp_debug("exec: fd %d was a shared-memory connection of the previous image: unconnected for this one "
                       "(no relay was made for it, and no descriptor is left for a socket whose peer is gone)", fd);
        }
        return;
    }
    REAL(close)(pair[1]);
    int flags = REAL(fcntl)(fd, F_GETFD);
    REAL(dup3)(pair[0], fd, flags >= 0 && (flags & FD_CLOEXEC) ? O_CLOEXEC : 0);
    REAL(close)(pair[0]);
    vmsp_debug("exec: fd %d was a shared-memory connection of the previous image: ended for this one (no relay "
               "was made for it: the rings cannot cross exec)", fd);
}

// The relay socket VMSOCK_RELAYED ("inode:fd:inode,...") names for the socket `inode` (any, for 0), if this
// image has it (a file action may have closed or replaced it), from entry `*at` on; -1 at the end.
static int next_relay(const char **at, unsigned long long inode) {
    while (*at && **at) {
        char *end;
        unsigned long long socket_inode = strtoull(*at, &end, 10), relay_inode = 0;
        long fd = -1;
        if (*end == ':') fd = strtol(end + 1, &end, 10);
        if (*end == ':') relay_inode = strtoull(end + 1, &end, 10);
        *at = strchr(*at, ',');
        if (*at) (*at)++;
        struct stat info;
        if ((inode == 0 || socket_inode == inode) && fd >= 0 && fd <= 0x7fffffff && fstat((int)fd, &info) == 0 &&
            info.st_ino == relay_inode && S_ISSOCK(info.st_mode)) {
            return (int)fd;
        }
    }
    return -1;
}

// posix_spawn's child: the descriptor takes the relay's socket (its close-on-exec flag kept).
static void take_relay(int fd, int relay) {
    int flags = REAL(fcntl)(fd, F_GETFD);
    REAL(dup3)(relay, fd, flags >= 0 && (flags & FD_CLOEXEC) ? O_CLOEXEC : 0);
    vmsp_debug("exec: fd %d, a shared-memory connection of the previous image, is a TCP socket through a relay "
               "process in this one (vmsock-run cannot carry the rings across exec)", fd);
}

// One inherited descriptor: a socket VMSOCK_INHERITED lists takes its relay's socket, or ends. Whether it was one.
static int inherited(int fd, const char *list, const char *relays) {
    struct stat info;
    if (fstat(fd, &info) != 0 || !S_ISSOCK(info.st_mode) || !listed(list, (unsigned long long)info.st_ino)) return 0;
    const char *at = relays;
    int relay = next_relay(&at, (unsigned long long)info.st_ino);
    if (relay < 0 || relay == fd) end_inherited(fd);
    else take_relay(fd, relay);
    return 1;
}

void vmsp_exec_inherited(void) {
    const char *list = getenv("VMSOCK_INHERITED"), *relays = getenv("VMSOCK_RELAYED");
    if (!list) return;
    DIR *directory = opendir("/proc/self/fd");
    int no_proc = !directory && errno == ENOENT;
    if (directory) {
        int own = dirfd(directory);
        for (struct dirent *entry; (entry = readdir(directory));) {
            int fd = atoi(entry->d_name);
            if (entry->d_name[0] != '.' && fd != own) inherited(fd, list, relays);
        }
        closedir(directory);
    } else {
        // No descriptor left to list them: every number up to the limit is open, each asked in turn (a file
        // action may have copied one socket to several). Without /proc: until each listed socket was found once.
        int left = 1;
        for (const char *at = list; *at; at++) left += *at == ',';
        struct rlimit limit;
        rlim_t end = getrlimit(RLIMIT_NOFILE, &limit) == 0 ? limit.rlim_cur : 1024;
        for (int fd = 0; (!no_proc || left > 0) && (rlim_t)fd < end && fd < (1 << 20); fd++) {
            left -= inherited(fd, list, relays);
        }
    }
    // The relay sockets, in place or not: one whose connection this image did not get (a file action closed it)
    // must not keep that connection open here.
    const char *at = relays;
    for (int relay; (relay = next_relay(&at, 0)) != -1;) REAL(close)(relay);
    unsetenv("VMSOCK_INHERITED");
    unsetenv("VMSOCK_RELAYED");
}
