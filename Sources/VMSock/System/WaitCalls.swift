import CVMSock
import Glibc

// Waiting: poll, epoll, timerfd, eventfd. See `Sys` in Syscalls.swift for the rules every call here follows.

extension Sys {
    // MARK: poll

    /// poll(2): waits for `events` on the descriptors, up to `timeoutMs` (-1 forever). Returns the number ready, and
    /// 0 when a signal interrupted the wait: callers loop and recompute what is left of their timeout, which a
    /// retry here with the original timeout would stretch (poll is the one call whose EINTR is not retried).
    static func poll(_ fds: inout [pollfd], timeoutMs: Int32) throws(VMSockError) -> Int32 {
        let count = nfds_t(fds.count)
        let ready = fds.withUnsafeMutableBufferPointer { Glibc.poll($0.baseAddress, count, timeoutMs) }
        if ready >= 0 { return ready }
        if errno == EINTR { return 0 }
        throw VMSockError.system("poll")
    }

    /// poll(2) on one descriptor, without an array: what it polled (`revents`: one of `events`, or POLLHUP,
    /// POLLERR, POLLNVAL), or 0 when `timeoutMs` passed first or a signal interrupted the wait (see above).
    static func poll(_ fd: Int32, _ events: Int16, timeoutMs: Int32) throws(VMSockError) -> Int16 {
        var pfd = pollfd(fd: fd, events: events, revents: 0)
        let ready = Glibc.poll(&pfd, 1, timeoutMs)
        if ready > 0 { return pfd.revents }
        if ready == 0 || errno == EINTR { return 0 }
        throw VMSockError.system("poll")
    }

    /// Waits until `fd` polls one of `events` (or hangs up, or errs), or `deadline` passes. A signal does not end
    /// the wait early: it resumes with the time left. Returns true when the descriptor is ready, false when the
    /// deadline passed.
    static func wait(_ fd: Int32, _ events: Int16, until deadline: Deadline) throws(VMSockError) -> Bool {
        while let timeoutMs = deadline.pollTimeout {
            if try poll(fd, events, timeoutMs: timeoutMs) != 0 { return true }
        }
        return try poll(fd, events, timeoutMs: 0) != 0  // one last look at the deadline
    }

    /// Whether `fd` polls one of `events` (or hangs up, or errs) right now. Never waits.
    static func isReady(_ fd: Int32, _ events: Int16) throws(VMSockError) -> Bool {
        try poll(fd, events, timeoutMs: 0) != 0
    }

    // MARK: epoll

    /// epoll_create1(EPOLL_CLOEXEC): a new epoll set.
    static func epollCreate() throws(VMSockError) -> Descriptor {
        Descriptor(try check("epoll_create1") { epoll_create1(Int32(EPOLL_CLOEXEC)) })
    }

    /// epoll_ctl: adds, changes or removes `fd` in the set, with `data` as its event's data word.
    static func epollControl(_ epoll: Int32, _ operation: Int32, _ fd: Int32, events: UInt32, data: UInt64) throws(VMSockError) {
        var event = epoll_event(events: events, data: epoll_data_t(u64: data))
        try check("epoll_ctl") { epoll_ctl(epoll, operation, fd, &event) }
    }

    /// epoll_wait(2) for up to `timeoutMs` (-1 forever): how many of `events` it filled, 0 when the time passed or a
    /// signal interrupted the wait (as `poll` above: callers loop, and a signal handler's eventfd is in the set).
    static func epollWait(_ epoll: Int32, _ events: inout [epoll_event], timeoutMs: Int32) throws(VMSockError) -> Int {
        let count = events.count
        let ready = events.withUnsafeMutableBufferPointer { epoll_wait(epoll, $0.baseAddress, Int32(count), timeoutMs) }
        if ready >= 0 { return Int(ready) }
        if errno == EINTR { return 0 }
        throw VMSockError.system("epoll_wait")
    }

    /// epoll_wait without waiting: how many of `events` it filled. A failure reads as none ready: with a timeout of
    /// 0 it neither sleeps nor sees EINTR, and what is left (EBADF, EFAULT, EINVAL) would be a bug of ours.
    static func epollReady(_ epoll: Int32, _ events: inout [epoll_event]) -> Int {
        let count = events.count
        let ready = events.withUnsafeMutableBufferPointer { epoll_wait(epoll, $0.baseAddress, Int32(count), 0) }
        return max(0, Int(ready))
    }

    // MARK: timerfd and eventfd

    /// timerfd_create: a CLOCK_MONOTONIC timerfd, non-blocking and close-on-exec.
    static func timerCreate() throws(VMSockError) -> Descriptor {
        Descriptor(try check("timerfd_create") {
            timerfd_create(CLOCK_MONOTONIC, Int32(TFD_CLOEXEC) | Int32(TFD_NONBLOCK))
        })
    }

    /// timerfd_settime: arms a timerfd for `deadline` (absolute CLOCK_MONOTONIC nanoseconds), or disarms it for nil;
    /// either way a pending expiry is cleared. Fails only for a descriptor that is no timerfd, or a value out of
    /// range.
    static func timerSet(_ fd: Int32, at deadline: Int64?) throws(VMSockError) {
        var spec = itimerspec()
        if let deadline {
            spec.it_value = timespec(tv_sec: Int(deadline / 1_000_000_000), tv_nsec: Int(deadline % 1_000_000_000))
        }
        try check("timerfd_settime") { timerfd_settime(fd, Int32(TFD_TIMER_ABSTIME), &spec, nil) }
    }

    /// read(2) of a timerfd's expiry count, clearing it: how many expiries there were, 0 when none is pending. Any
    /// failure reads as none: EAGAIN is exactly that (which is what clearing wants), and what is left (EBADF,
    /// EINVAL) would be a bug of ours.
    @discardableResult
    static func timerClear(_ fd: Int32) -> UInt64 {
        var ticks: UInt64 = 0
        let got = retryingEINTR { Glibc.read(fd, &ticks, 8) }
        return got == 8 ? ticks : 0
    }

    /// EMFILE or ENFILE when this process could not open one more descriptor now; nil when it could.
    static func descriptorShortage() -> Int32? {
        do throws(VMSockError) {
            _ = try eventFD(flags: Int32(EFD_CLOEXEC))
            return nil
        } catch {
            return error.code == EMFILE || error.code == ENFILE ? error.code : nil
        }
    }

    /// eventfd(2) with a count of 0 and `flags` (EFD_CLOEXEC, ...).
    static func eventFD(flags: Int32) throws(VMSockError) -> Descriptor {
        Descriptor(try check("eventfd") { eventfd(0, flags) })
    }

    /// write(2) of 1 to an eventfd: one ring. Its failure is ignored: EAGAIN (a non-blocking eventfd whose count is
    /// at its maximum) already holds rings that wake the reader as this one would, and EBADF or EINVAL would be a
    /// bug of ours. The eventfd must be non-blocking (see `IvshmemPeer` for who could change that).
    @inline(__always)
    static func eventRing(_ fd: Int32) {
        var one: UInt64 = 1
        _ = retryingEINTR { Glibc.write(fd, &one, 8) }
    }

    /// read(2) of a non-blocking eventfd's count, clearing it: the rings since the last read, 0 when there were none
    /// (EAGAIN, and any other failure: EBADF or EINVAL would be a bug of ours).
    @discardableResult
    static func eventDrain(_ fd: Int32) -> UInt64 {
        var count: UInt64 = 0
        let got = retryingEINTR { Glibc.read(fd, &count, 8) }
        return got == 8 ? count : 0
    }

    // MARK: Signals

    /// sigaction(2) for `signal`: a handler that writes 1 to the eventfd `fd` (async-signal-safe), with SA_RESTART,
    /// so that a loop that waits on `fd` sees the signal as a readable descriptor (vmsockd's SIGINT and SIGTERM).
    static func forwardSignal(_ signal: Int32, toEventFD fd: Int32) throws(VMSockError) {
        try check("sigaction(\(signal))") { vms_forward_signal(signal, fd) }
    }
}
