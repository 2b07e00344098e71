import Glibc
import Synchronization

/// An event loop running on a thread of its own: the usual home for the loop behind the async API.
///
/// ```swift
/// let thread = try LoopThread()
/// let listener = try AsyncListener(VMListener(port: 7000), on: thread.loop)
/// ...
/// thread.stop()   // or let it go: the thread stops when the handle is dropped
/// ```
public final class LoopThread: Sendable {
    public let loop: EventLoop
    private let thread: pthread_t

    /// Starts a new thread running a new loop.
    public init() throws(VMSockError) {
        let loop = try EventLoop()
        self.loop = loop
        var thread = pthread_t()
        let context = Unmanaged.passRetained(loop).toOpaque()
        let status = pthread_create(&thread, nil, { context in
            let loop = Unmanaged<EventLoop>.fromOpaque(context!).takeRetainedValue()
            try? loop.run()
            return nil
        }, context)
        guard status == 0 else {
            Unmanaged<EventLoop>.fromOpaque(context).release()
            throw VMSockError.system("pthread_create(event loop)", errno: status)
        }
        self.thread = thread
    }

    deinit { stop() }

    /// Stops the loop and waits for its thread to end. Idempotent; not from the loop thread itself.
    public func stop() {
        loop.stop()
        joined.withLockIfFirst { pthread_join(thread, nil) }
    }

    private let joined = OnceFlag()
}

/// Runs a block at most once, whichever thread gets there first; the others wait for it to finish.
final class OnceFlag: Sendable {
    private let done = Mutex<Bool>(false)

    func withLockIfFirst(_ body: () -> Void) {
        done.withLock { done in
            guard !done else { return }
            done = true
            body()
        }
    }
}
