import Glibc

/// A `VMListener` with async accept: a task waiting for a connector awaits, and an event loop's thread wakes it
/// when one arrives.
///
/// `accept` never waits on one connector: a shared-memory connector's handshake completes when its hello arrives
/// (the loop wakes the task then), and a silent one is dropped at the listener's handshake timeout.
///
/// Cancellation: `accept` in a cancelled task throws ECANCELED promptly; the listener stays open, and no
/// connection is lost (a connector that was waiting is still waiting for the next accept).
public final class AsyncListener: Sendable {
    public let listener: VMListener
    public let loop: EventLoop
    private let waiter: ReadinessWaiter

    /// Binds `listener` to `loop` for waiting, and makes it non-blocking. Any thread.
    public init(_ listener: VMListener, on loop: EventLoop) throws(VMSockError) {
        self.listener = listener
        self.loop = loop
        listener.isNonBlocking = true
        waiter = try ReadinessWaiter(
            loop: loop, interest: PollInterest(descriptor: listener.pollDescriptor, events: Int16(POLLIN)))
    }

    /// Accepts the next connection, waiting for one, and binds it to the same loop.
    /// - Throws: ECANCELED, EBADF (the listener was closed), or another error from the listener. One task at a
    ///   time: concurrent accepts are not supported.
    public func accept() async throws(VMSockError) -> AsyncSocket {
        while true {
            if Task.isCancelled { throw VMSockError(code: ECANCELED, "accept cancelled") }
            do throws(VMSockError) {
                return try AsyncSocket(try listener.accept(), on: loop)
            } catch {
                if error.code != EAGAIN { throw error }
            }
            await waiter.wait()
        }
    }

    /// The accepted connections, as an async sequence that ends when the listener is closed.
    public var connections: AcceptedConnections { AcceptedConnections(listener: self) }

    /// Stops listening; a task waiting in `accept` wakes and fails with EBADF (the sequence ends). Idempotent.
    /// Close through here, not through `listener`: closing the descriptor takes it out of the loop's epoll set
    /// without an event, so the waiting task must be woken by hand.
    public func close() {
        listener.close()
        waiter.close()
    }
}

/// Accepted connections of an `AsyncListener`, one at a time, until the listener is closed.
public struct AcceptedConnections: AsyncSequence, Sendable {
    public typealias Element = AsyncSocket
    public typealias Failure = VMSockError

    let listener: AsyncListener

    public func makeAsyncIterator() -> Iterator { Iterator(listener: listener) }

    public struct Iterator: AsyncIteratorProtocol {
        let listener: AsyncListener

        /// The next connection; nil once the listener is closed. Throws ECANCELED when the task is cancelled.
        public mutating func next() async throws(VMSockError) -> AsyncSocket? {
            do throws(VMSockError) {
                return try await listener.accept()
            } catch {
                if error.code == EBADF { return nil }
                throw error
            }
        }
    }
}
