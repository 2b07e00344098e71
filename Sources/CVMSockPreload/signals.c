// Signals that arrive while a wait spins on the rings. The kernel ends a wait a handler interrupted with EINTR
// (poll, select and epoll always; a socket call unless the handler has SA_RESTART), and programs count on it: a
// signal handler sets a flag, the wait returns, the loop sees the flag (nginx's and redis's shutdown and reload).
// A wait here first spins on the rings in user space, where a handler that runs leaves no trace: the wait then
// slept in the kernel until some later event, perhaps never.
//
// So the program's handlers run through a trampoline of ours that counts them: sigaction, signal, bsd_signal,
// sysv_signal, sigset and sigignore are interposed (libc's own call sigaction inside libc, out of our reach). The kernel gets the trampoline (with SA_SIGINFO added) for every handler of a
// signal that can interrupt a call; the program's handler and flags are kept here and are what sigaction reports
// back, so the program sees only what it set. SIG_DFL and SIG_IGN, and handlers of the synchronous fault signals
// (which never interrupt a call), go to the kernel unchanged. The counts are per thread: a handler runs on the
// thread the kernel picked, and only that thread's call would have been interrupted. A wait notes its thread's
// counts when it starts and looks at them as it spins and before it sleeps (`vmsp_signalled`). Not covered:
// handlers installed with the raw rt_sigaction system call.
#include "preload.h"

#include <errno.h>
#include <signal.h>
#include <string.h>

#ifndef SA_RESTORER
#define SA_RESTORER 0x04000000  // the kernel's; libc sets it on every handler and hides the name
#endif

// This thread's handlers so far: all, and those without SA_RESTART. Initial-exec TLS: a plain load and store,
// safe in a handler (a dynamic TLS access may allocate on a thread's first use).
static __thread unsigned signals_any __attribute__((tls_model("initial-exec")));
static __thread unsigned signals_interrupting __attribute__((tls_model("initial-exec")));
_Static_assert(ATOMIC_INT_LOCK_FREE == 2 && ATOMIC_POINTER_LOCK_FREE == 2, "the handler table is read in handlers");

struct kept {
    _Atomic(void *) handler;  // the program's sa_handler or sa_sigaction; NULL: not ours (kernel has it all)
    atomic_int flags;         // the program's sa_flags
};
static struct kept kept[NSIG];

static int wrapped(int sig) {
    return sig > 0 && sig < NSIG && !vmsp_is_fault_signal(sig) && sig != SIGKILL && sig != SIGSTOP;
}

static void trampoline(int sig, siginfo_t *info, void *context) {
    struct kept *k = &kept[sig];
    int flags = atomic_load_explicit(&k->flags, memory_order_relaxed);
    void *handler = atomic_load_explicit(&k->handler, memory_order_acquire);
    signals_any++;
    if (!(flags & SA_RESTART)) signals_interrupting++;
    if (!handler) return;  // replaced meanwhile by SIG_DFL or SIG_IGN: the kernel has that now
    // Always the three-argument form: the kernel set all three (the trampoline has SA_SIGINFO), and a
    // one-argument handler ignores the others. So a handler and flags read apart never pair wrongly.
    ((void (*)(int, siginfo_t *, void *))handler)(sig, info, context);
}

int vmsp_signalled(struct vmsp_signal_mark mark, int any) {
    return any ? signals_any != mark.any : signals_interrupting != mark.interrupting;
}

struct vmsp_signal_mark vmsp_signal_mark(void) {
    return (struct vmsp_signal_mark){ .any = signals_any, .interrupting = signals_interrupting };
}

int vmsp_is_fault_signal(int sig) {
    return sig == SIGSEGV || sig == SIGBUS || sig == SIGILL || sig == SIGFPE || sig == SIGTRAP || sig == SIGSYS;
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
    if (handler == SIG_ERR) { errno = EINVAL; return SIG_ERR; }
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
sighandler_t ssignal(int sig, sighandler_t handler) { return set_handler(sig, handler, SA_RESTART); }
// System V semantics: the handler runs once, without blocking its own signal, and calls are not restarted. glibc's
// signal is __sysv_signal in a program built without _DEFAULT_SOURCE (strict ISO C).
sighandler_t sysv_signal(int sig, sighandler_t handler) {
    return set_handler(sig, handler, SA_RESETHAND | SA_NODEFER);
}
sighandler_t __sysv_signal(int sig, sighandler_t handler) { return sysv_signal(sig, handler); }

// siginterrupt(3): SA_RESTART off (1) or on (0) for the signal's handler, through sigaction above, so that what
// is kept stays what the kernel has.
int siginterrupt(int sig, int interrupt) {
    struct sigaction act;
    if (sigaction(sig, NULL, &act) != 0) return -1;
    if (interrupt) act.sa_flags &= ~SA_RESTART; else act.sa_flags |= SA_RESTART;
    act.sa_flags &= ~SA_RESTORER;  // libc adds its own
    return sigaction(sig, &act, NULL);
}

// sigset(3), System V: a handler with no flags (calls are not restarted), and the signal unblocked; SIG_HOLD
// blocks it instead. Returns SIG_HOLD when the signal was blocked before, else the previous disposition, as
// glibc's does.
sighandler_t sigset(int sig, sighandler_t disp) {
    sigset_t set, before;
    struct sigaction act, old;
    if (disp == SIG_ERR || sigemptyset(&set) != 0 || sigaddset(&set, sig) != 0) { errno = EINVAL; return SIG_ERR; }
    if (disp == SIG_HOLD) {
        if (sigprocmask(SIG_BLOCK, &set, &before) != 0) return SIG_ERR;
        if (sigismember(&before, sig)) return SIG_HOLD;
        if (sigaction(sig, NULL, &old) != 0) return SIG_ERR;
        return old.sa_handler;
    }
    memset(&act, 0, sizeof act);
    act.sa_handler = disp;
    sigemptyset(&act.sa_mask);
    if (sigaction(sig, &act, &old) != 0) return SIG_ERR;
    if (sigprocmask(SIG_UNBLOCK, &set, &before) != 0) return SIG_ERR;
    return sigismember(&before, sig) ? SIG_HOLD : old.sa_handler;
}

// sigignore(3): SIG_IGN through sigaction above, so that what is kept stays what the kernel has.
int sigignore(int sig) {
    struct sigaction act;
    memset(&act, 0, sizeof act);
    act.sa_handler = SIG_IGN;
    sigemptyset(&act.sa_mask);
    return sigaction(sig, &act, NULL);
}
