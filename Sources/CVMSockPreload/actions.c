// posix_spawn file actions that copy one of our sockets to a number in the new image. A copy is not close-on-exec
// even when its original is (dup2's rule; an action from a descriptor to itself clears the flag too), so the new
// image inherits the connection, or the registered listener, through it: the usual way to hand a socket to a
// child's standard input with posix_spawn. The spawn wrapper (exec.c) then makes a relay for the connection, or
// marks the listener handed on, as for a socket that is not close-on-exec.
//
// And the actions that take a number away from the new image (a copy onto it, an open onto it, a close, a close
// of every number from one on): a connection there that no action copies is not the new image's (popen's pipe
// replaces the standard input or output), so no relay reads for it (ferry.c).
//
// The file actions object is opaque, so adddup2, addopen, addclose and addclosefrom_np are interposed and each
// such number remembered here by object: a copy's (of a socket, or of a descriptor not open yet: it may become one
// of ours before the spawn, when file actions are made once and used again), a number taken away when it is a
// socket now or a standard stream (a program that closes a range of unopened numbers one by one must not crowd
// the copies out), until the object is initialized again or
// destroyed. Lock-free, since a fork may come at any moment: a slot is claimed with a compare-and-swap, filled,
// then published. A later action of the same object that closes or replaces a copy still gets a relay made,
// which ends when the new image's constructor closes the relay socket it did not need (exec.c). Not covered:
// more than 256 numbers remembered at once (a program that never destroys its file actions).
#include "preload.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <sys/stat.h>

enum { COPIES = 256 };
enum kind { COPIED, TAKEN, TAKEN_FROM };  // copied from `fd`; `fd` taken away; every number from `fd` on taken
static const void *const claimed = (const void *)1;
static struct {
    _Atomic(const void *) actions;  // NULL: free; `claimed`: being filled
    int fd;
    enum kind kind;
} copies[COPIES];

static void forget(const void *actions) {
    for (int i = 0; i < COPIES; i++) {
        const void *expected = actions;
        atomic_compare_exchange_strong(&copies[i].actions, &expected, NULL);
    }
}

static void remember(const void *actions, int fd, enum kind kind) {
    for (int i = 0; i < COPIES; i++) {
        const void *expected = NULL;
        if (!atomic_compare_exchange_strong(&copies[i].actions, &expected, claimed)) continue;
        copies[i].fd = fd;
        copies[i].kind = kind;
        atomic_store(&copies[i].actions, actions);
        return;
    }
    vmsp_debug("posix_spawn: more than %d file actions that copy or take away descriptors are remembered at once: "
               "one on fd %d is not (if it copies a shared-memory connection, a close-on-exec one ends for the new "
               "image, and another one's relay reads only once the other holders closed it)", COPIES, fd);
}

int vmsp_spawn_copies(const posix_spawn_file_actions_t *actions, int fd) {
    if (!actions) return 0;
    for (int i = 0; i < COPIES; i++) {
        if (atomic_load(&copies[i].actions) == actions && copies[i].kind == COPIED && copies[i].fd == fd) return 1;
    }
    return 0;
}

int vmsp_spawn_takes(const posix_spawn_file_actions_t *actions, int fd) {
    if (!actions || vmsp_spawn_copies(actions, fd)) return 0;
    for (int i = 0; i < COPIES; i++) {
        if (atomic_load(&copies[i].actions) != actions) continue;
        if ((copies[i].kind == TAKEN && copies[i].fd == fd) || (copies[i].kind == TAKEN_FROM && fd >= copies[i].fd)) {
            return 1;
        }
    }
    return 0;
}

// Whether a copy from `fd` is worth remembering: a socket, or not open (it may be one by the spawn).
static int maybe_ours(int fd) {
    struct stat info;
    return fstat(fd, &info) != 0 || S_ISSOCK(info.st_mode);
}

// Whether taking `fd` away is worth remembering: a socket now, or a standard stream (popen's pipe replaces one).
static int taken_matters(int fd) {
    struct stat info;
    return (fd >= 0 && fd <= 2) || (fstat(fd, &info) == 0 && S_ISSOCK(info.st_mode));
}

typedef int (*one_fn)(posix_spawn_file_actions_t *);
typedef int (*dup2_fn)(posix_spawn_file_actions_t *, int, int);
typedef int (*close_fn)(posix_spawn_file_actions_t *, int);
typedef int (*open_fn)(posix_spawn_file_actions_t *, int, const char *, int, mode_t);

// libc's definition of `name`, looked up once.
#define NEXT(type, name) \
    static type real_; \
    if (!real_) *(void **)&real_ = dlsym(RTLD_NEXT, name); \
    if (!real_) return ENOSYS

int posix_spawn_file_actions_init(posix_spawn_file_actions_t *actions) {
    NEXT(one_fn, "posix_spawn_file_actions_init");
    forget(actions);
    return real_(actions);
}

int posix_spawn_file_actions_destroy(posix_spawn_file_actions_t *actions) {
    NEXT(one_fn, "posix_spawn_file_actions_destroy");
    forget(actions);
    return real_(actions);
}

int posix_spawn_file_actions_adddup2(posix_spawn_file_actions_t *actions, int fd, int newfd) {
    NEXT(dup2_fn, "posix_spawn_file_actions_adddup2");
    int result = real_(actions, fd, newfd);
    if (result != 0 || vmsp_inside) return result;
    if (maybe_ours(fd)) remember(actions, fd, COPIED);
    if (newfd != fd && taken_matters(newfd)) remember(actions, newfd, TAKEN);
    return result;
}

int posix_spawn_file_actions_addopen(posix_spawn_file_actions_t *actions, int fd, const char *path, int flags,
                                     mode_t mode) {
    NEXT(open_fn, "posix_spawn_file_actions_addopen");
    int result = real_(actions, fd, path, flags, mode);
    if (result == 0 && !vmsp_inside && taken_matters(fd)) remember(actions, fd, TAKEN);
    return result;
}

int posix_spawn_file_actions_addclose(posix_spawn_file_actions_t *actions, int fd) {
    NEXT(close_fn, "posix_spawn_file_actions_addclose");
    int result = real_(actions, fd);
    if (result == 0 && !vmsp_inside && taken_matters(fd)) remember(actions, fd, TAKEN);
    return result;
}

int posix_spawn_file_actions_addclosefrom_np(posix_spawn_file_actions_t *actions, int from) {
    NEXT(close_fn, "posix_spawn_file_actions_addclosefrom_np");
    int result = real_(actions, from);
    if (result == 0 && !vmsp_inside) remember(actions, from, TAKEN_FROM);
    return result;
}
