// posix_spawn file actions that copy one of our sockets to a number in the new image. A copy is not close-on-exec
// even when its original is (dup2's rule; an action from a descriptor to itself clears the flag too), so the new
// image inherits the connection, or the registered listener, through it. Rust's Command hands a socket to a
// child's standard input this way. The spawn wrapper (exec.c) then makes a relay for the connection, or marks the
// listener handed on, as for a socket that is not close-on-exec. The file actions object is opaque, so adddup2 is
// interposed and each copy of ours remembered here, by object, until the object is initialized again or destroyed.
// Lock-free (a fork may come at any moment): a slot is claimed with a compare-and-swap, filled, then published.
#include "preload.h"

#include <dlfcn.h>

enum { COPIES = 64 };
static const void *const claimed = (const void *)1;
static struct {
    _Atomic(const void *) actions;  // NULL: free; `claimed`: being filled
    int fd;
} copies[COPIES];

static void forget(const void *actions) {
    for (int i = 0; i < COPIES; i++) {
        const void *expected = actions;
        atomic_compare_exchange_strong(&copies[i].actions, &expected, NULL);
    }
}

static void remember(const void *actions, int fd) {
    for (int i = 0; i < COPIES; i++) {
        const void *expected = NULL;
        if (!atomic_compare_exchange_strong(&copies[i].actions, &expected, claimed)) continue;
        copies[i].fd = fd;
        atomic_store(&copies[i].actions, actions);
        return;
    }
    vmsp_debug("posix_spawn: more than %d file actions copy shared-memory sockets at once: a copy of fd %d is not "
               "recognized, and its connection ends for the new image", COPIES, fd);
}

int vmsp_spawn_copies(const posix_spawn_file_actions_t *actions, int fd) {
    if (!actions) return 0;
    for (int i = 0; i < COPIES; i++) {
        if (atomic_load(&copies[i].actions) == actions && copies[i].fd == fd) return 1;
    }
    return 0;
}

static int ours(int fd) {
    if (vmsp_lookup(fd)) return 1;
    return fd >= 0 && fd < atomic_load(&vmsp_listening_end) && fd < vmsp_table_size && atomic_load(&vmsp_listening[fd]);
}

typedef int (*one_fn)(posix_spawn_file_actions_t *);
typedef int (*dup2_fn)(posix_spawn_file_actions_t *, int, int);

// libc's definition of `name`, looked up once.
#define NEXT(type, name) \
    static type real_; \
    if (!real_) *(void **)&real_ = dlsym(RTLD_NEXT, name)

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
    if (result == 0 && !vmsp_inside && ours(fd)) remember(actions, fd);
    return result;
}
