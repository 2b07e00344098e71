// How long a wait looks at the rings before it sleeps, learnt from how its sleeps end.
//
// A sleep costs the writer a wake-up byte (a loopback TCP send, about 3 µs) and the sleeper a wake-up. A wait
// that sleeps and is woken soon after would have done better to look a little longer; one that sleeps long lost
// nothing by sleeping. So, as KVM's halt polling does for a vCPU: a wait starts with VMSOCK_SPIN_US (50 µs by
// default, as in the library); each sleep that ends with something to report within VMSOCK_SPIN_MAX_US (200 µs
// by default, KVM's halt_poll_ns) of starting doubles the budget up to that, and a sleep that lasts longer, or
// times out, or ends with only the application's other descriptors ready (which a spin would only have delayed:
// epoll.c asks about them while it spins, but the spin still holds the core), sets it back. A wait that finds
// data while it looks leaves the budget as it is.
//
// Measured with redis-benchmark -P 16 (50 clients, GET): at a fixed 50 µs the client slept about 8,000 times a
// million requests and was sent up to 55,000 wake-up bytes; see BENCHMARKS.md for the figures with learning.
#include "preload.h"
#include "CVMSock.h"

#include <stdlib.h>

static int read_microseconds(const char *name, int fallback) {
    const char *text = vms_setting(name);  // as kept at load (real.c)
    if (!text || !*text) return fallback;
    char *end;
    long value = strtol(text, &end, 10);
    if (*end || value < 0 || value > 1000000) return fallback;  // as the library: a bad value keeps the default
    return (int)value;
}

int vmsp_spin_ns(void) {
    static int cached = -1;
    if (cached < 0) cached = read_microseconds("VMSOCK_SPIN_US", 50) * 1000;
    return cached;
}

// The most a budget grows to: VMSOCK_SPIN_MAX_US, never below the starting budget, and 0 when that is 0 (a
// process that asked for no spinning gets none).
static int spin_max_ns(void) {
    static int cached = -1;
    if (cached < 0) {
        int base = vmsp_spin_ns(), max = read_microseconds("VMSOCK_SPIN_MAX_US", 200) * 1000;
        cached = base == 0 ? 0 : max < base ? base : max;
    }
    return cached;
}

int64_t vmsp_spin_budget(struct vmsp_spin *s) {
    if (s->ns <= 0) s->ns = vmsp_spin_ns();
    return s->ns;
}

void vmsp_spin_slept(struct vmsp_spin *s, int64_t slept_ns, int woke) {
    int max = spin_max_ns();
    if (woke && slept_ns <= max) {
        int64_t grown = 2 * (int64_t)vmsp_spin_budget(s);
        s->ns = (int)(grown < max ? grown : max);
    } else {
        s->ns = vmsp_spin_ns();
    }
}
