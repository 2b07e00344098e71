// Connections that end quickly. A new shared-memory connection costs several times a TCP one here (a handshake
// over the registration's socket, a memfd and mappings on each side, doorbells, four wake-ups: BENCHMARKS.md,
// "nginx as a reverse proxy"), so a connection that lives a few milliseconds and moves little is faster over TCP,
// and a program that makes nothing else (ab without keep-alive, nginx proxying without upstream keepalive) would
// run several times slower under vmsock-run than without it.
//
// So this process remembers, per destination, how its shared-memory connections there ended. After `brief_run`
// in a row that each lived under `brief_ns` and moved under `brief_bytes` (both directions), a connect there
// uses TCP. A connect there still tries shared memory now and then (a probe), so that a change is seen: after
// `probe_first` connects, then after twice as many each time a probe was brief again, up to `probe_most`. Any
// connection that is not brief ends the run. Without --debug, a connect there is decided before the socket is
// looked at (two getsockopt calls fewer), so connects are counted as calls: ab, which calls connect twice per
// connection, probes twice as often, and a probe granted to a call that was no new connection goes to the next
// (`vmsp_brief_probe_next`). A probe costs several TCP connections (ab without keep-alive: one
// in 32 over shared memory cost about a sixth of its rate; BENCHMARKS.md). VMSOCK_SHORT_TCP=0 turns this off
// (every connect tries shared memory, as the tests of the ring paths need).
#include "preload.h"
#include "CVMSock.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

enum { brief_run = 8, probe_first = 32, probe_most = 1024, slot_count = 256 };
static const int64_t brief_ns = 100 * 1000 * 1000;
static const uint64_t brief_bytes = 1 << 20;

// Direct-mapped by the destination's hash: a collision only forgets a run.
struct slot {
    _Atomic uint64_t key;
    atomic_int run;      // brief connections in a row
    atomic_int skipped;  // connects sent to TCP since the run reached `brief_run`, or since the last probe
    atomic_int interval; // connects from one probe to the next (0 until the run reaches `brief_run`)
};
static struct slot slots[slot_count];
static int disabled = -1;

static int is_disabled(void) {
    if (disabled < 0) {
        const char *text = vms_setting("VMSOCK_SHORT_TCP");  // as kept at load (real.c)
        disabled = text && strcmp(text, "0") == 0;
    }
    return disabled;
}

static uint64_t mix(uint64_t hash, const void *data, size_t length) {
    const unsigned char *bytes = data;
    for (size_t i = 0; i < length; i++) hash = (hash ^ bytes[i]) * 1099511628211ull;  // FNV-1a
    return hash;
}


uint64_t vmsp_brief_key(const struct sockaddr *address, socklen_t length) {
    uint64_t hash = mix(1469598103934665603ull, &address->sa_family, sizeof address->sa_family);
    if (address->sa_family == AF_INET && length >= sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)address;
        hash = mix(mix(hash, &in->sin_port, sizeof in->sin_port), &in->sin_addr, sizeof in->sin_addr);
    } else if (address->sa_family == AF_INET6 && length >= sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)address;
        hash = mix(mix(hash, &in6->sin6_port, sizeof in6->sin6_port), &in6->sin6_addr, sizeof in6->sin6_addr);
    }
    return hash | 1;  // never 0, which means "no destination"
}

int vmsp_brief_prefers_tcp(uint64_t key, int *run) {
    if (is_disabled()) return 0;
    struct slot *s = &slots[key % slot_count];
    if (atomic_load_explicit(&s->key, memory_order_relaxed) != key) return 0;
    *run = atomic_load_explicit(&s->run, memory_order_relaxed);
    if (*run < brief_run) return 0;
    int interval = atomic_load_explicit(&s->interval, memory_order_relaxed);
    if (interval < probe_first) interval = probe_first;
    if (atomic_fetch_add_explicit(&s->skipped, 1, memory_order_relaxed) + 1 < interval) return 1;
    atomic_store_explicit(&s->skipped, 0, memory_order_relaxed);  // this one probes
    return 0;
}

void vmsp_brief_probe_next(uint64_t key) {
    if (is_disabled()) return;
    struct slot *s = &slots[key % slot_count];
    if (atomic_load_explicit(&s->key, memory_order_relaxed) != key) return;
    if (atomic_load_explicit(&s->run, memory_order_relaxed) < brief_run) return;  // it granted no probe
    atomic_store_explicit(&s->skipped, probe_most, memory_order_relaxed);  // at least the interval: the next probes
}

void vmsp_brief_note(uint64_t key, int64_t lifetime_ns, uint64_t bytes) {
    if (!key || is_disabled()) return;
    struct slot *s = &slots[key % slot_count];
    int brief = lifetime_ns < brief_ns && bytes < brief_bytes;
    if (atomic_load_explicit(&s->key, memory_order_relaxed) != key) {
        if (!brief) return;  // nothing to remember about a destination whose connections are worth it
        atomic_store_explicit(&s->key, key, memory_order_relaxed);
        atomic_store_explicit(&s->run, 0, memory_order_relaxed);
        atomic_store_explicit(&s->skipped, 0, memory_order_relaxed);
        atomic_store_explicit(&s->interval, 0, memory_order_relaxed);
    }
    if (brief) {
        // Past the run, a brief connection was a probe (or one that was open when the run was reached): the next
        // probe comes twice as late.
        if (atomic_fetch_add_explicit(&s->run, 1, memory_order_relaxed) >= brief_run) {
            int interval = atomic_load_explicit(&s->interval, memory_order_relaxed);
            interval = interval < probe_first ? probe_first : interval;
            atomic_store_explicit(&s->interval, interval * 2 < probe_most ? interval * 2 : probe_most, memory_order_relaxed);
        }
    } else {
        atomic_store_explicit(&s->run, 0, memory_order_relaxed);
        atomic_store_explicit(&s->skipped, 0, memory_order_relaxed);
        atomic_store_explicit(&s->interval, 0, memory_order_relaxed);
    }
}

int vmsp_brief_limit_ms(void) { return (int)(brief_ns / 1000000); }
