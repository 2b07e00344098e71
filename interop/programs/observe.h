// What the C test programs print: one line per check, a label and what a program can observe (a result, or -1
// and the errno's name), never addresses or timings, flushed at once (a forked child shares standard output).
// Each program is run with and without vmsock-run, and the two outputs must be the same.
#include <errno.h>
#include <stdio.h>
#include <string.h>

static const char *err(long result) {
    static char text[64];
    if (result >= 0) { snprintf(text, sizeof text, "%ld", result); return text; }
    snprintf(text, sizeof text, "-1 %s", strerrorname_np(errno));
    return text;
}
#define CHECK(label, expr) do { long r_ = (long)(expr); printf("%-48s %s\n", label, err(r_)); fflush(stdout); } while (0)
#define SHOW(label, fmt, ...) do { printf("%-48s " fmt "\n", label, __VA_ARGS__); fflush(stdout); } while (0)
