// vmsock's settings (VMSOCK_* environment variables), read now or from a copy kept at load (vms_settings_keep).
#define _GNU_SOURCE
#include "CVMSock.h"
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

enum { kept_capacity = 64 };
// "NAME=value" strings, copied once; the copy lives as long as the process.
static char *kept[kept_capacity];
static int kept_count;
static atomic_int keeping;

void vms_settings_keep(void) {
    if (atomic_load(&keeping)) return;
    for (char **entry = environ; entry && *entry && kept_count < kept_capacity; entry++) {
        if (strncmp(*entry, "VMSOCK_", 7) != 0) continue;
        char *copy = strdup(*entry);
        if (copy) kept[kept_count++] = copy;
    }
    atomic_store(&keeping, 1);
}

const char *vms_setting(const char *name) {
    if (!atomic_load(&keeping)) return getenv(name);
    size_t length = strlen(name);
    for (int i = 0; i < kept_count; i++) {
        if (strncmp(kept[i], name, length) == 0 && kept[i][length] == '=') return kept[i] + length + 1;
    }
    return NULL;
}
