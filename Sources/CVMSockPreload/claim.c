// A forked sibling's accept of a connection whose hello the listening process answered (nginx: the master
// listens, its listener thread welcomes, a worker accepts): the worker claims the welcomed link from that
// process's claim socket and maps the rings itself. C, not the Swift set-up: a child of a multi-threaded
// process may have copied the Swift state mid-update, and this path touches none of it. The wire format is
// drawn in Sources/VMSock/Preload/PreloadClaims.swift.
#include "preload.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

enum { CLAIM_MAGIC = 0x766d636c, HEADER = 4096, CLAIM_FDS = 7, WAIT_MS = 1000 };

// What a claimed link owns in this process, released at its last close (vmsp_claim_release).
struct claimed {
    void *local, *peer;
    size_t local_length, peer_length;
    int control_fd, space_bell_fd, peer_space_bell_fd, data_bell_fd, peer_data_bell_fd;
};

pid_t vmsp_listen_owner;

// MARK: The welcome book: which connector ports may have a welcomed link, shared with forked children
//
// An accept must ask for a welcomed link (a claim, a round trip to the listening process's thread, in a forked
// worker) only if the connection's connector is under vmsock-run. So the listening process keeps, in a page it
// maps shared before any child forks, how many links it holds welcomed per connector port, and how many hellos
// its thread is answering now (a welcome goes out before its link is entered). An accept that reads "none being
// answered" first, then no link for its peer's port, is a plain TCP client's: the thread counts a link before it
// stops counting the answer, so a welcome sent by then would show. Ports alone, so that another address's link
// on the same port only costs a claim, never a miss; a count never goes down without its link going.
//
// The book also says whether a process of the family uses io_uring (rawcall.c), or handed a registered listening
// socket to a new image (exec.c): a worker that accepts through a ring, or an image that knows nothing of the
// links, would take a connection the owner welcomed as TCP, so the owner then welcomes nobody.
struct welcome_book {
    atomic_int answering;
    atomic_int uring;
    atomic_int handed_on;  // marks: a new image (exec, posix_spawn) or another process got a registered listener
    atomic_int forks;  // the owner's forks since the book was made: a daemon takes over only from a lone child
    _Atomic uint16_t ports[65536];
};
static struct welcome_book *book;

void vmsp_welcome_book_note_uring(void) {
    if (book) atomic_store(&book->uring, 1);
}

int vmsp_welcome_book_uring(void) { return book && atomic_load(&book->uring); }

void vmsp_welcome_book_note_handed_on(void) {
    if (book) atomic_fetch_add(&book->handed_on, 1);
}

void vmsp_welcome_book_unnote_handed_on(void) {
    if (book) atomic_fetch_sub(&book->handed_on, 1);
}

int vmsp_welcome_book_closed(void) {
    return book && (atomic_load(&book->uring) || atomic_load(&book->handed_on));
}

void vmsp_welcome_book_count_fork(void) {
    if (book && vmsp_listen_owner == getpid()) atomic_fetch_add(&book->forks, 1);
}

int vmsp_welcome_book_forks(void) { return book ? atomic_load(&book->forks) : -1; }

void vmsp_welcome_book_renew(void) {
    if (book) munmap(book, sizeof *book);
    book = NULL;
    vmsp_welcome_book_init();
}

void vmsp_welcome_book_init(void) {
    if (book) return;
    void *page = mmap(NULL, sizeof *book, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (page != MAP_FAILED) book = page;  // without it, every accept asks, as before
}

void vmsp_welcome_answering(int delta) {
    if (book) atomic_fetch_add(&book->answering, delta);
}

void vmsp_welcome_port(int port, int delta) {
    if (book && port > 0 && port < 65536) atomic_fetch_add(&book->ports[port], (uint16_t)delta);
}

int vmsp_welcome_possible(const struct sockaddr_storage *peer) {
    if (peer->ss_family != AF_INET && peer->ss_family != AF_INET6) return 0;  // getpeername failed: it is gone
    if (!book || atomic_load(&book->answering) != 0) return 1;
    in_port_t port = peer->ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)peer)->sin6_port
                                                 : ((const struct sockaddr_in *)peer)->sin_port;
    return atomic_load(&book->ports[ntohs(port)]) != 0;
}

static void close_all(const int *fds, int count) {
    for (int i = 0; i < count; i++) if (fds[i] >= 0) REAL(close)(fds[i]);
}

// Maps a region as SharedRegion does for vmsockd's region (a reservation first, then the header and data, then the
// data again right after), so that any slice of up to one capacity is contiguous. SharedRegion maps a memfd
// without the reservation, in two calls; this runs once per claimed link. The memfd must be exactly that long (a
// shorter one would fault).
static void *map_region(int memfd, uint64_t capacity, int writable, size_t *length) {
    struct stat info;
    if (capacity < 4096 || capacity > (1u << 30) || (capacity & (capacity - 1)) != 0) return NULL;
    if (fstat(memfd, &info) != 0 || (uint64_t)info.st_size != HEADER + capacity) return NULL;
    *length = HEADER + 2 * capacity;
    uint8_t *base = mmap(NULL, *length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) return NULL;
    int protection = writable ? PROT_READ | PROT_WRITE : PROT_READ;
    if (mmap(base, HEADER + capacity, protection, MAP_SHARED | MAP_FIXED, memfd, 0) == MAP_FAILED ||
        mmap(base + HEADER + capacity, capacity, protection, MAP_SHARED | MAP_FIXED, memfd, HEADER) == MAP_FAILED) {
        munmap(base, *length);
        return NULL;
    }
    return base;
}

static int connect_claims(char *reason, size_t capacity) {
    int sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (sock < 0) { snprintf(reason, capacity, "socket(AF_UNIX): %s", strerror(errno)); return -1; }
    struct sockaddr_un address = { .sun_family = AF_UNIX };
    int n = snprintf(address.sun_path + 1, sizeof address.sun_path - 1, "vmsock-run/claim/%d", (int)vmsp_listen_owner);
    socklen_t length = (socklen_t)(sizeof(sa_family_t) + 1 + (size_t)n);
    if (REAL(connect)(sock, (struct sockaddr *)&address, length) != 0) {
        snprintf(reason, capacity, "the listening process %d takes no claims (%s)", (int)vmsp_listen_owner, strerror(errno));
        REAL(close)(sock);
        return -1;
    }
    struct ucred peer;
    socklen_t peer_length = sizeof peer;
    // The owner is the process that registered the listener (our parent, or an ancestor): its own user, or root
    // when it dropped privileges for its workers, as nginx's master does.
    if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &peer, &peer_length) != 0 || peer.pid != vmsp_listen_owner ||
        (peer.uid != geteuid() && peer.uid != 0)) {
        snprintf(reason, capacity, "the claim socket of process %d belongs to another process (pid %d, uid %u)",
                 (int)vmsp_listen_owner, (int)peer.pid, (unsigned)peer.uid);
        REAL(close)(sock);
        return -2;
    }
    return sock;
}

// Sends the claim and receives the answer: 1 found (fds and capacities filled), 0 none, -1 failed.
static int exchange(int sock, int listener, const struct sockaddr_storage *peer, int fds[CLAIM_FDS], uint64_t caps[2],
                    char *reason, size_t capacity) {
    // The connector's address and port: the port alone could be two sockets' on different addresses.
    uint8_t claim[28] = { 0 };
    uint32_t magic = CLAIM_MAGIC;
    uint16_t port, family;
    memcpy(claim, &magic, 4);
    memcpy(claim + 4, &listener, 4);
    if (peer->ss_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)peer;
        port = ntohs(v6->sin6_port);
        family = 6;
        memcpy(claim + 12, &v6->sin6_addr, 16);
    } else {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)peer;
        port = ntohs(v4->sin_port);
        family = 4;
        memcpy(claim + 12, &v4->sin_addr, 4);
    }
    memcpy(claim + 8, &port, 2);
    memcpy(claim + 10, &family, 2);
    // The listening socket goes with the claim: the owner gives links only to a process that holds it.
    union { struct cmsghdr align; char space[CMSG_SPACE(sizeof(int))]; } proof;
    struct iovec claim_iov = { claim, sizeof claim };
    struct msghdr claim_message = { .msg_iov = &claim_iov, .msg_iovlen = 1, .msg_control = proof.space, .msg_controllen = sizeof proof.space };
    struct cmsghdr *rights = CMSG_FIRSTHDR(&claim_message);
    rights->cmsg_level = SOL_SOCKET;
    rights->cmsg_type = SCM_RIGHTS;
    rights->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(rights), &listener, sizeof listener);
    if (REAL(sendmsg)(sock, &claim_message, MSG_NOSIGNAL) != (ssize_t)sizeof claim) {
        snprintf(reason, capacity, "sending the claim failed: %s", strerror(errno));
        return -1;
    }
    struct pollfd p = { .fd = sock, .events = POLLIN };
    if (poll(&p, 1, WAIT_MS) != 1) {
        snprintf(reason, capacity, "the listening process did not answer the claim within %d ms", WAIT_MS);
        return -1;
    }
    uint8_t answer[32];
    union { struct cmsghdr align; char space[CMSG_SPACE(sizeof(int) * (CLAIM_FDS + 3))]; } control;
    struct iovec iov = { answer, sizeof answer };
    struct msghdr message = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.space, .msg_controllen = sizeof control.space };
    ssize_t n = REAL(recvmsg)(sock, &message, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    int received = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&message); c; c = CMSG_NXTHDR(&message, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        for (int i = 0; i < count; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            if (received < CLAIM_FDS) fds[received] = fd; else REAL(close)(fd);
            received++;
        }
    }
    uint32_t found = 0;
    if (n == 24) { memcpy(&magic, answer, 4); memcpy(&found, answer + 4, 4); memcpy(caps, answer + 8, 16); }
    if (n != 24 || magic != CLAIM_MAGIC || found > 1 || (message.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) ||
        received != (found ? CLAIM_FDS : 0)) {
        snprintf(reason, capacity, "the listening process answered the claim wrongly (%zd bytes, %d descriptors)", n, received);
        close_all(fds, received < CLAIM_FDS ? received : CLAIM_FDS);
        return -1;
    }
    if (!found) snprintf(reason, capacity, "no link welcomed for port %u: the peer is not under vmsock-run, or it hung up before this accept", (unsigned)port);
    return (int)found;
}

int vmsp_claim(int listener, const struct sockaddr_storage *peer, vmsp_link_info *info, char *reason, size_t capacity) {
    int sock = connect_claims(reason, capacity);
    if (sock < 0) return sock;
    int fds[CLAIM_FDS] = { -1, -1, -1, -1, -1, -1, -1 };
    uint64_t caps[2];
    int found = exchange(sock, listener, peer, fds, caps, reason, capacity);
    REAL(close)(sock);
    if (found < 0) return -2;
    if (found == 0) return 0;
    struct claimed *owned = calloc(1, sizeof *owned);
    if (owned) {
        owned->local = map_region(fds[0], caps[0], 1, &owned->local_length);
        // Mapped: now nobody (the connector included) can map our region writable again.
        if (owned->local) (void)fcntl(fds[0], F_ADD_SEALS, F_SEAL_FUTURE_WRITE | F_SEAL_SEAL);
        owned->peer = map_region(fds[1], caps[1], 0, &owned->peer_length);
    }
    REAL(close)(fds[0]);
    REAL(close)(fds[1]);
    if (!owned || !owned->local || !owned->peer) {
        snprintf(reason, capacity, "mapping the claimed rings failed (%s)", owned ? strerror(errno) : "out of memory");
        if (owned && owned->local) munmap(owned->local, owned->local_length);
        if (owned && owned->peer) munmap(owned->peer, owned->peer_length);
        free(owned);
        close_all(fds + 2, CLAIM_FDS - 2);
        return -2;
    }
    owned->control_fd = fds[2];
    owned->space_bell_fd = fds[3];
    owned->peer_space_bell_fd = fds[4];
    owned->data_bell_fd = fds[5];
    owned->peer_data_bell_fd = fds[6];
    *info = (vmsp_link_info){
        .local_base = owned->local, .peer_base = owned->peer, .local_capacity = caps[0], .peer_capacity = caps[1],
        .control_fd = fds[2], .space_bell_fd = fds[3], .peer_space_bell_fd = fds[4],
        .data_bell_fd = fds[5], .peer_data_bell_fd = fds[6],
        .owner = (void *)((uintptr_t)owned | 1),  // tagged: released here, not by the Swift half
    };
    return 1;
}

void vmsp_claim_release(void *owner) {
    struct claimed *owned = owner;
    munmap(owned->local, owned->local_length);
    munmap(owned->peer, owned->peer_length);
    REAL(close)(owned->control_fd);
    REAL(close)(owned->space_bell_fd);
    REAL(close)(owned->peer_space_bell_fd);
    REAL(close)(owned->data_bell_fd);
    REAL(close)(owned->peer_data_bell_fd);
    free(owned);
}
