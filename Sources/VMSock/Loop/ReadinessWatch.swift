import CLibevent
import Glibc

extension EventLoop {
    /// Which way a watch waits.
    public enum Direction: Sendable {
        case read, write
    }

    /// Calls `handler` on the loop thread whenever `socket` may be ready in `direction`: readable (data, end of
    /// stream, or an error to report) or writable (room, or a write that would fail at once).
    ///
    /// The watch is level-triggered, like `poll`: the handler should do non-blocking I/O (until EAGAIN, or as much
    /// as it wants); while the socket stays ready, it is called again in a later round. Between calls the loop
    /// arms the socket (announce, re-check, then poll), so no wake-up is lost and an idle socket costs nothing.
    /// When the handler sees end of stream or an error, it should cancel the watch. Loop thread only.
    ///
    /// - Parameter enabled: start waiting at once (default), or only after `enable()`.
    /// - Returns: the watch; it ends when cancelled or when the handle is dropped.
    public func watch(
        _ socket: some ReadinessSource, for direction: Direction, enabled: Bool = true, _ handler: @escaping () -> Void
    ) throws(VMSockError) -> ReadinessWatch {
        preconditionInLoopThread()
        let interest = direction == .read ? socket.readInterest : socket.writeInterest
        let arm: () throws(VMSockError) -> Bool =
            direction == .read
            ? { () throws(VMSockError) in try socket.armReadable() } : { () throws(VMSockError) in try socket.armWritable() }
        let disarm: () -> Void = direction == .read ? { socket.disarmReadable() } : { socket.disarmWritable() }
        return try ReadinessWatch(
            loop: self, interest: interest, arm: arm, disarm: disarm, handler: handler, enabled: enabled)
    }

    /// Calls `handler` on the loop thread whenever a plain descriptor (stdin, a TCP socket, a pipe, a listener)
    /// polls readable or writable. Level-triggered, like `poll`. Cancel the watch before closing the descriptor.
    /// Loop thread only.
    public func watch(
        descriptor: Int32, for direction: Direction, enabled: Bool = true, _ handler: @escaping () -> Void
    ) throws(VMSockError) -> ReadinessWatch {
        preconditionInLoopThread()
        let interest = PollInterest(descriptor: descriptor, events: Int16(direction == .read ? POLLIN : POLLOUT))
        return try ReadinessWatch(
            loop: self, interest: interest, arm: { () throws(VMSockError) in false }, disarm: {}, handler: handler,
            enabled: enabled)
    }
}

/// A running watch made by `EventLoop.watch`. Loop thread only, except that dropping the last reference is safe
/// anywhere. The handler is released when the watch is cancelled, so a handler may hold its own watch.
///
/// The loop thread arms the socket for the watch, so it is the thread that does the watched direction's I/O
/// (in the handler). `disable` and `cancel` disarm, so a paused watch costs the peer nothing; dropping the
/// handle without cancelling does not (it may happen on any thread), and leaves the peer ringing until the next
/// read or write in that direction.
public final class ReadinessWatch {
    private let loop: EventLoop
    private let target: WatchTarget
    private var event: OpaquePointer?

    fileprivate init(
        loop: EventLoop, interest: PollInterest, arm: @escaping () throws(VMSockError) -> Bool,
        disarm: @escaping () -> Void, handler: @escaping () -> Void, enabled: Bool
    ) throws(VMSockError) {
        self.loop = loop
        let bits = LibeventEvent.bits(for: interest)
        target = WatchTarget(arm: arm, disarm: disarm, handler: handler, bits: bits)
        let event = try LibeventEvent.make(loop.base, fd: interest.descriptor, events: bits | EV_PERSIST, target: target)
        self.event = event
        target.event = event
        if enabled { enable() }
    }

    deinit {
        if let event { LibeventEvent.free(event) }
    }

    /// Whether the watch is waiting (enabled and not cancelled).
    public var isEnabled: Bool { target.enabled }

    /// Starts (or resumes) waiting. Arms the socket; if it is ready already, the handler runs in the next round.
    public func enable() {
        loop.preconditionInLoopThread()
        guard let event, !target.enabled else { return }
        target.enabled = true
        LibeventEvent.add(event)
        target.rearm()
    }

    /// Stops waiting until `enable()`; the handler is not called meanwhile. For flow control: pause reading while
    /// the other side's output is full.
    public func disable() {
        loop.preconditionInLoopThread()
        guard let event, target.enabled else { return }
        target.enabled = false
        LibeventEvent.delete(event)
        target.disarm()
    }

    /// Ends the watch for good and releases the handler (after it returns, if it is running). Idempotent.
    public func cancel() {
        loop.preconditionInLoopThread()
        guard let event else { return }
        let wasEnabled = target.enabled
        target.enabled = false
        self.event = nil
        LibeventEvent.free(event)
        if wasEnabled { target.disarm() }
    }
}

/// The loop-thread side of a watch: what the event's callback calls.
private final class WatchTarget: EventTarget {
    let arm: () throws(VMSockError) -> Bool
    let disarm: () -> Void
    let handler: () -> Void
    let bits: Int32
    /// Set once, right after the event is made and before it can fire.
    var event: OpaquePointer?
    var enabled = false

    init(
        arm: @escaping () throws(VMSockError) -> Bool, disarm: @escaping () -> Void, handler: @escaping () -> Void,
        bits: Int32
    ) {
        self.arm = arm
        self.disarm = disarm
        self.handler = handler
        self.bits = bits
    }

    override func fired(_ events: Int16) {
        guard enabled else { return }
        handler()
        if enabled { rearm() }
    }

    /// Arms the source: if it is ready already, runs the handler again in the next round (without polling);
    /// otherwise the pending event waits for the descriptor. An arming error (closed socket, broken peer) counts
    /// as ready: the handler's next call reports it.
    func rearm() {
        let ready: Bool
        do throws(VMSockError) { ready = try arm() } catch { ready = true }
        if ready, let event { LibeventEvent.activate(event, bits) }
    }
}
