// The interposed epoll: a set that holds shared-memory connections (or other sets that may) answers for them from
// their rings, as the interposed poll does (wait.c), and sleeps in the kernel's set only after arming them.
//
// Every epoll set made through epoll_create or epoll_create1 has a record here. A connection (or a set inside a
// set) added to it gets a registration: the application's events and data are kept here, and the kernel's set
// holds the connection's TCP socket under a cookie of ours instead, edge-triggered, for EPOLLIN and EPOLLRDHUP
// only. So the kernel wakes a sleeper at each wake-up byte or hang-up, a stale wake-up byte never keeps it awake,
// and the application sees only its own data, with readiness from the rings (level, EPOLLET or EPOLLONESHOT, as
// it asked). A writer waiting for room adds the connection's space doorbell under a second cookie.
//
// A registration is "quiet" once armed with an empty ring: its writer will ring, so it is not looked at again
// until the kernel reports its cookie, a call changes it, or the application reads it empty and sleeps again.
// An idle connection therefore costs nothing per wait.
//
// A connection's registration that the application deletes is parked, not taken from the kernel's set: if the
// application adds the same connection again at the same number, it comes back without a system call. ae (redis,
// redis-benchmark) and libuv delete and add a descriptor at every turn of a request and reply, which would cost
// two kernel epoll_ctl calls each time. The kernel drops a parked registration when the socket is closed for
// good; until then its events are ignored. Cookies carry the slot's stamp, bumped whenever the slot gets a new
// kernel registration, so that events of a registration the slot no longer stands for (a parked one whose socket
// a dup kept open) are ignored too (25 bits: only a slot given 33 million new registrations meanwhile could
// mistake one for its own).
#include "preload.h"

#include <sys/syscall.h>

#include <errno.h>
#include <sched.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

enum { KIND_CONN = 1, KIND_SET = 2 };
// Cookies: a tag no pointer or small integer of the application's has (the top 16 bits of a user address are 0),
// the slot's stamp (bits 23 to 47), what the cookie is for (bits 21 and 22), and the registration's index (bits 0
// to 20: a set holds at most 2,097,152 registrations, twice the kernel's default limit of descriptors). The
// kernel's set may hold, per connection, its TCP socket (REG), its space doorbell (BELL: a wait for room) and its
// data doorbell (DATA_BELL: rung instead of the TCP socket while only such sets sleep on it; stream.c).
#define COOKIE_TAG 0x7ff5000000000000ull
#define COOKIE_MASK 0xffff000000000000ull
#define STAMP_MASK 0x1ffffffu
#define INDEX_BITS 21
#define MAX_REGS (1 << INDEX_BITS)
enum { COOKIE_REG = 0, COOKIE_BELL = 1, COOKIE_WAKER = 2, COOKIE_DATA_BELL = 3 };
static uint64_t cookie(int what, int index, uint32_t stamp) {
    return COOKIE_TAG | ((uint64_t)(stamp & STAMP_MASK) << (INDEX_BITS + 2)) | ((uint64_t)what << INDEX_BITS) |
           (uint64_t)index;
}

struct vmsp_epoll;

struct reg {
    int fd;                   // -1: a free slot
    int kind;
    struct vmsp_conn *conn;   // KIND_CONN: the connection fd named when added (a reference is not held)
    struct vmsp_epoll *set;   // KIND_SET
    // The connection's or the set's serial when added: what still_valid compares. Not the addresses: a closed
    // connection's page and a closed set's record are freed, and a new one at the same number often gets the
    // same address (haproxy's stale registration then looked valid, and its new connection was never armed).
    uint64_t serial;
    uint32_t events;          // the application's
    uint64_t data;            // the application's
    uint64_t last_in, last_out;   // what EPOLLET compares: the rings' marks at the last report
    uint32_t kernel_bits;     // EPOLLHUP, EPOLLERR, EPOLLRDHUP seen from the kernel: final
    uint32_t reported_bits;
    int disabled;             // EPOLLONESHOT fired: nothing until EPOLL_CTL_MOD
    int quiet;                // armed with an empty ring: the kernel will say when data comes
    int bell_added, tx_armed;
    int rx_armed;             // this registration counts as a sleeper on its connection (see stream.c's arm word)
    int data_bell_added;      // the connection's data doorbell is in the kernel's set under this slot's cookie
    int rx_bell;              // the arm in force listens on the data doorbell
    int idle;                 // sleeps in a row that found its ring empty: from 2 on, it stays armed when awake
    uint32_t stamp;           // in the slot's cookies: bumped at each new kernel registration of the slot
    // A free slot (fd -1) whose kernel registrations stay: the connection's serial (0: not parked) and number.
    uint64_t parked_serial;
    int parked_fd;
};

struct vmsp_epoll {
    pthread_mutex_t lock;
    int fd;
    uint64_t serial;          // which set this is, never reused within the process (unlike the record's address)
    struct vmsp_epoll *next_retired;
    atomic_int inside;        // waits in progress on it (any phase): a retired record outlives them
    int64_t retired_at;
    struct reg *regs;
    int count, capacity;      // slots in use (some free), allocated
    atomic_int live;          // registrations: 0 means every wait goes straight to the kernel
    int sleepers;             // waits asleep in the kernel now
    atomic_int kernel_sleepers;   // waits that went straight to the kernel (no registration of ours then)
    int waker;                // an eventfd in the kernel's set, to wake them when a call adds readiness (-1: none)
    int next_scan;            // where the next scan starts, so that a short events array starves no one
    int64_t last_kernel_ns;   // when a wait last asked the kernel's set
    struct vmsp_spin spin;    // how long its waits look at the rings before they sleep (spin.c)
};

static _Atomic(struct vmsp_epoll *) *_Atomic sets;
static atomic_int sets_high = -1;  // the highest descriptor a set was tracked at
// Per descriptor: added to one of our sets while it was no connection of ours (a socket nginx registers before
// it connects). Set by epoll_ctl, taken by `vmsp_epoll_adopt`; a stale mark costs one look, nothing more.
static atomic_uchar *_Atomic plain_added;

static struct vmsp_epoll *set_of(int fd) {
    if (!sets || (unsigned)fd >= (unsigned)vmsp_table_size) return NULL;
    return atomic_load_explicit(&sets[fd], memory_order_acquire);
}

// This thread's count of set locks held: a close made inside one (from a signal handler) skips the barrier, which
// would wait for itself.
static __thread int set_locks_held __attribute__((tls_model("initial-exec")));

static void set_lock(struct vmsp_epoll *set) {
    set_locks_held++;  // before: a handler that runs while the lock is held always sees the count
    pthread_mutex_lock(&set->lock);
}

static void set_unlock(struct vmsp_epoll *set) {
    pthread_mutex_unlock(&set->lock);
    set_locks_held--;
}

static void track(int fd) {
    if (fd < 0 || (unsigned)fd >= (unsigned)vmsp_table_size) return;
    if (!sets) {
        // Reserved like the descriptor table: untouched pages cost nothing.
        static pthread_mutex_t once = PTHREAD_MUTEX_INITIALIZER;
        pthread_mutex_lock(&once);
        if (!sets) {
            void *table = calloc((size_t)vmsp_table_size, sizeof *sets);
            if (table) atomic_store(&sets, (_Atomic(struct vmsp_epoll *) *)table);
        }
        pthread_mutex_unlock(&once);
        if (!sets) return;
    }
    if (!plain_added) {
        void *marks = calloc((size_t)vmsp_table_size, sizeof *plain_added);
        atomic_uchar *expected = NULL;
        if (marks && !atomic_compare_exchange_strong(&plain_added, &expected, marks)) free(marks);
    }
    struct vmsp_epoll *set = calloc(1, sizeof *set);
    if (!set) return;  // then this set is the kernel's alone: its connections report from their sockets
    for (int high = atomic_load(&sets_high); high < fd && !atomic_compare_exchange_weak(&sets_high, &high, fd);) {}
    vmsp_note_state();
    pthread_mutex_init(&set->lock, NULL);
    set->fd = fd;
    static _Atomic uint64_t serials;
    set->serial = atomic_fetch_add(&serials, 1) + 1;
    set->waker = -1;
    vmsp_epoll_replace(fd, set);
}

int epoll_create(int size) {
    int fd = REAL(epoll_create)(size);
    if (fd >= 0 && !vmsp_inside) track(fd);
    return fd;
}

int epoll_create1(int flags) {
    int fd = REAL(epoll_create1)(flags);
    if (fd >= 0 && !vmsp_inside) track(fd);
    return fd;
}

// A closed set's record (close, dup2 over it) is emptied at once (vmsp_epoll_replace) and freed ten seconds on
// (retire): a thread that read its address just before (a close's barrier, a set holding it) has long finished
// with it by then, and a wait still inside it (`inside`, counted for its whole call) keeps it until it leaves.
static pthread_mutex_t retired_lock = PTHREAD_MUTEX_INITIALIZER;
static struct vmsp_epoll *retired_head, *retired_tail;  // oldest first

static int asleep_in(struct vmsp_epoll *set) {
    set_lock(set);
    int busy = set->sleepers > 0 || atomic_load(&set->kernel_sleepers) > 0 || atomic_load(&set->inside) > 0;
    set_unlock(set);
    return busy;
}

static void retire(struct vmsp_epoll *set) {
    pthread_mutex_lock(&retired_lock);
    set->retired_at = vmsp_now_ns();
    set->next_retired = NULL;
    if (retired_tail) retired_tail->next_retired = set; else retired_head = set;
    retired_tail = set;
    int64_t limit = set->retired_at - 10LL * 1000000000;
    struct vmsp_epoll **link = &retired_head, *previous = NULL;
    while (*link && (*link)->retired_at < limit) {
        struct vmsp_epoll *old = *link;
        if (asleep_in(old)) { previous = old; link = &old->next_retired; continue; }  // kept till it wakes
        *link = old->next_retired;
        if (retired_tail == old) retired_tail = previous;
        pthread_mutex_destroy(&old->lock);
        free(old);
    }
    pthread_mutex_unlock(&retired_lock);
}

// The record at fd gives way to `set` (NULL: the set closes). The slot changes under the old record's lock, and
// the record is emptied in the same hold: a barrier that no longer finds it there knows that no scan of it is
// under way and none will come (a wait spinning in it held the lock while its slot was already empty).
void vmsp_epoll_replace(int fd, struct vmsp_epoll *set) {
    if (!sets || (unsigned)fd >= (unsigned)vmsp_table_size) return;
    for (;;) {
        struct vmsp_epoll *old = set_of(fd);
        if (!old) {
            if (!set || atomic_compare_exchange_strong(&sets[fd], &old, set)) return;
            continue;
        }
        set_lock(old);
        struct vmsp_epoll *expected = old;
        int swapped = atomic_compare_exchange_strong(&sets[fd], &expected, set);
        if (swapped) {
            if (old->waker >= 0) REAL(close)(old->waker);
            old->waker = -1;
            free(old->regs);
            old->regs = NULL;
            old->count = old->capacity = 0;
            atomic_store(&old->live, 0);
        }
        set_unlock(old);
        if (swapped) { retire(old); return; }
    }
}

// The last user of a connection registered in a set is about to unmap its rings (table.c). A scan that judged
// its registration valid before the close (collect, arm, a nested set's look: all under the set's lock) may
// still read them, from another thread: taking the lock of each live set it was added to once waits those scans
// out, and later ones find the registration invalid. Only its own sets: a close on one event loop's thread does
// not wait for another loop's spin. Not covered: a close from a signal handler that interrupted such a scan.
static void note_set(struct vmsp_ref *ref, struct vmsp_epoll *set) {
    int count = atomic_load(&ref->epoll_set_count);
    for (int i = 0; i < count && i < VMSP_EPOLL_SETS; i++) {
        if (atomic_load(&ref->epoll_sets[i].serial) == set->serial) return;
    }
    int i = atomic_fetch_add(&ref->epoll_set_count, 1);
    if (i >= VMSP_EPOLL_SETS) return;
    atomic_store(&ref->epoll_sets[i].fd, set->fd);
    atomic_store(&ref->epoll_sets[i].serial, set->serial);
}

static void wait_out(struct vmsp_epoll *set) {
    set_lock(set);
    set_unlock(set);
}

void vmsp_epoll_barrier(struct vmsp_ref *r) {
    if (!sets || set_locks_held) return;
    int count = atomic_load(&r->epoll_set_count), all = count > VMSP_EPOLL_SETS;
    for (int i = 0; i < count && i < VMSP_EPOLL_SETS && !all; i++) {
        all = atomic_load(&r->epoll_sets[i].serial) == 0;  // being noted: not known yet
    }
    if (all) {
        int high = atomic_load(&sets_high);
        for (int fd = 0; fd <= high; fd++) {
            struct vmsp_epoll *set = set_of(fd);
            if (set) wait_out(set);
        }
        return;
    }
    for (int i = 0; i < count; i++) {
        struct vmsp_epoll *set = set_of(atomic_load(&r->epoll_sets[i].fd));
        // Closed since (or its number reused): its record was emptied when its slot changed (vmsp_epoll_replace).
        if (set && set->serial == atomic_load(&r->epoll_sets[i].serial)) wait_out(set);
    }
}

// In a forked child (real.c): a thread the child does not have may have held a set's lock, or the retired
// list's, at the fork; the child's one thread makes them new, and its sets count no sleeper. Taking the locks
// before the fork instead deadlocked against a wait on a set that holds another set (outer, then inner), and made
// a fork wait for every spinning wait.
static void fresh_after_fork(struct vmsp_epoll *set) {
    pthread_mutex_init(&set->lock, NULL);
    set->sleepers = 0;
    atomic_store(&set->kernel_sleepers, 0);
    atomic_store(&set->inside, 0);
}

void vmsp_epoll_after_fork_child(void) {
    pthread_mutex_init(&retired_lock, NULL);
    set_locks_held = 0;
    for (struct vmsp_epoll *set = retired_head; set; set = set->next_retired) fresh_after_fork(set);
    if (!sets) return;
    int high = atomic_load(&sets_high);
    for (int fd = 0; fd <= high; fd++) {
        struct vmsp_epoll *set = set_of(fd);
        if (set) fresh_after_fork(set);
    }
}

// MARK: Registrations

static struct reg *find(struct vmsp_epoll *set, int fd) {
    for (int i = 0; i < set->count; i++) {
        if (set->regs[i].fd == fd) return &set->regs[i];
    }
    return NULL;
}

// Whether `fd` still names the connection a parked registration was for.
static int parked_for(const struct reg *r, int fd) {
    struct vmsp_ref *now = vmsp_lookup(fd);
    return now && now->serial == r->parked_serial;
}

// The parked registration of this connection at this number, if the set has one.
static struct reg *find_parked(struct vmsp_epoll *set, int fd, struct vmsp_ref *ref) {
    for (int i = 0; i < set->count; i++) {
        struct reg *r = &set->regs[i];
        if (r->fd < 0 && r->parked_serial == ref->serial && r->parked_fd == fd) return r;
    }
    return NULL;
}

// A free slot: a never parked one, else one whose parked connection its number no longer names (closed: the
// kernel dropped it, or a dup keeps it, and the new stamp makes its events ignored), else a new one.
static struct reg *new_reg(struct vmsp_epoll *set) {
    struct reg *reclaimable = NULL;
    for (int i = 0; i < set->count; i++) {
        struct reg *r = &set->regs[i];
        if (r->fd >= 0) continue;
        if (!r->parked_serial) return r;
        if (!reclaimable && !parked_for(r, r->parked_fd)) reclaimable = r;
    }
    if (reclaimable) {
        reclaimable->parked_serial = 0;
        return reclaimable;
    }
    if (set->count == MAX_REGS) return NULL;  // the cookie has no room for another index
    if (set->count == set->capacity) {
        int capacity = set->capacity ? set->capacity * 2 : 16;
        // Not realloc: a fork between its return and the store below would leave the child the freed array.
        struct reg *grown = malloc((size_t)capacity * sizeof *grown), *old = set->regs;
        if (!grown) return NULL;
        if (old) memcpy(grown, old, (size_t)set->count * sizeof *grown);
        set->regs = grown;
        set->capacity = capacity;
        free(old);
    }
    set->regs[set->count] = (struct reg){ .fd = -1 };
    return &set->regs[set->count++];
}

// Whether the registration still names what it was added for: the application may have closed the descriptor
// (the kernel then dropped it from its set) and the number may name something else by now, perhaps at the same
// address, hence the serials.
static int still_valid(struct reg *r) {
    if (r->kind == KIND_CONN) {
        struct vmsp_ref *now = vmsp_lookup(r->fd);  // one ref per connection in a process
        return now && now->serial == r->serial;
    }
    struct vmsp_epoll *now = set_of(r->fd);
    return now && now->serial == r->serial;
}

static void drop(struct vmsp_epoll *set, struct reg *r) {
    if (r->rx_armed && r->kind == KIND_CONN && still_valid(r)) vmsp_rx_disarm(r->conn, r->rx_bell);
    if (r->tx_armed && r->kind == KIND_CONN && still_valid(r)) vmsp_tx_disarm(r->conn);
    r->rx_armed = r->tx_armed = 0;
    r->fd = -1;
    r->conn = NULL;
    r->set = NULL;
    atomic_fetch_sub(&set->live, 1);
}

// A call made a registration possibly ready: wake the waits asleep in the kernel, so that they look.
static void wake_sleepers(struct vmsp_epoll *set) {
    if ((set->sleepers == 0 && atomic_load(&set->kernel_sleepers) == 0) || set->waker < 0) return;
    uint64_t one = 1;
    (void)REAL(write)(set->waker, &one, sizeof one);
}

static int ensure_waker(struct vmsp_epoll *set) {
    if (set->waker >= 0) return 0;
    int waker = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (waker < 0) return -1;
    struct epoll_event event = { .events = EPOLLIN | EPOLLET, .data.u64 = cookie(COOKIE_WAKER, 0, 0) };
    if (REAL(epoll_ctl)(set->fd, EPOLL_CTL_ADD, waker, &event) != 0) { REAL(close)(waker); return -1; }
    set->waker = waker;
    return 0;
}

// Adds a registration for `fd` (a connection, with its ref, or a set inside this one), taking the connection's
// parked one back if the set has it.
static struct reg *add_reg(struct vmsp_epoll *set, int fd, struct vmsp_ref *ref, struct vmsp_epoll *inner) {
    struct reg *r = ref ? find_parked(set, fd, ref) : NULL;
    if (r) {  // the kernel holds it still, with its space doorbell if it had one, and what it reported meanwhile
        *r = (struct reg){ .fd = fd, .kind = KIND_CONN, .conn = ref->conn, .serial = ref->serial, .stamp = r->stamp,
                           .bell_added = r->bell_added, .data_bell_added = r->data_bell_added,
                           .kernel_bits = r->kernel_bits };
        atomic_fetch_add(&set->live, 1);
        return r;
    }
    if (ref) note_set(ref, set);  // (a parked one's connection was noted when first added)
    r = new_reg(set);
    if (!r) { errno = ENOMEM; return NULL; }
    int index = (int)(r - set->regs);
    uint32_t stamp = (r->stamp + 1) & STAMP_MASK;
    struct epoll_event kernel = { .events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.u64 = cookie(COOKIE_REG, index, stamp) };
    if (REAL(epoll_ctl)(set->fd, EPOLL_CTL_ADD, fd, &kernel) != 0) {
        if (index == set->count - 1 && r->stamp == 0) set->count--;  // a slot with a past keeps its stamp
        return NULL;
    }
    *r = (struct reg){ .fd = fd, .kind = ref ? KIND_CONN : KIND_SET, .conn = ref ? ref->conn : NULL, .set = inner,
                       .serial = ref ? ref->serial : inner->serial,
                       .stamp = stamp };
    atomic_fetch_add(&set->live, 1);
    return r;
}

static int ctl_ours(struct vmsp_epoll *set, int op, int fd, struct epoll_event *event, struct vmsp_ref *ref,
                    struct vmsp_epoll *inner) {
    struct reg *r = find(set, fd);
    if (r && !still_valid(r)) { drop(set, r); r = NULL; }
    if (op == EPOLL_CTL_DEL) {
        if (!r) { errno = ENOENT; return -1; }
        if (r->kind == KIND_CONN) {  // parked: the kernel keeps it (and its space doorbell) for an add to come
            drop(set, r);
            r->parked_serial = ref->serial;
            r->parked_fd = fd;
            return 0;
        }
        drop(set, r);
        return REAL(epoll_ctl)(set->fd, EPOLL_CTL_DEL, fd, NULL);
    }
    if (!event) { errno = EFAULT; return -1; }
    if (op == EPOLL_CTL_MOD) {
        if (!r) { errno = ENOENT; return -1; }
    } else {
        if (r) { errno = EEXIST; return -1; }
        if (ensure_waker(set) != 0) return -1;
        r = add_reg(set, fd, ref, inner);
        if (!r) return -1;
    }
    r->events = event->events;
    r->data = event->data.u64;
    r->last_in = r->last_out = ~0ull;  // as the kernel, which re-checks readiness at ADD and MOD
    r->reported_bits = 0;
    r->disabled = 0;
    r->quiet = 0;
    r->idle = 0;
    wake_sleepers(set);
    return 0;
}

int epoll_ctl(int epfd, int op, int fd, struct epoll_event *event) {
    struct vmsp_epoll *set = vmsp_inside ? NULL : set_of(epfd);
    if (!set) return REAL(epoll_ctl)(epfd, op, fd, event);
    struct vmsp_ref *ref = vmsp_lookup(fd);
    struct vmsp_conn *conn = ref ? ref->conn : NULL;  // the page lives as long as the ref (10 s after it retired)
    struct vmsp_epoll *inner = conn ? NULL : set_of(fd);
    atomic_uchar *marks = atomic_load_explicit(&plain_added, memory_order_acquire);
    if (!conn && !inner && op == EPOLL_CTL_ADD && marks && (unsigned)fd < (unsigned)vmsp_table_size) {
        atomic_store_explicit(&marks[fd], 1, memory_order_relaxed);
    }
    if (!conn && !inner && atomic_load_explicit(&set->live, memory_order_relaxed) == 0) {
        return REAL(epoll_ctl)(epfd, op, fd, event);
    }
    set_lock(set);
    int result;
    if (conn || inner) {
        result = ctl_ours(set, op, fd, event, conn ? ref : NULL, inner);
    } else {
        // Not ours now; a registration left for this number named a connection since closed.
        struct reg *stale = find(set, fd);
        if (stale) drop(set, stale);
        result = REAL(epoll_ctl)(epfd, op, fd, event);
    }
    int saved = errno;
    set_unlock(set);
    errno = saved;
    return result;
}

// One line of /proc/self/fdinfo/EPFD: whether it is `fd`'s registration, and then its events and data.
static int registration_line(const char *line, int fd, uint32_t *events, uint64_t *data) {
    int target;
    unsigned mask;
    unsigned long long word;
    if (sscanf(line, "tfd: %d events: %x data: %llx", &target, &mask, &word) != 3 || target != fd) return 0;
    *events = mask;
    *data = word;
    return 1;
}

// The kernel's registration of `fd` in the set at `epfd` (its events and data), from /proc: whether there is one.
// The file has a line per registration, so it is read whole, a piece at a time.
static int kernel_registration(int epfd, int fd, uint32_t *events, uint64_t *data) {
    char path[64], text[4096];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", epfd);
    int file = open(path, O_RDONLY | O_CLOEXEC);
    if (file < 0) return 0;
    size_t kept = 0;  // the start of a line the last piece cut
    int found = 0;
    ssize_t n;
    while (!found && (n = REAL(read)(file, text + kept, sizeof text - 1 - kept)) > 0) {
        size_t length = kept + (size_t)n;
        text[length] = 0;
        char *line = text, *end;
        while (!found && (end = strchr(line, '\n'))) {
            *end = 0;
            found = registration_line(line, fd, events, data);
            line = end + 1;
        }
        kept = length - (size_t)(line - text);
        if (kept == sizeof text - 1) kept = 0;  // a line longer than the buffer is no registration line
        memmove(text, line, kept);
    }
    if (!found && kept) {
        text[kept] = 0;
        found = registration_line(text, fd, events, data);
    }
    REAL(close)(file);
    return found;
}

// `fd` has just become a connection of ours (connect): a set it was added to before, as a plain socket, holds it
// in the kernel's way, which would report wake-up bytes, not the rings. Each such registration becomes ours, with
// the events and data the application gave (nginx adds its upstream socket, edge-triggered, before connecting).
void vmsp_epoll_adopt(int fd) {
    atomic_uchar *marks = atomic_load_explicit(&plain_added, memory_order_acquire);
    if (!marks || (unsigned)fd >= (unsigned)vmsp_table_size || !atomic_exchange(&marks[fd], 0)) return;
    struct vmsp_ref *ref = vmsp_lookup(fd);
    if (!ref) return;
    int high = atomic_load(&sets_high);
    for (int epfd = 0; epfd <= high; epfd++) {
        struct vmsp_epoll *set = set_of(epfd);
        uint32_t events;
        uint64_t data;
        if (!set || !kernel_registration(epfd, fd, &events, &data)) continue;
        if ((data & COOKIE_MASK) == COOKIE_TAG) continue;  // already ours
        set_lock(set);
        struct reg *r = find(set, fd);
        if (r && !still_valid(r)) { drop(set, r); r = NULL; }  // left by a connection this number named before
        if (!r && REAL(epoll_ctl)(epfd, EPOLL_CTL_DEL, fd, NULL) == 0) {
            struct epoll_event event = { .events = events, .data.u64 = data };
            if (ctl_ours(set, EPOLL_CTL_ADD, fd, &event, ref, NULL) != 0) {
                vmsp_debug("fd %d: its epoll registration in set %d could not become the rings' (%s)", fd, epfd,
                           strerror(errno));
            }
        }
        set_unlock(set);
    }
}

// MARK: Readiness

static int set_has_ready(struct vmsp_epoll *set, int depth);

// The events a registration would report now, from its rings (and the kernel's final bits), honouring EPOLLET
// and EPOLLONESHOT; updates the marks when `report` is set. 0: nothing to report.
static uint32_t reg_events(struct reg *r, int report, int depth) {
    if (r->disabled) return 0;
    uint32_t want = r->events, got = 0;
    int edge = (want & EPOLLET) != 0;
    if (r->kind == KIND_SET) {
        if ((want & EPOLLIN) && set_has_ready(r->set, depth + 1)) got = EPOLLIN;
    } else {
        struct vmsp_conn *c = r->conn;
        int ended = (r->kernel_bits & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
        uint64_t in_mark = 0, out_mark = 0;
        if ((want & EPOLLIN) && (vmsp_rx_ready(c) || ended)) {
            in_mark = vmsp_rx_mark(c) ^ (ended ? 1ull << 62 : 0);
            if (!edge || in_mark != r->last_in) got |= EPOLLIN;
        }
        // A reader that died leaves its ring full: once the kernel says the connection ended, ask whether it did
        // (and make that an edge of its own).
        int dead = ended && (want & EPOLLOUT) && vmsp_peer_gone(c);
        if ((want & EPOLLOUT) && (vmsp_tx_ready(c) || dead)) {
            out_mark = vmsp_tx_mark(c) ^ (dead ? 1ull << 62 : 0);
            if (!edge || out_mark != r->last_out) got |= EPOLLOUT;
        }
        uint32_t final = r->kernel_bits & (EPOLLHUP | EPOLLERR | ((want & EPOLLRDHUP) ? EPOLLRDHUP : 0));
        if ((want & EPOLLRDHUP) && vmsp_rx_shut(c)) final |= EPOLLRDHUP;
        if (!edge || (final & ~r->reported_bits)) got |= final;
        if (report && got) {
            if (got & EPOLLIN) r->last_in = in_mark;
            if (got & EPOLLOUT) r->last_out = out_mark;
            r->reported_bits |= final;
        }
    }
    if (report && got && (want & EPOLLONESHOT)) r->disabled = 1;
    return got;
}

static int set_has_ready(struct vmsp_epoll *set, int depth) {
    if (depth > 5 || atomic_load(&set->live) == 0) return 0;  // the kernel allows 5 levels of sets in sets
    set_lock(set);
    int found = 0;
    for (int i = 0; i < set->count && !found; i++) {
        struct reg *r = &set->regs[i];
        // Quiet ones too: their kernel events wait in this set's queue, which only a wait on it takes.
        if (r->fd >= 0 && still_valid(r) && reg_events(r, 0, depth)) found = 1;
    }
    set_unlock(set);
    return found;
}

// Fills events with what the registrations report, starting where the last scan stopped. Under the set's lock.
static int collect(struct vmsp_epoll *set, struct epoll_event *events, int max) {
    int n = 0, count = set->count;
    for (int k = 0; k < count && n < max; k++) {
        int i = (set->next_scan + k) % count;
        struct reg *r = &set->regs[i];
        if (r->fd < 0 || r->quiet || r->disabled) continue;
        if (!still_valid(r)) { drop(set, r); continue; }
        uint32_t got = reg_events(r, 1, 0);
        if (got & EPOLLIN) r->idle = 0;
        if (got) events[n++] = (struct epoll_event){ .events = got, .data.u64 = r->data };
    }
    if (count > 0) set->next_scan = (set->next_scan + 1) % count;
    return n;
}

static int arm_set(struct vmsp_epoll *set, int depth);

// Puts the connection's data doorbell in the kernel's set under the registration's cookie. Another slot may hold
// it already (the connection added under a second number, or a registration whose number was closed while a dup
// keeps the connection): then this registration's arms ask for the TCP byte. Never taken over: the rings would
// then be reported under a slot that does not drain them.
static void add_data_bell(struct vmsp_epoll *set, struct reg *r) {
    int bell = r->conn->data_bell_fd;
    if (bell < 0) return;
    struct epoll_event kernel = { .events = EPOLLIN | EPOLLET,
                                  .data.u64 = cookie(COOKIE_DATA_BELL, (int)(r - set->regs), r->stamp) };
    if (REAL(epoll_ctl)(set->fd, EPOLL_CTL_ADD, bell, &kernel) == 0) r->data_bell_added = 1;
}

// Whether the last arm_set of this thread armed a connection for room (at any depth): its sleep is then bounded.
static __thread int armed_for_room;

// Before sleeping: arm every registration that is not quiet. Returns whether one became reportable meanwhile.
static int arm_reg(struct vmsp_epoll *set, struct reg *r, int depth) {
    if (r->fd < 0 || r->disabled || r->quiet) return 0;
    if (!still_valid(r)) { drop(set, r); return 0; }
    if (r->kind == KIND_SET) return (r->events & EPOLLIN) && arm_set(r->set, depth + 1);
    struct vmsp_conn *c = r->conn;
    int data = 0;
    if (r->events & EPOLLIN) {
        if (r->rx_armed) vmsp_rx_disarm(c, r->rx_bell);  // one sleeper per registration: the new arm replaces it
        if (!r->data_bell_added) add_data_bell(set, r);
        r->rx_bell = r->data_bell_added;  // asked for; the arm says whether it got it (the first sleeper only)
        data = vmsp_rx_arm(c, r->fd, &r->rx_bell);
        r->rx_armed = 1;
        if (!data && r->idle < 2) r->idle++;
    }
    if ((r->events & EPOLLOUT) && !vmsp_tx_arm(c)) {
        if (!r->bell_added) {
            int index = (int)(r - set->regs);
            struct epoll_event kernel = { .events = EPOLLIN | EPOLLET, .data.u64 = cookie(COOKIE_BELL, index, r->stamp) };
            if (REAL(epoll_ctl)(set->fd, EPOLL_CTL_ADD, c->space_bell_fd, &kernel) == 0) r->bell_added = 1;
        }
        r->tx_armed = r->bell_added;
        if (!r->bell_added) return 1;  // cannot sleep on it: look again (the caller bounds the sleep)
        armed_for_room = 1;
    }
    if (reg_events(r, 0, depth)) return 1;
    if (!data && !((r->events & EPOLLOUT) && !r->tx_armed)) r->quiet = 1;
    return 0;
}

static int arm_set(struct vmsp_epoll *set, int depth) {
    if (depth > 5 || atomic_load(&set->live) == 0) return 0;
    if (depth > 0) set_lock(set);
    int ready = 0;
    for (int i = 0; i < set->count; i++) ready |= arm_reg(set, &set->regs[i], depth);
    if (depth > 0) set_unlock(set);
    return ready;
}

// After waking: the arms of connections that were active lately come off (their writers then ring no more while
// this wait is awake); those idle for two sleeps stay armed and quiet, so that they cost nothing until they ring.
static void disarm_set(struct vmsp_epoll *set) {
    for (int i = 0; i < set->count; i++) {
        struct reg *r = &set->regs[i];
        if (r->fd < 0 || r->kind != KIND_CONN) continue;
        int valid = still_valid(r);
        if (r->tx_armed) {
            if (valid) vmsp_tx_disarm(r->conn);
            r->tx_armed = 0;
            r->quiet = 0;
        }
        if (r->rx_armed && (!r->quiet || r->idle < 2)) {
            if (valid) vmsp_rx_disarm(r->conn, r->rx_bell);
            r->rx_armed = 0;
            r->quiet = 0;
        }
    }
}

// A data doorbell rang for a registration: the one armed on it clears its rings, so that it never fills up. No
// other may: the ring may be for another set's sleeper, which the kernel has yet to tell (it looks at the
// doorbell again before it reports it).
static void drain_data_bell(struct reg *r) {
    if (r->fd >= 0 && r->kind == KIND_CONN && r->rx_armed && r->rx_bell && still_valid(r)) vmsp_data_bell_drain(r->conn);
}

// Takes the kernel's events: ours (cookies) mark their registration for a look, the application's are kept, in
// order, at the front. Returns how many are the application's.
static int absorb(struct vmsp_epoll *set, struct epoll_event *events, int got) {
    int kept = 0;
    for (int i = 0; i < got; i++) {
        uint64_t data = events[i].data.u64;
        if ((data & COOKIE_MASK) != COOKIE_TAG) { events[kept++] = events[i]; continue; }
        int what = (int)((data >> INDEX_BITS) & 3), index = (int)(data & (MAX_REGS - 1));
        uint32_t stamp = (uint32_t)(data >> (INDEX_BITS + 2)) & STAMP_MASK;
        if (what == COOKIE_WAKER) {
            uint64_t sink;
            (void)REAL(read)(set->waker, &sink, sizeof sink);
            continue;
        }
        if (index < 0 || index >= set->count || set->regs[index].stamp != stamp) continue;
        struct reg *r = &set->regs[index];
        if (r->fd < 0 && !r->parked_serial) continue;
        // A parked one keeps its final bits for when it comes back.
        if (what == COOKIE_REG) r->kernel_bits |= events[i].events & (EPOLLHUP | EPOLLERR | EPOLLRDHUP);
        if (what == COOKIE_DATA_BELL) drain_data_bell(r);
        r->quiet = 0;
    }
    return kept;
}

// MARK: epoll_wait and its kin

// Whether a registration has been active lately (not quiet): then a reply may come within the spin budget.
static int has_active(struct vmsp_epoll *set) {
    for (int i = 0; i < set->count; i++) {
        struct reg *r = &set->regs[i];
        if (r->fd >= 0 && !r->quiet && !r->disabled) return 1;
    }
    return 0;
}

// Looks at the rings for the spin budget before the caller arms and sleeps. Under the set's lock. The spin yields
// its core now and then (every 64 looks): on a machine with more busy threads than cores, the process that will
// answer may be waiting for it (nginx proxying to a TCP upstream with 2 workers went from 0.55x to 0.88x of plain
// TCP, nginx with wrk's 2 threads from 1.31x to 2.72x).
//
// The kernel's set holds the application's other descriptors (a proxy's upstream TCP socket, a listening socket),
// and a spin that looked only at the rings held their events back for its whole budget: nginx proxying to its own
// TCP upstream ran at about 0.7x of plain TCP. So the spin peeks at the set when it starts and every SPIN_PEEK_NS: a
// poll of the set's own descriptor, which says whether the kernel has an event ready without taking it. Then the
// spin ends and sets *kernel_ready, and the caller asks the set without waiting. The events are taken only there,
// as after a shorter spin: an earlier version that took them inside the spin made SwiftNIO's server see a
// readable event with nothing to read (NIOPosix asserts that it never does) in about 1 run of
// interop/preload-swiftnio's 200 short connections in 10, for a cause not found.
enum { SPIN_PEEK_NS = 5000 };

static int kernel_has_events(struct vmsp_epoll *set) {
    struct pollfd p = { .fd = set->fd, .events = POLLIN };
    return REAL(poll)(&p, 1, 0) == 1;
}

static int spin(struct vmsp_epoll *set, struct epoll_event *events, int max, int64_t deadline,
                struct vmsp_signal_mark mark, int peeks, int *kernel_ready) {
    if (deadline >= 0 && deadline <= vmsp_now_ns()) return 0;
    int64_t budget = vmsp_spin_budget(&set->spin);
    if (budget <= 0 || !has_active(set)) return 0;  // (VMSOCK_SPIN_US=0: no spin, and no peek either)
    int64_t now = vmsp_now_ns(), until = now + budget, peeked = now - SPIN_PEEK_NS;
    if (deadline >= 0 && deadline < until) until = deadline;
    for (int turn = 1;; turn++) {
        if (peeks && now - peeked >= SPIN_PEEK_NS) {
            peeked = now;
            if (kernel_has_events(set)) { *kernel_ready = 1; return 0; }
        }
        int n = collect(set, events, max);
        if (n > 0) return n;
        // The clock at every turn: a look at a set of many connections takes a microsecond or more (nginx's 50).
        now = vmsp_now_ns();
        if (now > until || vmsp_signalled(mark, 1)) return 0;
        if ((turn & 63) == 0) sched_yield();
        vmsp_relax();
    }
}

static int wait_with_rings(struct vmsp_epoll *set, struct epoll_event *events, int max, int64_t deadline,
                           const sigset_t *mask) {
    struct vmsp_signal_mark mark = vmsp_signal_mark();
    set_lock(set);
    int peeks = 1;  // a peek that led to nothing of the application's or the rings' is not made again in this call
    for (;;) {
        int n = collect(set, events, max), kernel_ready = 0;
        if (n == 0) n = spin(set, events, max, deadline, mark, peeks, &kernel_ready);
        // A handler ran while we spun: the kernel would have ended the wait with EINTR (signals.c).
        if (n == 0 && vmsp_signalled(mark, 1)) {
            set_unlock(set);
            errno = EINTR;
            return -1;
        }
        armed_for_room = 0;
        int unsure = n == 0 && !kernel_ready && arm_set(set, 0);
        if (unsure) n = collect(set, events, max);
        int sleeping = n == 0 && !kernel_ready;
        int timeout = sleeping ? vmsp_ms_until(deadline) : 0;
        // Armed one that looked ready and then did not report (a race with a reader, or no doorbell in the set):
        // sleep at most 1 ms before looking again.
        if (sleeping && unsure && (timeout < 0 || timeout > 1)) timeout = 1;
        // Armed for room: look again at least every VMSP_SPACE_RECHECK_MS (a wake-up for room can be lost to
        // another waiter on the same connection).
        if (sleeping && armed_for_room && (timeout < 0 || timeout > VMSP_SPACE_RECHECK_MS)) timeout = VMSP_SPACE_RECHECK_MS;
        if (sleeping) set->sleepers++;
        set_unlock(set);
        // Ready from the rings: the kernel's set is asked without waiting, and at most every 50 µs, so that a
        // wait the rings keep busy costs no system call and the application's other descriptors wait little.
        int ask = sleeping || kernel_ready || (n < max && vmsp_now_ns() - set->last_kernel_ns >= 50000);
        if (ask) set->last_kernel_ns = vmsp_now_ns();
        if (sleeping && vmsp_signalled(mark, 1)) {  // a handler ran while we armed
            set_lock(set);
            set->sleepers--;
            disarm_set(set);
            set_unlock(set);
            errno = EINTR;
            return -1;
        }
        int64_t slept_from = sleeping ? vmsp_now_ns() : 0;
        int got = ask ? REAL(epoll_pwait)(set->fd, events + n, max - n, timeout, mask) : 0;
        int saved = errno;
        int64_t slept = sleeping ? vmsp_now_ns() - slept_from : 0;
        set_lock(set);
        if (sleeping) set->sleepers--;
        // Events of ours go (marking their registrations for a look); the application's close up behind the
        // ones from the rings.
        int kept = got > 0 ? absorb(set, events + n, got) : 0;
        disarm_set(set);
        if (got < 0) {
            set_unlock(set);
            if (n > 0) return n;
            errno = saved;
            return -1;
        }
        n += kept;
        int from_rings = sleeping && n < max ? collect(set, events + n, max - n) : 0;
        n += from_rings;
        // What the sleep teaches the spin (a poll teaches nothing): only the rings' events could have come during
        // a spin; the application's other descriptors (a proxy's upstream TCP socket wakes it too) end a spin by
        // its peek, so a longer one would not see them sooner.
        if (sleeping && timeout != 0 && (n > 0 || got == 0)) vmsp_spin_slept(&set->spin, slept, from_rings > 0);
        if (n > 0 || (deadline >= 0 && vmsp_now_ns() >= deadline)) {
            set_unlock(set);
            return n;
        }
        if (kernel_ready) peeks = 0;
    }
}

// What a wait in the kernel alone got, without our cookies: the set may still hold kernel registrations of ours
// while it has no live one (a deleted connection stays parked, a closed number's dup keeps its socket), and
// those events are never the application's. -2: only ours (look at the rings, or wait again).
static int kernel_events(struct vmsp_epoll *set, struct epoll_event *events, int got) {
    int ours = 0;
    for (int i = 0; i < got && !ours; i++) ours = (events[i].data.u64 & COOKIE_MASK) == COOKIE_TAG;
    if (!ours) return got;
    set_lock(set);
    int kept = absorb(set, events, got);
    set_unlock(set);
    return kept > 0 ? kept : -2;
}

// A set with no connection of ours waits in the kernel alone. A connection added meanwhile wakes it (the waker),
// and then it goes on with the rings for the rest of the timeout.
static int wait_kernel_only(struct vmsp_epoll *set, struct epoll_event *events, int max, int timeout_ms,
                            const sigset_t *mask) {
    atomic_fetch_add(&set->kernel_sleepers, 1);
    int got = REAL(epoll_pwait)(set->fd, events, max, timeout_ms, mask);
    int saved = errno;
    atomic_fetch_sub(&set->kernel_sleepers, 1);
    if (got <= 0) { errno = saved; return got; }
    return kernel_events(set, events, got);
}

static int wait_in(struct vmsp_epoll *set, struct epoll_event *events, int max, int64_t deadline, int timeout_ms,
                   const sigset_t *mask) {
    if (atomic_load_explicit(&set->live, memory_order_relaxed) == 0) {
        int got = wait_kernel_only(set, events, max, timeout_ms, mask);
        if (got != -2) return got;
    }
    return wait_with_rings(set, events, max, deadline, mask);
}

// Counted in the set while it waits, in every phase: a record closed meanwhile is not freed under it (retire).
static void enter_set(struct vmsp_epoll *set) { atomic_fetch_add(&set->inside, 1); }

static int leave_set(struct vmsp_epoll *set, int result) {
    int saved = errno;
    atomic_fetch_sub(&set->inside, 1);
    errno = saved;
    return result;
}

static int wait_common(int epfd, struct epoll_event *events, int max, int64_t deadline, int timeout_ms,
                       const sigset_t *mask) {
    struct vmsp_epoll *set = vmsp_inside ? NULL : set_of(epfd);
    if (!set || max <= 0) return REAL(epoll_pwait)(epfd, events, max, timeout_ms, mask);
    enter_set(set);
    return leave_set(set, wait_in(set, events, max, deadline, timeout_ms, mask));
}

int epoll_wait(int epfd, struct epoll_event *events, int max, int timeout) {
    return wait_common(epfd, events, max, vmsp_deadline_after_ms(timeout), timeout, NULL);
}

int epoll_pwait(int epfd, struct epoll_event *events, int max, int timeout, const sigset_t *mask) {
    return wait_common(epfd, events, max, vmsp_deadline_after_ms(timeout), timeout, mask);
}

static int pwait2_in(struct vmsp_epoll *set, int epfd, struct epoll_event *events, int max,
                     const struct timespec *timeout, const sigset_t *mask) {
    int64_t deadline = vmsp_deadline_after(timeout);
    if (!set || atomic_load_explicit(&set->live, memory_order_relaxed) == 0 || max <= 0) {
        // (A connection added to this set while it sleeps here is seen at the next wait.)
        // Through the system call where libc has no wrapper (before glibc 2.35): the kernel's 8-byte mask.
        int got = REAL(epoll_pwait2) ? REAL(epoll_pwait2)(epfd, events, max, timeout, mask)
                                     : (int)REAL(syscall)(SYS_epoll_pwait2, epfd, events, max, timeout, mask, mask ? 8L : 0L);
        if (!set || got <= 0) return got;
        got = kernel_events(set, events, got);
        if (got != -2) return got;
    }
    return wait_with_rings(set, events, max, deadline, mask);
}

int epoll_pwait2(int epfd, struct epoll_event *events, int max, const struct timespec *timeout, const sigset_t *mask) {
    struct vmsp_epoll *set = vmsp_inside ? NULL : set_of(epfd);
    if (!set) return pwait2_in(NULL, epfd, events, max, timeout, mask);
    enter_set(set);
    return leave_set(set, pwait2_in(set, epfd, events, max, timeout, mask));
}
