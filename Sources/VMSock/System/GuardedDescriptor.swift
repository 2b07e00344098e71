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
    /// Bit 0: closed. Above it: twice the number of calls inside `use` right now.
    private let users = Atomic<Int>(0)
    private let released = Atomic<Bool>(false)

    /// Run once, just before the descriptor is closed, once no call uses it: for an owner whose other resources
    /// the calls inside `use` also rely on (the listener's sockets, whose hang-up wakes a wait on its epoll set).
    private let beforeClose: (@Sendable () -> Void)?
    /// The process that made it. A forked child's copy counts the parent's calls inside `use` (threads the child
    /// does not have), and its socket is the parent's too: there `close` closes the number and never shuts down.
    private let creator = Sys.processID()

    init(_ raw: Int32, beforeClose: (@Sendable () -> Void)? = nil) {
        precondition(raw >= 0)
        self.raw = raw
        self.beforeClose = beforeClose
    }

    deinit { close() }

    var isClosed: Bool { users.load(ordering: .relaxed) & 1 != 0 }

    /// Runs `body` with the descriptor, which stays open until `body` returns.
    /// - Throws: EBADF, saying `what` is closed, when `close` was called before.
    @inline(__always)
    func use<R>(_ what: @autoclosure () -> String, _ body: (Int32) throws(VMSockError) -> R) throws(VMSockError) -> R {
        if users.add(2, ordering: .acquiringAndReleasing).newValue & 1 != 0 {
            leave()
            throw VMSockError(code: EBADF, "\(what()) is closed")
        }
        defer { leave() }
        return try body(raw)
    }

    @inline(__always)
    private func leave() {
        if users.subtract(2, ordering: .acquiringAndReleasing).newValue == 1 { release() }
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
    /// closed now, or by the last call still inside `use`. Idempotent.
    ///
    /// `close` counts itself in while it shuts the socket down: otherwise the last call could leave and close the
    /// number in between, another thread's `socket` or `accept` could get it, and the shutdown would hang up that
    /// stranger (a parked link's control socket, seen by its peer as gone).
    func close() {
        guard Sys.processID() == creator else {
            if users.bitwiseOr(1, ordering: .acquiringAndReleasing).oldValue & 1 == 0 { release() }
            return
        }
        users.add(2, ordering: .acquiringAndReleasing)
        let before = users.bitwiseOr(1, ordering: .acquiringAndReleasing).oldValue
        let othersInside = before >> 1 > 1
        if before & 1 == 0 && othersInside { Sys.shutdown(raw) }
        leave()
    }
}
