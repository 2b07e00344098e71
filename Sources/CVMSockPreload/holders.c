// Which processes hold a shared-memory socket, so that only the last one's close ends the connection (as only
// the last close of a TCP socket sends FIN). A holder is named by its pid and its start time, so that a pid
// the kernel reused for another process never passes for a holder. A process joins when it is created or
// forked (in the atfork child handler), and leaves at its last close; one that exits without closing (a
// BGSAVE child's _exit) or was killed is pruned when a close looks for the last holder: /proc says it is gone
// or a zombie. None of this is on the data path: it runs at attach, fork and close.
#include "preload.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint64_t self_id;  // 0: not known yet (or forked since)

// What /proc says of a process that it cannot tell (no descriptor left to read it): it counts as alive,
// since taking a live holder for gone would end a connection another process still uses. A process short of
// descriptors that closed or exec'd ended its parent's connections that way.
#define START_UNKNOWN UINT64_MAX

// The state and start time of a process from /proc/PID/stat; 0 when it is gone or a zombie, START_UNKNOWN when
// /proc cannot say.
static uint64_t start_time(pid_t pid) {
    char path[32], text[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT || errno == ESRCH ? 0 : START_UNKNOWN;
    ssize_t n = REAL(read)(fd, text, sizeof text - 1);
    REAL(close)(fd);
    if (n <= 0) return 0;
    text[n] = 0;
    // "pid (comm) S ppid ...": the command may hold spaces and parentheses, so fields count from the last ')'.
    char *at = strrchr(text, ')');
    if (!at || at[1] != ' ') return 0;
    char state = at[2];
    if (state == 'Z' || state == 'X' || state == 'x') return 0;
    // at is the ')' ending field 2; each step lands on the space before the next field, up to field 22, the
    // start time.
    for (int field = 3; field <= 22; field++) {
        at = strchr(at + 1, ' ');
        if (!at) return 0;
    }
    return strtoull(at + 1, NULL, 10);
}

static uint64_t holder_id(pid_t pid, uint64_t start) { return (start << 22) | ((uint64_t)pid & 0x3fffff); }

// Our holder id; 0 while /proc cannot say our start time (then we cannot be told among the holders yet).
static uint64_t self(void) {
    if (!self_id) {
        pid_t pid = getpid();
        uint64_t start = start_time(pid);
        if (start != START_UNKNOWN) self_id = holder_id(pid, start);
    }
    return self_id;
}

static int alive(uint64_t id) {
    pid_t pid = (pid_t)(id & 0x3fffff);
    uint64_t start = start_time(pid);
    return start == START_UNKNOWN || (start != 0 && holder_id(pid, start) == id);
}

void vmsp_holders_forget_self(void) { self_id = 0; }

int vmsp_holders_is_self(void) { return self_id != 0 && (pid_t)(self_id & 0x3fffff) == (getpid() & 0x3fffff); }

void vmsp_holders_init(struct vmsp_conn *c) {
    uint64_t id = self();
    atomic_store(&c->holders[0], id);
    atomic_store(&c->holder_slots, 1);
    if (!id) atomic_store(&c->holders_lost, 1);  // not told (see `add`)
}

static int take_free_slot(struct vmsp_conn *c, uint64_t id) {
    int slots = atomic_load(&c->holder_slots);
    for (int i = 0; i < slots; i++) {
        uint64_t expected = 0;
        if (atomic_compare_exchange_strong(&c->holders[i], &expected, id)) return 1;
    }
    // A new slot: claimed by bumping the count, then written (a scan may see it as 0 for a moment: free).
    while (slots < VMSP_HOLDERS) {
        if (atomic_compare_exchange_weak(&c->holder_slots, &slots, slots + 1)) {
            uint64_t expected = 0;
            if (atomic_compare_exchange_strong(&c->holders[slots], &expected, id)) return 1;
        }
    }
    return 0;
}

static void prune_dead(struct vmsp_conn *c) {
    int slots = atomic_load(&c->holder_slots);
    for (int i = 0; i < slots; i++) {
        uint64_t id = atomic_load(&c->holders[i]);
        if (id && !alive(id)) atomic_compare_exchange_strong(&c->holders[i], &id, 0);
    }
}

static int holds(struct vmsp_conn *c, uint64_t id) {
    int slots = atomic_load(&c->holder_slots);
    for (int i = 0; i < slots; i++) if (atomic_load(&c->holders[i]) == id) return 1;
    return 0;
}

static void add(struct vmsp_conn *c, uint64_t id) {
    if (id && (holds(c, id) || take_free_slot(c, id))) return;
    prune_dead(c);
    if (id && take_free_slot(c, id)) return;
    // More live holders than slots, or one /proc could not name (id 0): the last close can no longer be told, so
    // no close ends the connection early; the kernel's FIN after the last process closes the socket still does.
    atomic_store(&c->holders_lost, 1);
}

void vmsp_holders_add_self(struct vmsp_conn *c) { add(c, self()); }

void vmsp_holders_add_child(struct vmsp_conn *c, pid_t child) {
    uint64_t start = start_time(child);
    if (start) add(c, start == START_UNKNOWN ? 0 : holder_id(child, start));  // 0: it is gone already (or a zombie)
}

int vmsp_holders_leave(struct vmsp_conn *c) {
    uint64_t id = self();
    if (!id) return 1;  // we cannot be told among them (`add` marked the holders lost)
    int slots = atomic_load(&c->holder_slots);
    for (int i = 0; i < slots; i++) {  // every slot: the parent and the child may both have added the child
        uint64_t expected = id;
        atomic_compare_exchange_strong(&c->holders[i], &expected, 0);
    }
    // We left first, then look: of two holders closing at once, at least one sees the other gone.
    if (atomic_load(&c->holders_lost)) return 1;
    // A fork under way (the child not counted yet) gets the socket too: as TCP, this close is not the last.
    if (atomic_load(&vmsp_forks_in_flight) > 0) return 1;
    int others = 0;
    for (int i = 0; i < slots; i++) {
        uint64_t other = atomic_load(&c->holders[i]);
        if (!other) continue;
        if (alive(other)) { others = 1; continue; }
        atomic_compare_exchange_strong(&c->holders[i], &other, 0);
    }
    return others;
}

int vmsp_holders_others(struct vmsp_conn *c) {
    uint64_t id = self();
    int slots = atomic_load(&c->holder_slots);
    for (int i = 0; i < slots; i++) {
        uint64_t other = atomic_load(&c->holders[i]);
        if (other && other != id && alive(other)) return 1;
    }
    return atomic_load(&c->holders_lost);
}
