#include "CVMSock.h"
#include <string.h>

// splitmix64: one multiply-xorshift round per 8 bytes of stream.
static inline uint64_t pattern_word(uint64_t seed, uint64_t index) {
    uint64_t z = seed + (index + 1) * 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static inline unsigned char pattern_byte(uint64_t seed, uint64_t offset) {
    uint64_t w = pattern_word(seed, offset >> 3);
    return (unsigned char)(w >> ((offset & 7) * 8));
}

void vms_pattern_fill(void *buf, size_t len, uint64_t offset, uint64_t seed) {
    unsigned char *p = buf;
    size_t i = 0;
    for (; i < len && ((offset + i) & 7) != 0; i++) p[i] = pattern_byte(seed, offset + i);
    for (; i + 8 <= len; i += 8) {
        uint64_t w = pattern_word(seed, (offset + i) >> 3); // little-endian byte order, as pattern_byte reads it
        memcpy(p + i, &w, 8);
    }
    for (; i < len; i++) p[i] = pattern_byte(seed, offset + i);
}

size_t vms_pattern_check(const void *buf, size_t len, uint64_t offset, uint64_t seed) {
    const unsigned char *p = buf;
    size_t i = 0;
    for (; i < len && ((offset + i) & 7) != 0; i++) if (p[i] != pattern_byte(seed, offset + i)) return i;
    for (; i + 8 <= len; i += 8) {
        uint64_t w = pattern_word(seed, (offset + i) >> 3), got;
        memcpy(&got, p + i, 8);
        if (got != w) break; // find the exact byte below
    }
    for (; i < len; i++) if (p[i] != pattern_byte(seed, offset + i)) return i;
    return len;
}
