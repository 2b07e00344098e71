import Glibc

/// A descriptor and the `poll` event to wait for on it: what an event loop watches for one direction of a socket.
public struct PollInterest: Sendable, Equatable {
    public let descriptor: Int32
    /// POLLIN or POLLOUT.
    public let events: Int16

    public init(descriptor: Int32, events: Int16) {
        self.descriptor = descriptor
        self.events = events
    }
}

/// Something an event loop can wait on with the arm-then-poll contract: call `armReadable()` (or
/// `armWritable()`); if it returns true, do the I/O now; otherwise poll `readInterest` (or `writeInterest`), and
/// when it fires, do non-blocking I/O until EAGAIN, then arm again. Without arming, the descriptor may never fire.
///
/// Arming announces "I am waiting" to the peer, which then pays a wake-up (a doorbell system call) per publish
/// until the I/O that follows withdraws it. Who stops polling without doing that I/O (a watch disabled or
/// cancelled, a wait given up) calls `disarmReadable()` (or `disarmWritable()`), or the peer keeps ringing.
/// Arm and disarm a direction only from the thread that does that direction's I/O: the flags are its own.
///
/// `VMSocket` conforms for both transports. A plain descriptor conforms by returning false from both arms (the
/// disarms default to doing nothing).
public protocol ReadinessSource: AnyObject, Sendable {
    var readInterest: PollInterest { get }
    var writeInterest: PollInterest { get }
    func armReadable() throws(VMSockError) -> Bool
    func armWritable() throws(VMSockError) -> Bool
    func disarmReadable()
    func disarmWritable()
}

extension ReadinessSource {
    public func disarmReadable() {}
    public func disarmWritable() {}
}

extension VMSocket: ReadinessSource {
    /// What to poll for readability. Shared memory: (`pollDescriptor`, POLLIN), an epoll set of the data doorbell
    /// and the control socket. TCP: (the socket, POLLIN). Never close the descriptor; it lives as long as the
    /// socket (over TCP, until `close()`: cancel watches first).
    public var readInterest: PollInterest { engine.readInterest }

    /// What to poll for writability. Shared memory: (an epoll set of the space doorbell and the control socket,
    /// POLLIN): it fires when the peer made room, shut down or left. TCP: (the socket, POLLOUT).
    public var writeInterest: PollInterest { engine.writeInterest }

    /// Clears stale rings, announces "waiting for space" (so the peer rings when it frees some), then re-checks.
    /// Call from the writing thread.
    /// - Returns: true when a write would not wait: there is room, or it would fail at once (we shut down or
    ///   closed, the peer is gone or stopped reading). Write now instead of polling. A successful write disarms.
    public func armWritable() throws(VMSockError) -> Bool { try engine.armWritable() }

    /// Withdraws `armReadable`'s announcement, so the peer stops ringing our data doorbell, for when you stop
    /// polling without reading. A successful read disarms by itself. Call from the reading thread. Nothing to do
    /// over TCP.
    public func disarmReadable() { engine.disarmReadable() }

    /// Withdraws `armWritable`'s announcement, as `disarmReadable` does. Call from the writing thread.
    public func disarmWritable() { engine.disarmWritable() }
}
