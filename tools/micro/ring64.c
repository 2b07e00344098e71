// A bare C ring between two pinned threads (CPUs 0 and 1), 64-byte messages unless told otherwise, with the
// position stores either fenced (seq_cst: an XCHG on x86) or plain release stores; the reader loads every cache
// line. Backs WakeUpOrdering.swift, and is the machine's reference for vmperf's figures.
// Build and run: tools/micro/run.sh. Alone: ring64 [fenced|release] [message bytes] [extra stores].
// Extra stores: that many more stores per message that hit the cache (a call level's return address and saved
// registers are such stores); they queue behind the ring's cache misses (see SharedMemoryStream+FastPath.swift).
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CAP (4u << 20)
static uint64_t MSG = 64;
static uint64_t TOTAL = 1000000000ULL;
static char *data;
static _Alignas(256) uint64_t produced;
static _Alignas(256) uint64_t consumed;
static _Alignas(256) uint32_t readerWaits;
static _Alignas(256) uint32_t writerWaits;
static int fenced;
static volatile long sink;
static int EXTRA;
static volatile uint64_t scratch[64];

static long long now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static void store(uint64_t *p, uint64_t v) {
    if (fenced) __atomic_store_n(p, v, __ATOMIC_SEQ_CST);
    else __atomic_store_n(p, v, __ATOMIC_RELEASE);
}

static void *reader(void *unused) {
    pin(1);
    uint64_t position = 0;
    long sum = 0;
    while (position < TOTAL) {
        uint64_t p = __atomic_load_n(&produced, __ATOMIC_ACQUIRE);
        if (p == position) { __builtin_ia32_pause(); continue; }
        for (uint64_t q = position; q < p; q += 64) sum += data[q & (CAP - 1)];  // every line crosses cores
        position = p;
        store(&consumed, position);
        sum += __atomic_load_n(&writerWaits, __ATOMIC_SEQ_CST);  // the need-wakeup read
    }
    sink = sum;
    return unused;
}

int main(int argc, char **argv) {
    fenced = argc > 1 && strcmp(argv[1], "fenced") == 0;
    if (argc > 2) MSG = strtoull(argv[2], 0, 10);
    if (argc > 3) EXTRA = atoi(argv[3]);
    if (EXTRA < 0 || EXTRA > 64) {
        fprintf(stderr, "ring64: extra stores must be from 0 to 64\n");
        return 1;
    }
    if (MSG < 64 || MSG > CAP / 2 || MSG % 64 != 0) {
        fprintf(stderr, "ring64: message size must be a multiple of 64 from 64 to %u\n", CAP / 2);
        return 1;
    }
    if (MSG >= 1024) TOTAL = 20000000000ULL;  // about half a second at full speed
    TOTAL -= TOTAL % MSG;
    data = aligned_alloc(4096, CAP);
    memset(data, 1, CAP);
    char *message = aligned_alloc(64, MSG);
    memset(message, 2, MSG);
    pthread_t thread;
    pthread_create(&thread, 0, reader, 0);
    pin(0);
    long long start = now();
    uint64_t position = 0, seen = 0;
    long rings = 0;
    while (position < TOTAL) {
        while (CAP - (position - seen) < MSG) seen = __atomic_load_n(&consumed, __ATOMIC_ACQUIRE);
        memcpy(data + (position & (CAP - 1)), message, MSG);
        position += MSG;
        store(&produced, position);
        rings += __atomic_load_n(&readerWaits, __ATOMIC_SEQ_CST);  // the need-wakeup read
        for (int k = 0; k < EXTRA; k++) scratch[k] = position;
    }
    pthread_join(thread, 0);
    printf("%llu-byte messages, %s position stores, %d extra stores: %.2f GB/s\n", (unsigned long long)MSG,
           fenced ? "fenced" : "release", EXTRA,
           TOTAL / ((now() - start) / 1e9) / 1e9 + rings * 0);
    return 0;
}
