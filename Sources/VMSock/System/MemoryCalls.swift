import CVMSock
import Glibc

// Memory: memfd and its seals, mmap, membarrier. See `Sys` in Syscalls.swift for the rules every call here follows.

extension Sys {
    // MARK: memfd and seals

    /// memfd_create(2) (through CVMSock: glibc shows it only under _GNU_SOURCE).
    static func memfdCreate(_ name: String, flags: UInt32) throws(VMSockError) -> Descriptor {
        Descriptor(try check("memfd_create") { vms_memfd_create(name, flags) })
    }

    /// ftruncate(2): sets the file's size. A size above the process's file size limit (`ulimit -f`) fails here
    /// with EFBIG and says so: the kernel would send SIGXFSZ, whose default action ends the whole process.
    static func truncate(_ fd: Int32, to size: Int, _ what: @autoclosure () -> String) throws(VMSockError) {
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_FSIZE.rawValue), &limit) == 0, limit.rlim_cur != rlim_t.max,
           UInt64(size) > UInt64(limit.rlim_cur) {
            throw VMSockError(
                code: EFBIG,
                "\(what()): \(size) bytes is above this process's file size limit of \(limit.rlim_cur) bytes "
                    + "(ulimit -f); raise it for shared memory")
        }
        try check(what()) { ftruncate(fd, off_t(size)) }
    }

    /// fcntl(F_ADD_SEALS): seals a memfd (VMS_F_SEAL_GROW, ...).
    static func addSeals(_ fd: Int32, _ seals: Int32) throws(VMSockError) {
        try check("fcntl(F_ADD_SEALS)") { fcntl(fd, VMS_F_ADD_SEALS, seals) }
    }

    /// fcntl(F_GET_SEALS): a memfd's seals. EINVAL for a file that is no memfd.
    static func seals(_ fd: Int32) throws(VMSockError) -> Int32 {
        try check("fcntl(F_GET_SEALS)") { fcntl(fd, VMS_F_GET_SEALS) }
    }

    /// fstat(2).
    static func fileStatus(_ fd: Int32, _ what: @autoclosure () -> String) throws(VMSockError) -> stat {
        var info = stat()
        try check(what()) { fstat(fd, &info) }
        return info
    }

    // MARK: Mappings

    /// mmap(2) of `length` bytes of `fd` from `offset`, at `address` if given (with MAP_FIXED in `flags`, exactly
    /// there, replacing what was mapped).
    static func map(
        at address: UnsafeMutableRawPointer?, _ length: Int, _ protection: Int32, _ flags: Int32, _ fd: Int32,
        offset: Int, _ what: @autoclosure () -> String
    ) throws(VMSockError) -> UnsafeMutableRawPointer {
        guard let base = mmap(address, length, protection, flags, fd, off_t(offset)), base != MAP_FAILED else {
            throw .system(what())
        }
        return base
    }

    /// munmap(2), its failure ignored: it fails only for a range that is not page aligned or has length 0
    /// (EINVAL), and our mappings are neither: it would be a bug of ours, and the mapping would merely stay.
    static func unmap(_ base: UnsafeMutableRawPointer, _ length: Int) { _ = munmap(base, length) }

    // MARK: membarrier

    /// membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED): lets other processes' global expedited barriers reach
    /// the cores that run this one. Fails (ENOSYS, EINVAL, EPERM) where the kernel or a seccomp filter does not
    /// offer it.
    static func registerGlobalMembarrier() throws(VMSockError) {
        try check("membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED)") { vms_membarrier_register_global() }
    }

    /// membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED): a full memory barrier on every CPU that runs a thread of a
    /// registered process, this one included. Its one failure is ENOMEM (a CPU mask it allocates), which is
    /// retried: a barrier left out could lose a wake-up. (EINVAL and EPERM mean a kernel or seccomp filter without
    /// the command, which `registerGlobalMembarrier` finds out first: callers run this only once registered.)
    @inline(__always)
    static func globalMembarrier() {
        while vms_membarrier_global() != 0 && errno == ENOMEM { yield() }
    }
}
