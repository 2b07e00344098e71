// scribble: a hostile peer of a vmsockd region, run as root inside a QEMU guest (interop/guest-scribble.test.sh).
//   scribble SECONDS
// Maps the BAR2 of the first ivshmem device (1af4:1110) read-write through sysfs and, for SECONDS, stores random
// 64-bit words at random 8-byte aligned offsets anywhere in it: header, slot table, listen table, connection
// slots and rings. ivshmem lets every guest do this; docs/DESIGN.md ("Trust") says what the other peers must
// survive. Prints the device, the region's size and how many words it wrote.
// Built static (cc -static) so that the guest needs no library for it. Plain C, no vmsock code: it must not
// share the assumptions of the code it attacks.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DEVICES "/sys/bus/pci/devices"

// The first line of a sysfs attribute, or "" when it cannot be read.
static void read_attribute(const char *device, const char *name, char *out, size_t size) {
    char path[512];
    snprintf(path, sizeof path, DEVICES "/%s/%s", device, name);
    out[0] = 0;
    FILE *file = fopen(path, "r");
    if (!file) return;
    if (!fgets(out, (int)size, file)) out[0] = 0;
    out[strcspn(out, "\n")] = 0;
    fclose(file);
}

static int find_device(char *out, size_t size) {
    DIR *dir = opendir(DEVICES);
    if (!dir) { fprintf(stderr, "scribble: cannot open %s: %s\n", DEVICES, strerror(errno)); return -1; }
    struct dirent *entry;
    while ((entry = readdir(dir))) {
        char vendor[32], device[32];
        if (entry->d_name[0] == '.') continue;
        read_attribute(entry->d_name, "vendor", vendor, sizeof vendor);
        read_attribute(entry->d_name, "device", device, sizeof device);
        if (!strcmp(vendor, "0x1af4") && !strcmp(device, "0x1110")) {
            snprintf(out, size, "%s", entry->d_name);
            closedir(dir);
            return 0;
        }
    }
    closedir(dir);
    fprintf(stderr, "scribble: no ivshmem device (1af4:1110) in %s\n", DEVICES);
    return -1;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

// xorshift64*: fast, and good enough to spread stores over the region; seeded from the clock and the pid.
static uint64_t next(uint64_t *state) {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return *state * 0x2545F4914F6CDD1DULL;
}

int main(int argc, char **argv) {
    if (argc != 2 || atof(argv[1]) <= 0) { fprintf(stderr, "usage: scribble SECONDS\n"); return 2; }
    double seconds = atof(argv[1]);
    char device[256], path[512];
    if (find_device(device, sizeof device) < 0) return 1;

    // Memory decoding is off until the PCI device is enabled (no driver binds ivshmem here): BAR2 would read ~0.
    snprintf(path, sizeof path, DEVICES "/%s/enable", device);
    int enable = open(path, O_WRONLY);
    if (enable < 0 || write(enable, "1", 1) != 1) {
        fprintf(stderr, "scribble: cannot enable %s: %s\n", path, strerror(errno));
        return 1;
    }
    close(enable);

    snprintf(path, sizeof path, DEVICES "/%s/resource2", device);
    int fd = open(path, O_RDWR);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) { fprintf(stderr, "scribble: cannot open %s: %s\n", path, strerror(errno)); return 1; }
    uint64_t size = (uint64_t)st.st_size;
    if (size < 4096 || (size & (size - 1))) {
        fprintf(stderr, "scribble: %s is %llu bytes, not a power of two from 4 KiB\n", path, (unsigned long long)size);
        return 1;
    }
    volatile uint64_t *region = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (region == MAP_FAILED) { fprintf(stderr, "scribble: cannot map %s: %s\n", path, strerror(errno)); return 1; }
    printf("scribble: %s, region of %llu bytes, scribbling for %g s\n", device, (unsigned long long)size, seconds);
    fflush(stdout);

    uint64_t state = ((uint64_t)time(NULL) << 20) ^ (uint64_t)getpid() ^ 0x9E3779B97F4A7C15ULL;
    uint64_t words = size / 8, written = 0;
    double end = now() + seconds;
    do {
        // The clock is read once per 64 Ki stores: a system call per store would leave little time to scribble.
        for (int i = 0; i < 65536; i++) {
            uint64_t value = next(&state);
            region[next(&state) & (words - 1)] = value;
        }
        written += 65536;
    } while (now() < end);
    printf("scribble: wrote %llu words (%.1f per 8-byte word of the region)\n", (unsigned long long)written,
           (double)written / words);
    return 0;
}
