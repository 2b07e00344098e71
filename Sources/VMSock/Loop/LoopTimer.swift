import CLibevent

extension EventLoop {
    /// Calls `body` on the loop thread after `delay`, and then every `delay` again when `repeating`. Loop thread
    /// only.
    /// - Returns: the timer; it stops when cancelled or when the handle is dropped.
    public func schedule(after delay: Duration, repeating: Bool = false, _ body: @escaping () -> Void) throws(VMSockError)
        -> LoopTimer
    {
        preconditionInLoopThread()
        return try LoopTimer(loop: self, delay: delay, repeating: repeating, body: body)
    }
}

/// A timer made by `EventLoop.schedule`. Loop thread only, except that dropping the last reference is safe anywhere.
public final class LoopTimer {
    private let loop: EventLoop
    private var event: OpaquePointer?

    fileprivate init(loop: EventLoop, delay: Duration, repeating: Bool, body: @escaping () -> Void) throws(VMSockError) {
        self.loop = loop
        let event = try LibeventEvent.make(
            loop.base, fd: -1, events: repeating ? EV_PERSIST : 0, target: TimerTarget(body))
        self.event = event
        LibeventEvent.add(event, timeout: delay)
    }

    deinit {
        if let event { LibeventEvent.free(event) }
    }

    /// Stops the timer and releases its body. Idempotent.
    public func cancel() {
        loop.preconditionInLoopThread()
        guard let event else { return }
        self.event = nil
        LibeventEvent.free(event)
    }
}

private final class TimerTarget: EventTarget {
    let body: () -> Void

    init(_ body: @escaping () -> Void) { self.body = body }

    override func fired(_ events: Int16) { body() }
}
