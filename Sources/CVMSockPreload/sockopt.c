// TCP_NODELAY on a shared-memory connection. Its TCP socket carries only wake-up bytes, and each must leave at
// once: with Nagle's algorithm, a byte sent while the previous one waits for its (delayed) ACK is held up to
// 40 ms, and a reader that sleeps waits that long. So the socket always has TCP_NODELAY, and the application
// sees and sets its own value, which changes nothing (its bytes never wait for the socket anyway).
#include "preload.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>

void vmsp_wake_socket_ready(struct vmsp_conn *c, int fd) {
    int value = 0;
    socklen_t length = sizeof value;
    if (getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &value, &length) == 0) atomic_store(&c->app_nodelay, value != 0);
    int on = 1;
    (void)REAL(setsockopt)(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
}

int setsockopt(int fd, int level, int name, const void *value, socklen_t length) {
    if (level == IPPROTO_TCP && name == TCP_NODELAY && !vmsp_inside && vmsp_lookup(fd) && value &&
        length >= (socklen_t)sizeof(int)) {
        struct vmsp_ref *r = vmsp_enter(fd);
        if (r) {
            int on;
            memcpy(&on, value, sizeof on);
            atomic_store(&r->conn->app_nodelay, on != 0);
            vmsp_leave(r);
            return 0;
        }
    }
    return REAL(setsockopt)(fd, level, name, value, length);
}

int getsockopt(int fd, int level, int name, void *value, socklen_t *length) {
    if (level == IPPROTO_TCP && name == TCP_NODELAY && !vmsp_inside && vmsp_lookup(fd) && value && length &&
        *length >= (socklen_t)sizeof(int)) {
        struct vmsp_ref *r = vmsp_enter(fd);
        if (r) {
            int on = atomic_load(&r->conn->app_nodelay);
            vmsp_leave(r);
            memcpy(value, &on, sizeof on);
            *length = sizeof on;
            return 0;
        }
    }
    return REAL(getsockopt)(fd, level, name, value, length);
}
