import CVMSock
import Glibc
import Synchronization

// The narrow layer every system call goes through: one small function per C call, EINTR retried in one place
// (`retryingEINTR`), failures turned into `VMSockError` with the errno preserved and a message naming the call.
// A function that ignores a failure says why, where it ignores it. `close` is never retried (on Linux the
// descriptor is gone even when close reports EINTR; retrying could close a descriptor another thread just opened).
//
// By concern: this file (descriptors, processes, files), `WaitCalls.swift` (poll, epoll, timerfd, eventfd, sleep),
// `SocketCalls.swift` (sockets, and the data path's sends and receives), `AddressCalls.swift` (socket names,
// getaddrinfo, getifaddrs), `MemoryCalls.swift` (memfd and seals, mmap, membarrier).
//
// The data path's calls (doorbell rings and drains, TCP send and receive) are `@inline(__always)` and return the
// raw result, -1 with errno set on failure: their callers map errno to their own errors, and a success costs no
// more than the C call (no error built, no allocation).

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

    // MARK: Descriptors

    /// close(2), never retried, its result ignored: Linux releases the descriptor whatever close reports (EINTR and
    /// EIO included), so there is nothing to retry and nothing the owner could do about it; EBADF would be a second
    /// close, which `Descriptor` and `GuardedDescriptor` rule out.
    static func close(_ fd: Int32) { _ = Glibc.close(fd) }

    /// Runs `body` with every signal blocked on this thread, then restores the mask: a thread created in `body`
    /// inherits the blocked mask, so it never runs the application's signal handlers.
    static func withSignalsBlocked<R>(_ body: () -> R) -> R {
        var all = sigset_t()
        var saved = sigset_t()
        sigfillset(&all)
        _ = pthread_sigmask(SIG_BLOCK, &all, &saved)  // cannot fail with a valid `how`
        defer { _ = pthread_sigmask(SIG_SETMASK, &saved, nil) }
        return body()
    }

    /// Starts a detached thread of the library's own that runs `body`. It starts with every signal blocked, so
    /// that none meant for the application runs its handler there (nginx's master sleeps in sigsuspend for
    /// SIGCHLD; a SIGCHLD taken by a library thread would leave it asleep).
    static func startThread(_ name: String, _ body: @escaping @Sendable () -> Void) throws(VMSockError) {
        final class Box: @unchecked Sendable {  // handed to the thread once
            let body: @Sendable () -> Void
            init(_ body: @escaping @Sendable () -> Void) { self.body = body }
        }
        var thread = pthread_t()
        let context = Unmanaged.passRetained(Box(body)).toOpaque()
        let status = withSignalsBlocked {
            pthread_create(&thread, nil, { context in
                Unmanaged<Box>.fromOpaque(context!).takeRetainedValue().body()
                return nil
            }, context)
        }
        guard status == 0 else {
            Unmanaged<Box>.fromOpaque(context).release()
            throw VMSockError.system("pthread_create(\(name))", errno: status)
        }
        pthread_detach(thread)
    }

    /// fcntl(F_GETFL) and, when the flag must change, fcntl(F_SETFL): sets or clears O_NONBLOCK.
    static func setNonBlocking(_ fd: Int32, _ on: Bool) throws(VMSockError) {
        let flags = try check("fcntl(F_GETFL)") { fcntl(fd, F_GETFL) }
        let wanted = on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK
        if wanted != flags { try check("fcntl(F_SETFL)") { fcntl(fd, F_SETFL, wanted) } }
    }

    /// fcntl(F_SETFL, 0): clears every status flag (O_NONBLOCK, O_APPEND, O_ASYNC, ...) without asking which are
    /// set, for a descriptor of our own whose only one is O_NONBLOCK.
    static func clearStatusFlags(_ fd: Int32) throws(VMSockError) {
        try check("fcntl(F_SETFL)") { fcntl(fd, F_SETFL, 0) }
    }

    /// dup(2): a second descriptor for the same open file (not close-on-exec, as dup makes it).
    static func duplicate(_ fd: Int32) throws(VMSockError) -> Descriptor {
        Descriptor(try check("dup") { dup(fd) })
    }

    // MARK: Processes

    /// A vmsock setting (`VMSOCK_...`): the environment's value, or under vmsock-run the value it had when the
    /// library loaded (`vms_settings_keep`). Nil when unset.
    static func setting(_ name: String) -> String? { vms_setting(name).map { String(cString: $0) } }

    /// getpid(2), which cannot fail.
    static func processID() -> pid_t { getpid() }
    /// Forks this process has made, as a count that changes at each (`vms_fork_count`; no system call).
    static func forkCount() -> UInt { UInt(vms_fork_count()) }

    /// getuid(2), which cannot fail.
    static func userID() -> uid_t { getuid() }

    /// setrlimit(RLIMIT_NOFILE) with the soft limit raised to the hard one: as many descriptors as this process
    /// may have (vmsockd holds V + 1 per client). Returns the limit now in force; a failure (none is expected: the
    /// soft limit may always go up to the hard one) leaves the old one, which is returned.
    @discardableResult
    static func raiseOpenFileLimit() -> UInt64 {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 0 }
        guard limit.rlim_cur < limit.rlim_max else { return UInt64(limit.rlim_cur) }
        let old = limit.rlim_cur
        limit.rlim_cur = limit.rlim_max
        return setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 ? UInt64(limit.rlim_max) : UInt64(old)
    }

    /// sched_yield(2): lets another runnable thread have this core. It always succeeds on Linux.
    @inline(__always)
    static func yield() { _ = sched_yield() }

    /// Sleeps for `duration` (nanosleep); a signal does not cut it short: the sleep resumes with the time left. A
    /// negative duration does not sleep (nanosleep says EINVAL, which is all there is to ignore here).
    static func sleep(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        var left = timespec(tv_sec: Int(seconds), tv_nsec: Int(attoseconds / 1_000_000_000))
        var rest = timespec()
        _ = retryingEINTR { () -> Int32 in
            let result = nanosleep(&left, &rest)
            left = rest  // after EINTR, what is left; unused otherwise
            return result
        }
    }

    /// write(2) of a warning to standard error, all of it (EINTR retried, short writes continued). A failure is
    /// ignored: with standard error closed or broken there is nowhere left to report anything.
    static func writeToStandardError(_ text: String) {
        var bytes = Array(text.utf8)
        bytes.withUnsafeMutableBytes { buffer in
            var done = 0
            while done < buffer.count {
                let written = retryingEINTR { Glibc.write(2, buffer.baseAddress! + done, buffer.count - done) }
                if written <= 0 { return }
                done += written
            }
        }
    }

    // MARK: Files

    /// unlink(2), its failure ignored: callers remove a stale socket file before binding the name again (a file
    /// still there makes that bind fail with EADDRINUSE, which is reported), or their own file when they close (a
    /// file left behind answers nobody, and the next listener on that name replaces it).
    static func unlink(_ path: String) { _ = Glibc.unlink(path) }

    /// stat(2): the inode of the file at `path`, or nil when there is none, or none we may look at (any failure:
    /// ENOENT, EACCES, ...; callers compare inodes, and nil matches nothing).
    static func inode(of path: String) -> ino_t? {
        var info = stat()
        return retryingEINTR { stat(path, &info) } == 0 ? info.st_ino : nil
    }

    /// open(2), read(2) and close(2) of a small file: up to `limit` bytes of it, nil when it cannot be read.
    static func readSmallFile(_ path: String, limit: Int = 4096) -> [UInt8]? {
        let fd = retryingEINTR { Glibc.open(path, O_RDONLY | O_CLOEXEC) }
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: limit)
        let got = buffer.withUnsafeMutableBytes { bytes in retryingEINTR { Glibc.read(fd, bytes.baseAddress, bytes.count) } }
        return got >= 0 ? Array(buffer[0..<got]) : nil
    }

    /// stat(2) of `path` (following links): what is there, or nil when nothing is, or nothing we may look at.
    static func pathStatus(_ path: String) -> stat? {
        var info = stat()
        return retryingEINTR { stat(path, &info) } == 0 ? info : nil
    }

    /// What a descriptor is, as /proc shows it ("anon_inode:[eventfd]", "/memfd:vmsock (deleted)", ...), for error
    /// messages; readlink(2) of /proc/self/fd/N. Empty when it cannot say (a closed descriptor, no /proc): the
    /// message is then only less specific.
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
        self.raw = LibraryDescriptors.moved(raw)
    }

    /// Hands the descriptor to a new owner, which must close it; this object no longer will.
    func release() -> Int32 {
        owned = false
        return raw
    }

    deinit { if owned { Sys.close(raw) } }
}

/// Under vmsock-run the library's descriptors (a shared-memory connection holds seven: its control socket and
/// doorbells) share the application's numbers. Programs size tables by descriptor number (wrk sizes its event loop
/// by its connection count, `select` stops at 1024), so the library keeps its own above a floor: each new one is
/// moved up when it is made, if there is room there. Off (floor 0) outside vmsock-run.
package enum LibraryDescriptors {
    private static let floor = Atomic<Int32>(0)

    /// Keeps the library's descriptors at or above half the soft descriptor limit (at most 4096).
    package static func keepAboveHalfTheLimit() {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur >= 64 else { return }
        let half = min(limit.rlim_cur / 2, 4096)  // RLIM_INFINITY is the largest value: 4096
        floor.store(Int32(half), ordering: .relaxed)
    }

    /// `fd`, or a copy of it at or above the floor (close-on-exec, the original closed) when it is below.
    static func moved(_ fd: Int32) -> Int32 {
        let floor = floor.load(ordering: .relaxed)
        guard floor > 0, fd < floor else { return fd }
        let moved = fcntl(fd, F_DUPFD_CLOEXEC, floor)
        guard moved >= 0 else { return fd }  // no room up there: it stays where it is
        Sys.close(fd)
        return moved
    }
}
