// The descriptor table and the life of a connection: which descriptors name it, who releases it, and when.
#include "preload.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

_Atomic(struct vmsp_ref *) *vmsp_table;
atomic_uchar *vmsp_listening, *vmsp_connect_began, *vmsp_library_fd;
int vmsp_table_size;
atomic_int vmsp_table_high;

static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static struct vmsp_ref *live;
// Refs whose connection left, oldest first (each retires at the tail), freed from the head once old enough.
static struct vmsp_ref *retired, *retired_tail;

// One pointer per descriptor number up to the hard limit (at most 2^20): reserved, not committed, so an
// untouched page costs nothing. A descriptor beyond it never gets shared memory (its connect stays TCP).
void vmsp_table_init(void) {
    if (vmsp_table) return;
    struct rlimit limit;
    size_t size = 1 << 16;
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_max != RLIM_INFINITY && limit.rlim_max > size) size = limit.rlim_max;
    if (size > (1 << 20)) size = 1 << 20;
    void *table = mmap(NULL, size * sizeof(void *), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    void *listening = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    void *began = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    void *library = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (table == MAP_FAILED || listening == MAP_FAILED || began == MAP_FAILED || library == MAP_FAILED) {
        return;  // nothing is ever ours: TCP
    }
    vmsp_library_fd = library;
    vmsp_table = table;
    vmsp_listening = listening;
    vmsp_connect_began = began;
    vmsp_table_size = (int)size;
}

// The shared part gets a page of its own, mapped MAP_SHARED: a fork then shares it instead of copying it.
static struct vmsp_conn *map_shared_conn(void) {
    size_t size = (sizeof(struct vmsp_conn) + 4095) & ~(size_t)4095;
    void *page = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED) return NULL;
    struct vmsp_conn *c = page;
    pthread_mutexattr_t attributes;
    pthread_mutexattr_init(&attributes);
    pthread_mutexattr_setpshared(&attributes, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attributes, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&c->rx_lock, &attributes);
    pthread_mutex_init(&c->tx_lock, &attributes);
    pthread_mutexattr_destroy(&attributes);
    return c;
}

static void unmap_shared_conn(struct vmsp_conn *c) {
    // The locks are not destroyed: another process may hold the connection and use them.
    munmap(c, (sizeof(struct vmsp_conn) + 4095) & ~(size_t)4095);
}

// A connection's link descriptors (its control socket and doorbells) are the library's: a program that closes
// every descriptor but a few (Python's subprocess in its child, a daemon) must not close them under a connection
// it keeps. close and close_range pass them over (interpose.c).
static void mark_link_fds(const struct vmsp_conn *c, unsigned char on) {
    int fds[] = { c->control_fd, c->space_bell_fd, c->peer_space_bell_fd, c->data_bell_fd, c->peer_data_bell_fd };
    for (int i = 0; i < 5; i++) {
        if ((unsigned)fds[i] < (unsigned)vmsp_table_size) atomic_store(&vmsp_library_fd[fds[i]], on);
    }
}

struct vmsp_ref *vmsp_conn_new(const vmsp_link_info *info, int nonblocking) {
    struct vmsp_ref *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    struct vmsp_conn *c = map_shared_conn();
    if (!c) { free(r); return NULL; }
    static _Atomic uint64_t serials;
    r->serial = atomic_fetch_add(&serials, 1) + 1;
    r->conn = c;
    c->local = info->local_base;
    c->peer = info->peer_base;
    c->tx_cap = info->local_capacity;
    c->rx_cap = info->peer_capacity;
    c->control_fd = info->control_fd;
    c->space_bell_fd = info->space_bell_fd;
    c->peer_space_bell_fd = info->peer_space_bell_fd;
    c->data_bell_fd = info->data_bell_fd;
    c->peer_data_bell_fd = info->peer_data_bell_fd;
    mark_link_fds(c, 1);
    r->owner = info->owner;
    atomic_init(&r->users, 1);
    atomic_init(&c->nonblocking, nonblocking);
    c->last_rung = ~(uint64_t)0;
    vmsp_holders_init(c);
    pthread_mutex_lock(&live_lock);
    r->next_live = live;
    if (live) live->prev_live = r;
    live = r;
    pthread_mutex_unlock(&live_lock);
    return r;
}

void vmsp_install(int fd, struct vmsp_ref *r) {
    if ((unsigned)fd >= (unsigned)vmsp_table_size) return;
    vmsp_note_state();
    atomic_fetch_add(&r->refs, 1);
    int high = atomic_load(&vmsp_table_high);
    while (fd > high && !atomic_compare_exchange_weak(&vmsp_table_high, &high, fd)) {}
    struct vmsp_ref *old = atomic_exchange(&vmsp_table[fd], r);
    if (old) {  // the descriptor was replaced under us (dup2 onto it): that one loses a name
        vmsp_drop(old);
    }
    if (fd <= 2) vmsp_stdio_adopt(fd);  // stdin, stdout or stderr now name a connection (stdio.c)
}

struct vmsp_ref *vmsp_remove(int fd) {
    if ((unsigned)fd >= (unsigned)vmsp_table_size) return NULL;
    return atomic_exchange(&vmsp_table[fd], NULL);
}

struct vmsp_ref *vmsp_enter(int fd) {
    struct vmsp_ref *r = vmsp_lookup(fd);
    if (!r) return NULL;
    // The ref itself is freed only long after it left the table (see vmsp_leave), so this increment is safe;
    // a connection being torn down (users already 0) is not entered.
    int users = atomic_load(&r->users);
    do {
        if (users <= 0) return NULL;
    } while (!atomic_compare_exchange_weak(&r->users, &users, users + 1));
    return r;
}

// Frees refs retired more than ten seconds ago: a thread that read a table slot just before the connection
// left it has long finished its increment by then. The shared page goes with the ref (close looks at it).
// The list is in retiring order, so this stops at the first that is too young: a close costs no walk over the
// thousands a busy server retires in ten seconds (it did, and closes slowed as they piled up).
static void free_old_retired(void) {
    int64_t limit = vmsp_now_ns() - 10LL * 1000000000;
    while (retired && retired->retired_at < limit) {
        struct vmsp_ref *r = retired;
        retired = r->next_retired;
        if (!retired) retired_tail = NULL;
        unmap_shared_conn(r->conn);
        free(r);
    }
}

void vmsp_leave(struct vmsp_ref *r) {
    if (atomic_fetch_sub(&r->users, 1) != 1) return;
    // Last user: nothing in this process touches the rings any more.
    if (r->brief_key && r->opener == getpid()) {
        // Bytes sent and received: the positions, which start at 0 (no call uses them any more).
        vmsp_brief_note(r->brief_key, vmsp_now_ns() - r->opened_ns, r->conn->tx_pos + r->conn->rx_pos);
    }
    pthread_mutex_lock(&live_lock);
    if (r->prev_live) r->prev_live->next_live = r->next_live; else live = r->next_live;
    if (r->next_live) r->next_live->prev_live = r->prev_live;
    r->retired_at = vmsp_now_ns();
    r->next_retired = NULL;
    if (retired_tail) retired_tail->next_retired = r; else retired = r;
    retired_tail = r;
    free_old_retired();
    pthread_mutex_unlock(&live_lock);
    mark_link_fds(r->conn, 0);
    if (atomic_load(&r->epoll_set_count)) vmsp_epoll_barrier(r);  // no scan of a set still reads the rings
    int inside = vmsp_inside;
    vmsp_inside = 1;
    // Unmaps this process's mappings and closes its link descriptors: a claimed link's are the C half's own.
    if ((uintptr_t)r->owner & 1) vmsp_claim_release((void *)((uintptr_t)r->owner & ~(uintptr_t)1));
    else vmsock_preload_release(r->owner);
    vmsp_inside = inside;
}

void vmsp_before_last_close(struct vmsp_ref *r, int fd) {
    if (atomic_load(&r->refs) != 1) return;
    // A process that still holds the socket (a forked sibling) keeps the connection, as TCP does: only the last
    // holder's close ends it.
    if (vmsp_holders_leave(r->conn)) return;
    // Our "closed" bit first: a peer writer then fails with EPIPE instead of filling a ring nobody reads.
    __atomic_or_fetch((uint32_t *)(r->conn->local + 640), 4u, __ATOMIC_SEQ_CST);
    // Wake-up bytes left unread would make the kernel answer our close with RST instead of FIN.
    vmsp_drain_wakeups(r->conn, fd);
}

void vmsp_drop(struct vmsp_ref *r) {
    if (atomic_fetch_sub(&r->refs, 1) == 1) vmsp_leave(r);  // the table's user reference
}

// A relay's clean-up (relay.c), in a process of one thread: the live connections (in the table or not: a name
// closed while a call still held it), into `out` (up to `capacity`; with repeats); the count, perhaps more.
size_t vmsp_live_connections(struct vmsp_conn **out, size_t capacity) {
    size_t n = 0;
    for (struct vmsp_ref *r = live; r; r = r->next_live, n++) {
        if (n < capacity) out[n] = r->conn;
    }
    return n;
}

// The atfork handlers: the list is locked across fork, so both processes see it whole.
void vmsp_live_lock(void) { pthread_mutex_lock(&live_lock); }
void vmsp_live_unlock(void) { pthread_mutex_unlock(&live_lock); }

void vmsp_hold_all_after_fork(void) {
    vmsp_holders_forget_self();
    for (struct vmsp_ref *r = live; r; r = r->next_live) vmsp_holders_add_self(r->conn);
}

void vmsp_hold_all_for_child(pid_t child) {
    pthread_mutex_lock(&live_lock);
    for (struct vmsp_ref *r = live; r; r = r->next_live) vmsp_holders_add_child(r->conn, child);
    pthread_mutex_unlock(&live_lock);
}
