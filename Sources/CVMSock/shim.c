#define _GNU_SOURCE
#include "CVMSock.h"
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <errno.h>
#include <string.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/prctl.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/membarrier.h>
#include <sys/uio.h>

_Static_assert(VMS_POLLRDHUP == POLLRDHUP, "POLLRDHUP");

_Static_assert(VMS_MFD_CLOEXEC == MFD_CLOEXEC, "MFD_CLOEXEC");
_Static_assert(VMS_MFD_ALLOW_SEALING == MFD_ALLOW_SEALING, "MFD_ALLOW_SEALING");
_Static_assert(VMS_F_ADD_SEALS == F_ADD_SEALS, "F_ADD_SEALS");
_Static_assert(VMS_F_GET_SEALS == F_GET_SEALS, "F_GET_SEALS");
_Static_assert(VMS_F_SEAL_SEAL == F_SEAL_SEAL, "F_SEAL_SEAL");
_Static_assert(VMS_F_SEAL_SHRINK == F_SEAL_SHRINK, "F_SEAL_SHRINK");
_Static_assert(VMS_F_SEAL_GROW == F_SEAL_GROW, "F_SEAL_GROW");
_Static_assert(VMS_F_SEAL_WRITE == F_SEAL_WRITE, "F_SEAL_WRITE");
_Static_assert(VMS_F_SEAL_FUTURE_WRITE == F_SEAL_FUTURE_WRITE, "F_SEAL_FUTURE_WRITE");

int vms_memfd_create(const char *name, unsigned int flags) { return memfd_create(name, flags); }

int vms_accept4_cloexec(int fd) { return accept4(fd, NULL, NULL, SOCK_CLOEXEC); }
const char *vms_errno_name(int code) { return strerrorname_np(code); }
int vms_accept4_cloexec_nonblock(int fd) { return accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK); }

int vms_peer_credentials(int fd, pid_t *pid, uid_t *uid, gid_t *gid) {
    struct ucred cred;
    socklen_t len = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return -1;
    if (len != sizeof(cred)) { errno = EPROTO; return -1; }
    *pid = cred.pid;
    *uid = cred.uid;
    *gid = cred.gid;
    return 0;
}

static atomic_int vms_signal_eventfd = -1;

static void vms_signal_handler(int sig) {
    (void)sig;
    int saved = errno;
    uint64_t one = 1;
    int fd = atomic_load(&vms_signal_eventfd);
    if (fd >= 0) (void)!write(fd, &one, sizeof(one));
    errno = saved;
}

int vms_forward_signal(int sig, int fd) {
    atomic_store(&vms_signal_eventfd, fd);
    struct sigaction action;
    memset(&action, 0, sizeof(action));
    action.sa_handler = vms_signal_handler;
    action.sa_flags = SA_RESTART;
    sigemptyset(&action.sa_mask);
    return sigaction(sig, &action, NULL);
}

size_t vms_cmsg_space(size_t data_len) { return CMSG_SPACE(data_len); }
size_t vms_cmsg_len(size_t data_len) { return CMSG_LEN(data_len); }
struct cmsghdr *vms_cmsg_firsthdr(struct msghdr *msg) { return CMSG_FIRSTHDR(msg); }
struct cmsghdr *vms_cmsg_nxthdr(struct msghdr *msg, struct cmsghdr *cmsg) { return CMSG_NXTHDR(msg, cmsg); }
unsigned char *vms_cmsg_data(struct cmsghdr *cmsg) { return CMSG_DATA(cmsg); }

_Static_assert(sizeof(vms_cpu_mask) == sizeof(cpu_set_t), "vms_cpu_mask mirrors cpu_set_t");

static atomic_ulong vms_forks;

static void vms_count_fork(void) { atomic_fetch_add_explicit(&vms_forks, 1, memory_order_seq_cst); }

unsigned long vms_generation;

static void vms_new_generation(void) { __atomic_add_fetch(&vms_generation, 1, __ATOMIC_RELAXED); }

// Forks are counted before the fork and again after it in the parent (a connection made in between, in another
// thread, may be in the child too, and its start sees a count the parent's second add changes); the child counts
// a generation.
__attribute__((constructor)) static void vms_watch_forks(void) {
    pthread_atfork(vms_count_fork, vms_count_fork, vms_new_generation);
}

unsigned long vms_fork_count(void) { return atomic_load_explicit(&vms_forks, memory_order_seq_cst); }

int vms_get_affinity(vms_cpu_mask *mask) { return sched_getaffinity(0, sizeof(*mask), (cpu_set_t *)mask); }
int vms_set_affinity(const vms_cpu_mask *mask) { return sched_setaffinity(0, sizeof(*mask), (const cpu_set_t *)mask); }
int vms_set_parent_death_signal(int sig) { return prctl(PR_SET_PDEATHSIG, (unsigned long)sig, 0, 0, 0); }

int vms_membarrier_register_global(void) {
    return (int)syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, 0, 0);
}

int vms_membarrier_global(void) {
    return (int)syscall(__NR_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0);
}

int64_t vms_eventfd_read_nowait(int fd) {
    uint64_t count = 0;
    struct iovec io = { &count, sizeof(count) };
    ssize_t got;
    do { got = preadv2(fd, &io, 1, -1, RWF_NOWAIT); } while (got < 0 && errno == EINTR);
    if (got == (ssize_t)sizeof(count)) return (int64_t)(count & INT64_MAX);
    if (got < 0 && errno == EAGAIN) return 0;
    return -1;
}

int vms_eventfd_ring_shared(int fd) {
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0) return 0;
    if (!(flags & O_NONBLOCK) && fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) return 0;
    struct pollfd p = { .fd = fd, .events = POLLOUT, .revents = 0 };
    if (poll(&p, 1, 0) != 1 || !(p.revents & POLLOUT)) return 0;
    uint64_t one = 1;
    ssize_t put;
    do { put = write(fd, &one, sizeof(one)); } while (put < 0 && errno == EINTR);
    return put == (ssize_t)sizeof(one);
}
