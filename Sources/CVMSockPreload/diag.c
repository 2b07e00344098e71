// How many TCP sockets listen on a listener's exact address and port (sock_diag): more than one means an
// SO_REUSEPORT group, whose members the kernel picks from for each connection, so a connector welcomed by one
// process could be accepted by another. The listener thread asks before each welcome.
#include "preload.h"

#include <errno.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <unistd.h>

static int count_family(int family, const struct sockaddr_storage *bound) {
    int sock = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (sock < 0) return -1;
    struct {
        struct nlmsghdr header;
        struct inet_diag_req_v2 request;
    } message = {
        .header = { .nlmsg_len = sizeof message, .nlmsg_type = SOCK_DIAG_BY_FAMILY,
                    .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP },
        .request = { .sdiag_family = (uint8_t)family, .sdiag_protocol = IPPROTO_TCP,
                     .idiag_states = 1u << TCP_LISTEN },
    };
    if (REAL(send)(sock, &message, sizeof message, 0) < 0) { REAL(close)(sock); return -1; }
    uint16_t port;
    const void *address;
    size_t address_length;
    if (bound->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)bound;
        port = in->sin_port; address = &in->sin_addr; address_length = 4;
    } else {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)bound;
        port = in6->sin6_port; address = &in6->sin6_addr; address_length = 16;
    }
    int count = 0;
    long buffer[8192 / sizeof(long)];
    for (;;) {
        ssize_t n = REAL(recv)(sock, buffer, sizeof buffer, 0);
        if (n < 0) { if (errno == EINTR) continue; count = -1; break; }
        if (n == 0) break;
        int done = 0;
        for (struct nlmsghdr *h = (struct nlmsghdr *)buffer; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
            if (h->nlmsg_type == NLMSG_DONE) { done = 1; break; }
            if (h->nlmsg_type == NLMSG_ERROR) { done = 1; count = -1; break; }
            const struct inet_diag_msg *diag = NLMSG_DATA(h);
            if (diag->id.idiag_sport == port && family == bound->ss_family &&
                memcmp(diag->id.idiag_src, address, address_length) == 0) {
                count++;
            }
        }
        if (done) break;
    }
    REAL(close)(sock);
    return count;
}

int vmsp_listeners_sharing(int fd) {
    struct sockaddr_storage bound;
    socklen_t length = sizeof bound;
    if (getsockname(fd, (struct sockaddr *)&bound, &length) != 0) return -1;
    return count_family(bound.ss_family, &bound);
}
