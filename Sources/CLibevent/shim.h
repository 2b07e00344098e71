#ifndef VMSOCK_CLIBEVENT_SHIM_H
#define VMSOCK_CLIBEVENT_SHIM_H
// Order matters: Debian's event2/event-config.h defines _GNU_SOURCE. Pull in the system headers first so that
// the C module and SwiftGlibc agree on fd_set (see shared/notes/libevent-from-swift.md).
#include <sys/types.h>
#include <sys/time.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <stdio.h>
#include <event2/event.h>
#include <event2/thread.h>
#endif
