#ifndef VMSOCK_CVMSOCK_H
#define VMSOCK_CVMSOCK_H
// The small part of vmsock that Swift cannot import: memfd and its seals, eventfd (tests), epoll, the CMSG_* macros for
// SCM_RIGHTS, SO_PEERCRED, a CPU pause hint, atomics on memory that another process maps, device registers and VFIO
// (a guest's ivshmem device), and CPU affinity and the
// parent-death signal (vmperf --paper).
// Everything else stays in Swift. Constants that glibc only shows under _GNU_SOURCE are numbered here (they are
// Linux ABI) and pinned against the real headers by _Static_assert in shim.c.

#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>

// MARK: memfd and seals (linux/memfd.h, linux/fcntl.h)
#define VMS_MFD_CLOEXEC          0x0001U
#define VMS_MFD_ALLOW_SEALING    0x0002U
#define VMS_F_ADD_SEALS          1033
#define VMS_F_GET_SEALS          1034
#define VMS_F_SEAL_SEAL          0x0001
#define VMS_F_SEAL_SHRINK        0x0002
#define VMS_F_SEAL_GROW          0x0004
#define VMS_F_SEAL_WRITE         0x0008
#define VMS_F_SEAL_FUTURE_WRITE  0x0010

int vms_memfd_create(const char *name, unsigned int flags);

// MARK: sockets
#define VMS_POLLRDHUP 0x2000
int vms_accept4_cloexec(int fd);
/// The errno's symbolic name ("ECONNREFUSED"), or NULL for a number glibc does not know (strerrorname_np).
const char *vms_errno_name(int code);
int vms_accept4_cloexec_nonblock(int fd);
/// SO_PEERCRED of a connected AF_UNIX socket. Returns 0 or -1 with errno set.
int vms_peer_credentials(int fd, pid_t *pid, uid_t *uid, gid_t *gid);

// MARK: signals
/// Installs a handler for `sig` (SA_RESTART) that writes 1 to the eventfd `fd`, the one thing it does (write(2) is
/// async-signal-safe). One eventfd for every signal forwarded. Returns 0 or -1 with errno set.
int vms_forward_signal(int sig, int fd);

/// Forks this process has made, counted twice each: before and after (pthread_atfork's prepare and parent
/// handlers, registered when the library loads; vfork and posix_spawn run no handlers, and their children exec
/// without touching a connection). A shared-memory connection open across a fork may be held by the child too:
/// its link is not reused.
unsigned long vms_fork_count(void);

/// This process's generation: 0 in the process that loaded the library, one more in each forked child than in its
/// parent (pthread_atfork's child handler). A plain load, no system call: `GuardedDescriptor` tells by it whether
/// its in-use count was copied from a parent.
extern unsigned long vms_generation;
static inline unsigned long vms_process_generation(void) { return __atomic_load_n(&vms_generation, __ATOMIC_RELAXED); }

// MARK: SCM_RIGHTS (the CMSG_* macros are not importable)
size_t vms_cmsg_space(size_t data_len);
size_t vms_cmsg_len(size_t data_len);
struct cmsghdr *vms_cmsg_firsthdr(struct msghdr *msg);
struct cmsghdr *vms_cmsg_nxthdr(struct msghdr *msg, struct cmsghdr *cmsg);
unsigned char *vms_cmsg_data(struct cmsghdr *cmsg);

// MARK: atomics on mapped memory
// One owner per shared word: these are the only functions that touch the words of the ring header.
static inline uint64_t vms_load_acquire_u64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline uint32_t vms_load_acquire_u32(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
// A release store: what a turn-passing flag needs (the writes before it are seen by whoever reads it with acquire).
// On x86 it is a plain MOV, like the paper's volatile store.
static inline void vms_store_release_u32(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline void vms_store_release_u64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
// Sequentially consistent store and load: the two halves of the need-wakeup (Dekker) handshake. On x86 the
// store is an XCHG, which is also the full fence the pattern needs between "publish" and "read the flag".
static inline void vms_store_seqcst_u64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
static inline void vms_store_seqcst_u32(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
static inline uint32_t vms_load_seqcst_u32(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
static inline uint64_t vms_load_seqcst_u64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
static inline void vms_fence_seqcst(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
/// Asymmetric fences (membarrier(2)): registers this process for MEMBARRIER_CMD_GLOBAL_EXPEDITED; returns 0 or -1
/// with errno set (ENOSYS, EINVAL or EPERM where the kernel or a seccomp filter does not offer it).
int vms_membarrier_register_global(void);
/// A full memory barrier on every CPU that runs a thread of a registered process, this one included.
int vms_membarrier_global(void);
/// Atomically sets bits in a word we own; returns the new value.
static inline uint32_t vms_fetch_or_u32(uint32_t *p, uint32_t bits) { return __atomic_or_fetch(p, bits, __ATOMIC_SEQ_CST); }

/// Compare-and-swap on a shared 64-bit word (a claim in vmsockd's region): true when `*p` was `expected` and is now
/// `desired`. Sequentially consistent, so a claim is ordered before the checks its claimer makes next.
static inline _Bool vms_cas_u64(uint64_t *p, uint64_t expected, uint64_t desired) {
    return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}
/// Atomically sets bits in a shared 64-bit word; returns the new value.
static inline uint64_t vms_fetch_or_u64(uint64_t *p, uint64_t bits) { return __atomic_or_fetch(p, bits, __ATOMIC_SEQ_CST); }

// MARK: eventfds shared with untrusted peers (ivshmem)
/// Reads an eventfd's count without ever blocking, whatever O_NONBLOCK says (preadv2 with RWF_NOWAIT, which
/// eventfd honours for reads). Returns the count, 0 when there was none, or -1 with errno set.
int64_t vms_eventfd_read_nowait(int fd);
/// Writes 1 to an eventfd that others share, as far as possible without blocking (RWF_NOWAIT is refused for eventfd
/// writes): puts O_NONBLOCK back if someone cleared it, then writes only if poll says there is room. Returns 1 when
/// rung, 0 when the ring was dropped (no room, or any error). See `IvshmemBell` for the window that remains.
int vms_eventfd_ring_shared(int fd);

/// A spin-wait hint: PAUSE on x86, YIELD on arm64.
static inline void vms_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

// MARK: CPU affinity and parent death (vmperf --paper)
// sched_setaffinity needs _GNU_SOURCE and prctl is variadic, so neither reaches Swift. A mask is glibc's cpu_set_t
// (1024 CPUs, bit n of word n / 64), copied out so that it can be saved and put back.
typedef struct { uint64_t bits[16]; } vms_cpu_mask;
/// The calling thread's allowed CPUs (sched_getaffinity). Returns 0 or -1 with errno set.
int vms_get_affinity(vms_cpu_mask *mask);
/// Restricts the calling thread to `mask` (sched_setaffinity). Returns 0 or -1 with errno set.
int vms_set_affinity(const vms_cpu_mask *mask);
/// prctl(PR_SET_PDEATHSIG, sig): the kernel sends `sig` to us when the thread that started us exits.
int vms_set_parent_death_signal(int sig);

// MARK: a guest's ivshmem device (Sources/VMSock/Ivshmem/IvshmemDevice.swift)
/// Device registers (BAR0) are read and written exactly once, at their width: volatile, never merged or split.
static inline uint32_t vms_mmio_read32(const void *p) { return *(const volatile uint32_t *)p; }
static inline void vms_mmio_write32(void *p, uint32_t v) { *(volatile uint32_t *)p = v; }

/// A PCI device bound to vfio-pci, opened through its IOMMU group (vfio.c). Each call returns 0 (or a count) or
/// -1 with errno set.
typedef struct {
    int container;
    int group;
    int device;
} vms_vfio;
/// Opens /dev/vfio/vfio, the group of `bdf` (/sys/bus/pci/devices/BDF/iommu_group), sets the type-1 IOMMU, and gets
/// the device. On failure everything opened is closed again.
int vms_vfio_open(const char *bdf, vms_vfio *out);
void vms_vfio_close(vms_vfio *vfio);
/// VFIO_DEVICE_GET_REGION_INFO: where region `index` (a BAR, 7 for config space) is in the device fd, and its size.
int vms_vfio_region(const vms_vfio *vfio, uint32_t index, uint64_t *offset, uint64_t *size);
/// Sets Bus Master in the PCI command register: without it the device's MSI-X writes are dropped, silently.
int vms_vfio_enable_bus_master(const vms_vfio *vfio);
/// How many MSI-X vectors the device has (VFIO_DEVICE_GET_IRQ_INFO); 0 for none.
int vms_vfio_msix_vectors(const vms_vfio *vfio);
/// VFIO_DEVICE_SET_IRQS: MSI-X vector i signals eventfd fds[i], for i < count.
int vms_vfio_route_msix(const vms_vfio *vfio, const int *fds, uint32_t count);

// MARK: the C API's handle table and last error (Sources/VMSockHandles)
// Globals that every call of the C API reaches before anything else: kept in C so that reaching them costs a load,
// not the swift_once check (a function call) that a lazily made Swift global costs at every access.
/// Slots per chunk and chunks of the handle table: 1024 x 1024 handles. A chunk is made once and never freed.
#define VMS_HANDLE_CHUNK_SLOTS 1024
#define VMS_HANDLE_CHUNKS 1024
/// The address of each chunk (0 until it is made), indexed by slot number / VMS_HANDLE_CHUNK_SLOTS.
extern uint64_t vms_handle_chunks[VMS_HANDLE_CHUNKS];
/// Acquire: whoever sees a chunk's address sees the slots the maker initialized before storing it with release.
static inline uint64_t vms_handle_chunk_load(uint32_t index) {
    return __atomic_load_n(&vms_handle_chunks[index % VMS_HANDLE_CHUNKS], __ATOMIC_ACQUIRE);
}
static inline void vms_handle_chunk_store(uint32_t index, uint64_t address) {
    __atomic_store_n(&vms_handle_chunks[index % VMS_HANDLE_CHUNKS], address, __ATOMIC_RELEASE);
}
/// The calling thread's last error message for the C API: copies up to 255 bytes of `text` (NUL-terminated there).
void vms_last_error_set(const char *text, size_t length);
/// The calling thread's last error message ("" before the first).
const char *vms_last_error_get(void);

// MARK: settings
/// The value of the vmsock setting `name` (VMSOCK_...): from the copy `vms_settings_keep` made, once it has run,
/// else from the environment now. NULL when unset.
const char *vms_setting(const char *name);
/// Copies every VMSOCK_ variable of the environment now, for `vms_setting` to answer from from then on. vmsock-run's
/// library calls it when it loads: a program may replace its environment before its first listen or connect (nginx
/// keeps only TZ). Call it before any other thread runs; later calls change nothing.
void vms_settings_keep(void);

// MARK: test pattern
// A deterministic pseudo-random byte stream: the byte at stream offset o depends only on (seed, o), so a receiver
// can check any chunking of it, and a lost, duplicated or reordered byte shows at its exact offset.
void vms_pattern_fill(void *buf, size_t len, uint64_t offset, uint64_t seed);
/// Returns len when all bytes match, or the index of the first byte that does not.
size_t vms_pattern_check(const void *buf, size_t len, uint64_t offset, uint64_t seed);

#endif
