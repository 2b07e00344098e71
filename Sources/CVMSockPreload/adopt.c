// A daemon's listeners. nginx with `daemon on` listens in its first process, which registers the listeners and
// so becomes their owner (its listener thread answers hellos, its claim socket hands links to forked workers);
// then it forks the daemon and exits. The registrations end with it, and the daemon's workers would claim links
// from a process that is gone: TCP throughout. So before its first fork, a daemon whose listeners' owner was its
// parent and has exited takes them over: it sets the listener state it copied aside and registers each listener
// it inherited as its own, so that its workers claim from it.
//
// Only a session leader does (a daemon calls setsid), only one whose parent was the owner and forked nobody else
// since it registered (the welcome book counts the owner's forks): another process sharing the listening sockets
// would claim from the old owner, find nobody, and take a connection this process welcomed for TCP. And only one
// that still holds an inherited listener, uses no io_uring, and whose family handed no listener on (exec,
// posix_spawn, SCM_RIGHTS: the old book's mark would be lost with it). A daemon forked twice is TCP as before (its first
// child takes over, then exits).
#include "preload.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

pid_t vmsp_forked_from;  // the parent at this process's fork (real.c's child handler sets it)

// Whether the owner, our parent at the fork, has exited: we were then given another parent (its descriptors,
// the registrations among them, were closed before that). A daemon gets here just after setsid, its first
// process on its way out, perhaps not yet there under load: we wait for the reparenting, at most 100 ms. Only
// the owner's first child since it registered, a session leader still holding the listener, ever waits, once.
static int parent_owner_gone(pid_t owner) {
    for (int i = 0; i < 100 && getppid() == owner; i++) {
        struct timespec pause = { 0, 1000000 };
        nanosleep(&pause, NULL);
    }
    return getppid() != owner;
}

static int holds_a_listener(void) {
    for (int fd = 0; fd < vmsp_table_size; fd++) {
        if (atomic_load(&vmsp_listening[fd])) return 1;
    }
    return 0;
}

// Why this process may not take the listeners over, or NULL when it may; "" when it is not a daemon's case at all
// (nothing to say).
static const char *refusal(pid_t owner, pid_t self) {
    static char other[96];
    if (getsid(0) != self || !holds_a_listener()) return "";  // not a daemon's case
    if (owner != vmsp_forked_from) {
        snprintf(other, sizeof other, "its parent at the fork, process %d, did not offer them", (int)vmsp_forked_from);
        return other;
    }
    if (!vmsp_child_setup_whole()) return "it was forked while another thread was inside the set-up";
    if (vmsp_welcome_book_forks() != 1) return "another child of that process shares the listener";
    if (vmsp_uring_reason()) return "io_uring is in use";
    // A mark the old book carries would be lost with it: a listener handed to another process still is.
    if (vmsp_welcome_book_closed()) return "a process of its family handed a listener on, or uses io_uring";
    if (!parent_owner_gone(owner)) return "that process has not exited";
    return NULL;
}

void vmsp_adopt_orphaned_listeners(void) {
    static int looked;
    pid_t owner = vmsp_listen_owner, self = getpid();
    if (looked || !atomic_load(&vmsp_forked_child) || owner == 0 || owner == self) return;
    looked = 1;
    const char *why = refusal(owner, self);
    if (why) {
        if (*why) {
            vmsp_debug("listeners of process %d, which offered shared memory: tcp only here (%s)", (int)owner, why);
        }
        return;
    }
    int saved = errno;
    vmsp_inside = 1;
    vmsock_preload_forget_copied_listeners();
    vmsp_inside = 0;
    atomic_store(&vmsp_claims_open, 0);  // the old owner's claim socket; ours opens with our first registration
    vmsp_welcome_book_renew();           // the old owner's counts: its answers, its links, its forks
    // This process owns the listeners from here: another thread's accept meanwhile finds no welcome (there is
    // none yet) and takes TCP, as it should, rather than claim from the old owner.
    vmsp_listen_owner = self;
    vmsp_listen_tried = self;
    for (int fd = 0; fd < vmsp_table_size; fd++) {
        if (!atomic_load(&vmsp_listening[fd])) continue;
        char reason[256] = "";
        int registered = vmsp_register_listener(fd, reason, sizeof reason);
        if (!registered) atomic_store(&vmsp_listening[fd], 0);
        vmsp_debug("listen fd %d: %s (process %d, which offered it, has exited; this one takes it over%s%s)", fd,
                   registered ? "shared memory offered" : "tcp only", (int)owner, registered ? "" : ": ", reason);
    }
    errno = saved;
}
