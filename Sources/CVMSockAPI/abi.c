// Pins what the public header promises to the C library's own values and to the layout this library was built
// with: a program compiled against another copy of vmsock.h must agree with it byte for byte.
#include "vmsock.h"

#include <poll.h>
#include <sys/socket.h>

// vmsock_shutdown takes the system's own SHUT_* values; the header documents these.
_Static_assert(SHUT_RD == 0 && SHUT_WR == 1 && SHUT_RDWR == 2, "SHUT_* are Linux's 0, 1, 2");
_Static_assert(POLLIN == 1 && POLLOUT == 4, "vmsock_poll_events returns Linux's POLLIN and POLLOUT");

// struct vmsock_options on LP64 (x86-64, arm64): 7 ints, 4 bytes of padding, a pointer, 6 reserved words.
#if defined(__LP64__)
_Static_assert(sizeof(struct vmsock_options) == 88, "struct vmsock_options is 88 bytes");
_Static_assert(offsetof(struct vmsock_options, ring_size) == 8, "ring_size at 8");
_Static_assert(offsetof(struct vmsock_options, no_link_reuse) == 24, "no_link_reuse at 24");
_Static_assert(offsetof(struct vmsock_options, registry_dir) == 32, "registry_dir at 32");
_Static_assert(offsetof(struct vmsock_options, reserved) == 40, "reserved at 40");
#endif
