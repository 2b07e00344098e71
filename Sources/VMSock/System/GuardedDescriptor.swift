import CVMSock
import Glibc
import Synchronization

/// A descriptor that one thread may close while others are blocked on it.
///
/// Closing a descriptor another thread is inside a call on is a race: the number may be reused by an `open` in
/// between, and the blocked call then acts on somebody else's file. So calls go through `use`, which counts them
/// in; `close` marks the descriptor closed, shuts the socket down so that blocked calls wake up, and whoever
/// leaves it closed with no users closes the number, exactly once.
final class GuardedDescriptor: @unchecked Sendable {  // immutable but for atomics
    let raw: Int32
    /// Bit 0: closed. Bits 1 to 39: twice the number of this process's calls inside `use` right now. Bits 40 up:
    /// the process generation the count belongs to (`vms_process_generation`): a forked child's copy holds its
    /// parent's count, of threads the child does not have, and the child's first look drops it (`adopt`).
    private let users: Atomic<Int>
    private let released = Atomic<Bool>(false)
    /// The generation of the process that made it. A forked child's copy never shuts the socket down: the socket
    /// is the parent's too (a listening socket shut down stops listening for every holder), so, as a kernel
    /// socket's close, it does not wake that process's blocked calls either; the number closes when they leave.
    private let birth = GuardedDescriptor.generation

    /// Run once, just before the descriptor is closed, once no call uses it: for an owner whose other resources
    /// the calls inside `use` also rely on (the listener's sockets, whose hang-up wakes a wait on its epoll set).
    private let beforeClose: (@Sendable () -> Void)?

    init(_ raw: Int32, beforeClose: (@Sendable () -> Void)? = nil) {
        precondition(raw >= 0)
        self.raw = raw
        self.beforeClose = beforeClose
        users = Atomic(GuardedDescriptor.generation)
    }

    deinit { close() }

    private static let generationShift = 40
    /// The closed bit and the count, without the generation.
    private static let countMask = (1 << generationShift) - 1

    /// This process's generation, in place in the `users` word (24 bits of it: equal only in the same process).
    @inline(__always)
    private static var generation: Int { Int(truncatingIfNeeded: vms_process_generation() & 0xff_ffff) << generationShift }

    var isClosed: Bool { users.load(ordering: .relaxed) & 1 != 0 }

    /// Makes the count this process's, once after a fork: the parent's count is dropped, the closed bit kept.
    /// Before any call of this process counts itself in, so nothing of this process is lost.
    @inline(__always)
    private func adopt() {
        let mine = Self.generation
        var current = users.load(ordering: .acquiring)
        while current & ~Self.countMask != mine {
            let (exchanged, original) = users.compareExchange(
                expected: current, desired: mine | current & 1, ordering: .acquiringAndReleasing)
            if exchanged { return }
            current = original
        }
    }

    /// Runs `body` with the descriptor, which stays open until `body` returns.
    /// - Throws: EBADF, saying `what` is closed, when `close` was called before.
    @inline(__always)
    func use<R>(_ what: @autoclosure () -> String, _ body: (Int32) throws(VMSockError) -> R) throws(VMSockError) -> R {
        adopt()
        if users.add(2, ordering: .acquiringAndReleasing).newValue & 1 != 0 {
            leave()
            throw VMSockError(code: EBADF, "\(what()) is closed")
        }
        defer { leave() }
        return try body(raw)
    }

    @inline(__always)
    private func leave() {
        if users.subtract(2, ordering: .acquiringAndReleasing).newValue & Self.countMask == 1 { release() }
    }

    private func release() {
        guard !released.exchange(true, ordering: .acquiringAndReleasing) else { return }
        beforeClose?()
        Sys.close(raw)
    }

    /// Shuts the socket down in both directions (SHUT_RDWR), waking every call blocked on it or polling it; the
    /// descriptor stays open. Nothing happens once it is closed.
    func shutdown() {
        try? use("socket") { fd throws(VMSockError) in Sys.shutdown(fd) }
    }

    /// Marks the descriptor closed and wakes blocked calls with `shutdown(SHUT_RDWR)`; the number itself is
    /// closed now, or by the last call still inside `use`. Idempotent. In a forked child's copy: no shutdown
    /// (see `birth`).
    ///
    /// `close` counts itself in while it shuts the socket down: otherwise the last call could leave and close the
    /// number in between, another thread's `socket` or `accept` could get it, and the shutdown would hang up that
    /// stranger (a parked link's control socket, seen by its peer as gone).
    func close() {
        adopt()
        users.add(2, ordering: .acquiringAndReleasing)
        let before = users.bitwiseOr(1, ordering: .acquiringAndReleasing).oldValue
        let othersInside = (before & Self.countMask) >> 1 > 1
        if before & 1 == 0 && othersInside && birth == Self.generation { Sys.shutdown(raw) }
        leave()
    }
}
