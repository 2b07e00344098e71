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

    /// shutdown(SHUT_RDWR), to wake whoever waits on a socket. A socket already shut down or reset (ENOTCONN),
    /// or a descriptor that is no socket (ENOTSOCK), has nobody left to wake: nothing to report.
    static func shutdown(_ fd: Int32) { _ = Glibc.shutdown(fd, Int32(SHUT_RDWR)) }

    static func unlink(_ path: String) { _ = Glibc.unlink(path) }

    /// The inode of the file at `path`, or nil when there is none.
    static func inode(of path: String) -> ino_t? {
        var info = stat()
        return stat(path, &info) == 0 ? info.st_ino : nil
    }

    /// A new epoll set, close-on-exec.
    static func epollCreate() throws(VMSockError) -> Descriptor {
        Descriptor(try check("epoll_create1") { epoll_create1(Int32(EPOLL_CLOEXEC)) })
    }

    /// epoll_ctl: adds, changes or removes `fd` in the set, with `data` as its event's data word.
    static func epollControl(_ epoll: Int32, _ operation: Int32, _ fd: Int32, events: UInt32, data: UInt64) throws(VMSockError) {
        var event = epoll_event(events: events, data: epoll_data_t(u64: data))
        try check("epoll_ctl") { epoll_ctl(epoll, operation, fd, &event) }
    }

    /// epoll_wait without waiting: how many of `events` it filled.
    static func epollReady(_ epoll: Int32, _ events: inout [epoll_event]) -> Int {
        let count = events.count
        let ready = events.withUnsafeMutableBufferPointer { epoll_wait(epoll, $0.baseAddress, Int32(count), 0) }
        return max(0, Int(ready))
    }

    /// A CLOCK_MONOTONIC timerfd, non-blocking and close-on-exec.
    static func timerCreate() throws(VMSockError) -> Descriptor {
        Descriptor(try check("timerfd_create") {
            timerfd_create(CLOCK_MONOTONIC, Int32(TFD_CLOEXEC) | Int32(TFD_NONBLOCK))
        })
    }

    /// Arms a timerfd for `deadline` (absolute CLOCK_MONOTONIC nanoseconds), or disarms it for nil; either way a
    /// pending expiry is cleared. Fails only for a descriptor that is no timerfd, or a value out of range.
    static func timerSet(_ fd: Int32, at deadline: Int64?) throws(VMSockError) {
        var spec = itimerspec()
        if let deadline {
            spec.it_value = timespec(tv_sec: Int(deadline / 1_000_000_000), tv_nsec: Int(deadline % 1_000_000_000))
        }
        try check("timerfd_settime") { timerfd_settime(fd, Int32(TFD_TIMER_ABSTIME), &spec, nil) }
    }

    /// Reads a timerfd's expiry count, clearing it: how many expiries there were, 0 when none is pending.
    @discardableResult
    static func timerClear(_ fd: Int32) -> UInt64 {
        var ticks: UInt64 = 0
        let got = retryingEINTR { Glibc.read(fd, &ticks, 8) }
        return got == 8 ? ticks : 0  // EAGAIN: nothing pending, which is what clearing wants
    }

    /// One non-blocking accept on a Unix listening socket: the connection (close-on-exec), or nil when none is
    /// waiting (or it died before we took it).
    static func acceptUnix(_ fd: Int32, what: @autoclosure () -> String) throws(VMSockError) -> Descriptor? {
        let accepted = retryingEINTR { vms_accept4_cloexec(fd) }
        if accepted >= 0 { return Descriptor(accepted) }
        let code = errno
        if code == EAGAIN || code == ECONNABORTED { return nil }
        throw VMSockError.system(what(), errno: code)
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

    /// Waits until `fd` polls one of `events` (or hangs up, or errs), or `deadline` passes. A signal does not end
    /// the wait early: it resumes with the time left. Returns true when the descriptor is ready, false when the
    /// deadline passed.
    static func wait(_ fd: Int32, _ events: Int16, until deadline: Deadline) throws(VMSockError) -> Bool {
        var pfd = [pollfd(fd: fd, events: events, revents: 0)]
        while let timeoutMs = deadline.pollTimeout {
            if try poll(&pfd, timeoutMs: timeoutMs) > 0 { return true }
        }
        return try poll(&pfd, timeoutMs: 0) > 0  // one last look at the deadline
    }

    /// Whether `fd` polls one of `events` (or hangs up, or errs) right now. Never waits.
    static func isReady(_ fd: Int32, _ events: Int16) throws(VMSockError) -> Bool {
        var pfd = [pollfd(fd: fd, events: events, revents: 0)]
        return try poll(&pfd, timeoutMs: 0) > 0
    }

    /// Sleeps for `duration`; a signal does not cut it short.
    static func sleep(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        var left = timespec(tv_sec: Int(seconds), tv_nsec: Int(attoseconds / 1_000_000_000))
        var rest = timespec()
        while nanosleep(&left, &rest) != 0 && errno == EINTR { left = rest }
    }

    /// What a descriptor is, as /proc shows it ("anon_inode:[eventfd]", "/memfd:vmsock (deleted)", ...).
    static func describe(_ fd: Int32) -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        let n = readlink("/proc/self/fd/\(fd)", &buffer, buffer.count - 1)
        guard n > 0 else { return "" }
        return buffer.withUnsafeBufferPointer { String(decoding: UnsafeRawBufferPointer($0).prefix(n), as: UTF8.self) }
    }
}

/// A monotonic clock in nanoseconds. clock_gettime goes through the vDSO: no system call. Inlinable, so that a
/// caller in another module (vmperf's round-trip timer, through `MonotonicClock`) pays no call for it.
@inlinable @inline(__always)
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
