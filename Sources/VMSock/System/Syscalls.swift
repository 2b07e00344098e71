import CVMSock
import Glibc

// The narrow layer every system call goes through: one small function per C call, EINTR retried in one place,
// failures turned into `VMSockError` with the errno preserved. `close` is never retried (on Linux the descriptor
// is gone even when close reports EINTR; retrying could close a descriptor another thread just opened).

enum Sys {
    /// Runs `call` again while it fails with EINTR.
    @inline(__always)
    static func retryingEINTR<T: FixedWidthInteger>(_ call: () -> T) -> T {
        while true {
            let result = call()
            if result != -1 || errno != EINTR { return result }
        }
    }

    /// Runs `call` (EINTR retried) and throws `VMSockError.system(what)` when it returns -1.
    @inline(__always)
    @discardableResult
    static func check<T: FixedWidthInteger>(_ what: @autoclosure () -> String, _ call: () -> T) throws(VMSockError) -> T {
        let result = retryingEINTR(call)
        if result == -1 { throw VMSockError.system(what()) }
        return result
    }

    static func close(_ fd: Int32) { _ = Glibc.close(fd) }

    static func setNonBlocking(_ fd: Int32, _ on: Bool) throws(VMSockError) {
        let flags = try check("fcntl(F_GETFL)") { fcntl(fd, F_GETFL) }
        let wanted = on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK
        if wanted != flags { try check("fcntl(F_SETFL)") { fcntl(fd, F_SETFL, wanted) } }
    }

    /// Waits for `events` on the descriptors, up to `timeoutMs` (-1 forever). Returns the number ready, and 0 when
    /// a signal interrupted the wait: callers loop and recompute what is left of their timeout, which a retry
    /// here with the original timeout would stretch.
    static func poll(_ fds: inout [pollfd], timeoutMs: Int32) throws(VMSockError) -> Int32 {
        let count = nfds_t(fds.count)
        let ready = fds.withUnsafeMutableBufferPointer { Glibc.poll($0.baseAddress, count, timeoutMs) }
        if ready >= 0 { return ready }
        if errno == EINTR { return 0 }
        throw VMSockError.system("poll")
    }

    /// What a descriptor is, as /proc shows it ("anon_inode:[eventfd]", "/memfd:vmsock (deleted)", ...).
    static func describe(_ fd: Int32) -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        let n = readlink("/proc/self/fd/\(fd)", &buffer, buffer.count - 1)
        guard n > 0 else { return "" }
        return buffer.withUnsafeBufferPointer { String(decoding: UnsafeRawBufferPointer($0).prefix(n), as: UTF8.self) }
    }
}

/// A monotonic clock in nanoseconds. clock_gettime goes through the vDSO: no system call.
@inline(__always)
func monotonicNanos() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
}

/// An open file descriptor that this process owns; closed exactly once, when the last reference goes (unless its
/// owner handed it on with `release`).
final class Descriptor: @unchecked Sendable {  // immutable after init, but for the owner's one `release`
    let raw: Int32
    private var owned = true

    init(_ raw: Int32) {
        precondition(raw >= 0)
        self.raw = raw
    }

    /// Hands the descriptor to a new owner, which must close it; this object no longer will.
    func release() -> Int32 {
        owned = false
        return raw
    }

    deinit { if owned { Sys.close(raw) } }
}
