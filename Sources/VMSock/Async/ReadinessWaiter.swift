import CLibevent
import Glibc
import Synchronization

/// Lets one task at a time sleep until a descriptor polls ready, on an event loop's thread. Used by the async
/// socket and listener: the task does its I/O itself and comes here only when the I/O said EAGAIN (after arming).
///
/// One one-shot libevent event per waiter, made once; `wait` adds it (any thread: libevent is locked and wakes its
/// loop), and the loop's callback resumes the task. No allocation per wait.
final class ReadinessWaiter: Sendable {
    private let slot: WaiterSlot
    private let closed = Atomic<Bool>(false)
    /// Owned: freed (after any running callback) in deinit.
    private nonisolated(unsafe) let event: OpaquePointer  // the pointer never changes; libevent locks the event

    init(loop: EventLoop, interest: PollInterest) throws(VMSockError) {
        slot = WaiterSlot()
        event = try LibeventEvent.make(
            loop.base, fd: interest.descriptor, events: LibeventEvent.bits(for: interest), target: slot)
    }

    deinit { LibeventEvent.free(event) }

    /// Sleeps until the descriptor polls ready, `timeout` passes, or the task is cancelled (then returns at once;
    /// the caller checks `Task.isCancelled`, and its clock for the timeout). At most one task waits at a time.
    func wait(timeout: Duration? = nil) async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                slot.store(continuation)
                LibeventEvent.add(event, timeout: timeout)
                // Cancellation sets the flag before it runs the handler (and `close` before it wakes): either the
                // handler found the continuation stored above, or this check sees the flag. Whoever takes the
                // continuation resumes it; once.
                if Task.isCancelled || closed.load(ordering: .sequentiallyConsistent) { cancelWait() }
            }
        } onCancel: {
            cancelWait()
        }
    }

    /// Wakes the waiting task (if any), and every later `wait` returns at once: for when the descriptor was closed,
    /// which takes it out of the loop's epoll set silently. Any thread.
    func close() {
        closed.store(true, ordering: .sequentiallyConsistent)
        cancelWait()
    }

    private func cancelWait() {
        guard let continuation = slot.take() else { return }
        LibeventEvent.delete(event)  // never blocks (EV_FINALIZE); a callback racing with us finds the slot empty
        continuation.resume()
    }
}

/// The continuation of the task waiting on a `ReadinessWaiter`, taken by exactly one of: the loop's callback, or
/// cancellation.
private final class WaiterSlot: EventTarget, @unchecked Sendable {  // its only state is behind the Mutex
    private let waiting = Mutex<CheckedContinuation<Void, Never>?>(nil)

    func store(_ continuation: CheckedContinuation<Void, Never>) {
        waiting.withLock { $0 = continuation }
    }

    func take() -> CheckedContinuation<Void, Never>? {
        waiting.withLock { slot in
            defer { slot = nil }
            return slot
        }
    }

    override func fired(_ events: Int16) { take()?.resume() }
}
