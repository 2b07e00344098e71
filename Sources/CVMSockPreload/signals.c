// Signals that arrive while a wait spins on the rings. The kernel ends a wait a handler interrupted with EINTR
// (poll, select and epoll always; a socket call unless the handler has SA_RESTART), and programs count on it: a
// signal handler sets a flag, the wait returns, the loop sees the flag (nginx's and redis's shutdown and reload).
// A wait here first spins on the rings in user space, where a handler that runs leaves no trace: the wait then
// slept in the kernel until some later event, perhaps never.
//
// So the program's handlers run through a trampoline of ours that counts them: sigaction, signal, bsd_signal and
// sysv_signal are interposed. The kernel gets the trampoline (with SA_SIGINFO added) for every handler of a
// signal that can interrupt a call; the program's handler and flags are kept here and are what sigaction reports
// back, so the program sees only what it set. SIG_DFL and SIG_IGN, and handlers of the synchronous fault signals
// (which never interrupt a call), go to the kernel unchanged. A wait notes the counts when it starts and looks at
// them as it spins and before it sleeps (`vmsp_signalled`). Not covered: sigset(3), and handlers installed with
// the raw rt_sigaction system call.
#include "preload.h"

#include <signal.h>
#include <string.h>

atomic_uint vmsp_signals_any, vmsp_signals_interrupting;

struct kept {
    _Atomic(void *) handler;  // the program's sa_handler or sa_sigaction; NULL: not ours (kernel has it all)
    atomic_int flags;         // the program's sa_flags
};
static struct kept kept[NSIG];

static int wrapped(int sig) {
    return sig > 0 && sig < NSIG && sig != SIGSEGV && sig != SIGBUS && sig != SIGILL && sig != SIGFPE &&
           sig != SIGTRAP && sig != SIGSYS && sig != SIGKILL && sig != SIGSTOP;
}

static void trampoline(int sig, siginfo_t *info, void *context) {
    struct kept *k = &kept[sig];
    int flags = atomic_load_explicit(&k->flags, memory_order_relaxed);
    void *handler = atomic_load_explicit(&k->handler, memory_order_acquire);
    atomic_fetch_add_explicit(&vmsp_signals_any, 1, memory_order_relaxed);
    if (!(flags & SA_RESTART)) atomic_fetch_add_explicit(&vmsp_signals_interrupting, 1, memory_order_relaxed);
    if (!handler) return;  // replaced meanwhile by SIG_DFL or SIG_IGN: the kernel has that now
    if (flags & SA_SIGINFO) ((void (*)(int, siginfo_t *, void *))handler)(sig, info, context);
    else ((void (*)(int))handler)(sig);
}

int vmsp_signalled(struct vmsp_signal_mark mark, int any) {
    if (any) return atomic_load_explicit(&vmsp_signals_any, memory_order_relaxed) != mark.any;
    return atomic_load_explicit(&vmsp_signals_interrupting, memory_order_relaxed) != mark.interrupting;
}

struct vmsp_signal_mark vmsp_signal_mark(void) {
    return (struct vmsp_signal_mark){
        .any = atomic_load_explicit(&vmsp_signals_any, memory_order_relaxed),
        .interrupting = atomic_load_explicit(&vmsp_signals_interrupting, memory_order_relaxed),
    };
}

int sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
    if (vmsp_inside || !wrapped(sig)) return REAL(sigaction)(sig, act, old);
    struct kept *k = &kept[sig];
    struct sigaction previous;
    void *previous_handler = atomic_load_explicit(&k->handler, memory_order_acquire);
    int previous_flags = atomic_load_explicit(&k->flags, memory_order_relaxed);
    int result;
    if (!act) {
        result = REAL(sigaction)(sig, NULL, &previous);
    } else if (act->sa_handler == SIG_DFL || act->sa_handler == SIG_IGN) {
        result = REAL(sigaction)(sig, act, &previous);
        if (result == 0) atomic_store_explicit(&k->handler, NULL, memory_order_release);
    } else {
        // The program's handler is kept before the kernel can call the trampoline for it.
        atomic_store_explicit(&k->flags, act->sa_flags, memory_order_relaxed);
        atomic_store_explicit(&k->handler, (void *)act->sa_handler, memory_order_release);
        struct sigaction ours = *act;
        ours.sa_sigaction = trampoline;
        ours.sa_flags |= SA_SIGINFO;
        result = REAL(sigaction)(sig, &ours, &previous);
        if (result != 0) {
            atomic_store_explicit(&k->handler, previous_handler, memory_order_release);
            atomic_store_explicit(&k->flags, previous_flags, memory_order_relaxed);
        }
    }
    if (result == 0 && old) {
        *old = previous;
        // The kernel had the trampoline: the program set what we kept.
        if (previous.sa_sigaction == trampoline && previous_handler) {
            old->sa_handler = (void (*)(int))previous_handler;
            // What the kernel keeps (SA_RESTORER, which libc adds), with the program's own SA_SIGINFO.
            old->sa_flags = (previous.sa_flags & ~SA_SIGINFO) | (previous_flags & SA_SIGINFO);
        }
    }
    return result;
}

// signal(2) as glibc's (BSD semantics): the handler stays, and interrupted calls restart.
static sighandler_t set_handler(int sig, sighandler_t handler, int flags) {
    struct sigaction act, old;
    memset(&act, 0, sizeof act);
    act.sa_handler = handler;
    act.sa_flags = flags;
    sigemptyset(&act.sa_mask);
    if (sigaction(sig, &act, &old) != 0) return SIG_ERR;
    return old.sa_handler;
}

sighandler_t signal(int sig, sighandler_t handler) { return set_handler(sig, handler, SA_RESTART); }
sighandler_t bsd_signal(int sig, sighandler_t handler) { return set_handler(sig, handler, SA_RESTART); }
// System V semantics: the handler runs once, without blocking its own signal, and calls are not restarted.
sighandler_t sysv_signal(int sig, sighandler_t handler) {
    return set_handler(sig, handler, SA_RESETHAND | SA_NODEFER);
}
