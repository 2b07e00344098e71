// The C API's globals (see CVMSock.h, "the C API's handle table and last error").
#include "CVMSock.h"

#include <string.h>

uint64_t vms_handle_chunks[VMS_HANDLE_CHUNKS];

// Per thread, like errno. 256 bytes hold every message the library makes but the longest resolver ones, which are
// cut. Initial-exec would be cheaper, but a library loaded by dlopen (or LD_PRELOAD with many others) may not get
// static TLS space; the general model is always allowed.
static _Thread_local char last_error[256];

void vms_last_error_set(const char *text, size_t length) {
    if (length >= sizeof last_error) length = sizeof last_error - 1;
    memcpy(last_error, text, length);
    last_error[length] = 0;
}

const char *vms_last_error_get(void) { return last_error; }
