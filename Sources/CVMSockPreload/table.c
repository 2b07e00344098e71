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

_Atomic(struct vmsp_conn *) *vmsp_table;
atomic_uchar *vmsp_listening;
int vmsp_table_size;

static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static struct vmsp_conn *live;
static struct vmsp_conn *retired;

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
    if (table == MAP_FAILED || listening == MAP_FAILED) return;  // then nothing is ever ours: plain TCP
    vmsp_table = table;
    vmsp_listening = listening;
    vmsp_table_size = (int)size;
}

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

struct vmsp_conn *vmsp_conn_new(const vmsp_link_info *info, int nonblocking) {
    struct vmsp_conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->local = info->local_base;
    c->peer = info->peer_base;
    c->tx_cap = info->local_capacity;
    c->rx_cap = info->peer_capacity;
    c->control_fd = info->control_fd;
    c->space_bell_fd = info->space_bell_fd;
    c->peer_space_bell_fd = info->peer_space_bell_fd;
    c->owner = info->owner;
    atomic_init(&c->users, 1);
    atomic_init(&c->nonblocking, nonblocking);
    c->last_rung = ~(uint64_t)0;
    pthread_mutex_init(&c->rx_lock, NULL);
    pthread_mutex_init(&c->tx_lock, NULL);
    pthread_mutex_lock(&live_lock);
    c->next_live = live;
    if (live) live->prev_live = c;
    live = c;
    pthread_mutex_unlock(&live_lock);
    return c;
}

void vmsp_install(int fd, struct vmsp_conn *c) {
    if ((unsigned)fd >= (unsigned)vmsp_table_size) return;
    atomic_fetch_add(&c->refs, 1);
    struct vmsp_conn *old = atomic_exchange(&vmsp_table[fd], c);
    if (old) {  // the descriptor was replaced under us (dup2 onto it): that one loses a name
        vmsp_drop(old);
    }
}

struct vmsp_conn *vmsp_remove(int fd) {
    if ((unsigned)fd >= (unsigned)vmsp_table_size) return NULL;
    return atomic_exchange(&vmsp_table[fd], NULL);
}

struct vmsp_conn *vmsp_enter(int fd) {
    struct vmsp_conn *c = vmsp_lookup(fd);
    if (!c) return NULL;
    // The struct itself is freed only long after it left the table (see vmsp_leave), so this increment is safe;
    // a connection being torn down (users already 0) is not entered.
    int users = atomic_load(&c->users);
    do {
        if (users <= 0) return NULL;
    } while (!atomic_compare_exchange_weak(&c->users, &users, users + 1));
    return c;
}

// Frees connections retired more than ten seconds ago: a thread that read a table slot just before the
// connection left it has long finished its increment by then.
static void free_old_retired(void) {
    int64_t limit = now_ns() - 10LL * 1000000000;
    struct vmsp_conn **link = &retired;
    while (*link) {
        struct vmsp_conn *c = *link;
        if (c->retired_at < limit) {
            *link = c->next_retired;
            pthread_mutex_destroy(&c->rx_lock);
            pthread_mutex_destroy(&c->tx_lock);
            free(c);
        } else {
            link = &c->next_retired;
        }
    }
}

void vmsp_leave(struct vmsp_conn *c) {
    if (atomic_fetch_sub(&c->users, 1) != 1) return;
    // Last user: nothing in this process touches the rings any more.
    pthread_mutex_lock(&live_lock);
    if (c->prev_live) c->prev_live->next_live = c->next_live; else live = c->next_live;
    if (c->next_live) c->next_live->prev_live = c->prev_live;
    c->retired_at = now_ns();
    c->next_retired = retired;
    retired = c;
    free_old_retired();
    pthread_mutex_unlock(&live_lock);
    int inside = vmsp_inside;
    vmsp_inside = 1;
    vmsock_preload_release(c->owner);  // unmaps, closes the control socket and the bells
    vmsp_inside = inside;
}

void vmsp_before_last_close(struct vmsp_conn *c, int fd) {
    if (atomic_load(&c->refs) != 1 || atomic_load(&c->forked)) return;
    // Our "closed" bit first: a peer writer then fails with EPIPE instead of filling a ring nobody reads.
    __atomic_or_fetch((uint32_t *)(c->local + 640), 4u, __ATOMIC_SEQ_CST);
    // Wake-up bytes left unread would make the kernel answer our close with RST instead of FIN.
    vmsp_drain_wakeups(c, fd);
}

void vmsp_drop(struct vmsp_conn *c) {
    if (atomic_fetch_sub(&c->refs, 1) == 1) vmsp_leave(c);  // the table's user reference
}

// The atfork handlers: the list is locked across fork, so both processes see it whole.
void vmsp_live_lock(void) { pthread_mutex_lock(&live_lock); }
void vmsp_live_unlock(void) { pthread_mutex_unlock(&live_lock); }

void vmsp_mark_all_forked(void) {
    for (struct vmsp_conn *c = live; c; c = c->next_live) atomic_store(&c->forked, 1);
}
