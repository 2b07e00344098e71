import CLibevent
import CVMSock
import Glibc
import Synchronization

/// An event loop: one thread waits for many descriptors, vmsock sockets, timers and jobs posted from other threads,
/// and runs their callbacks. Built on a libevent 2.1 `event_base` with pthreads locking on.
///
/// Threads: `run()` turns the calling thread into the loop thread until `stop()`. `stop()` and `execute(_:)` may
/// be called from any thread. Everything else (`watch`, `schedule`, and the handles they return) belongs to the
/// loop thread: call it from a callback or from a job passed to `execute`. Callbacks run on the loop thread, one
/// at a time, and must not block.
///
/// Lifetime: the loop lives while anyone holds it, including every handle made on it. Cancel watches and timers
/// (or drop their handles) before you drop the loop; freeing the loop runs what is left of their clean-up.
public final class EventLoop: @unchecked Sendable {  // libevent's base is locked; our own state is atomic or Mutex
    let base: OpaquePointer
    private let jobs: JobQueue
    private let jobsEvent: OpaquePointer
    /// The pthread running `run()`, or 0.
    private let loopThread = Atomic<UInt>(0)

    /// How many callbacks run before the loop polls again: one busy socket must not starve the others.
    private static let callbacksPerRound: Int32 = 64

    /// Makes a loop. Nothing runs until some thread calls `run()`.
    /// - Throws: ENOMEM when libevent cannot set up its locks or its base.
    public init() throws(VMSockError) {
        guard Libevent.enableThreads() else {
            throw VMSockError(code: ENOMEM, "libevent could not set up its pthreads locking")
        }
        try Self.checkDescriptorsLeft()
        let config = event_config_new()
        defer { event_config_free(config) }
        event_config_set_max_dispatch_interval(config, nil, Self.callbacksPerRound, 0)
        guard let base = event_base_new_with_config(config) else {
            throw VMSockError(code: ENOMEM, "libevent could not make an event base")
        }
        self.base = base
        jobs = JobQueue()
        do throws(VMSockError) {
            jobsEvent = try LibeventEvent.make(base, fd: -1, events: EV_PERSIST, target: jobs)
        } catch {
            event_base_free(base)
            throw error
        }
    }

    /// libevent ends the process when a new base cannot get the descriptors it needs (its signal pipe: "[err]
    /// evsig_init_: socketpair: Too many open files", then exit). A process at its descriptor limit must get an
    /// error it can handle instead, so take as many as a base does (an epoll set, a pipe, an eventfd) first, and
    /// give them back. Another thread could take them in between; that window is all that is left.
    private static func checkDescriptorsLeft() throws(VMSockError) {
        var probes: [Descriptor] = []
        for _ in 0..<4 {
            do throws(VMSockError) {
                probes.append(try Sys.eventFD(flags: Int32(EFD_CLOEXEC)))
            } catch {
                throw VMSockError(
                    code: error.code,
                    "no descriptors left for an event loop (it needs 4): \(VMSockError.name(of: error.code)); "
                        + "raise the limit (ulimit -n) or close some")
            }
        }
        withExtendedLifetime(probes) {}  // all four held at once, closed here
    }

    deinit {
        LibeventEvent.free(jobsEvent)
        event_base_free(base)  // runs the finalizers still pending: their targets are released here
    }

    /// Runs the loop on the calling thread until `stop()`. A loop with nothing to watch still waits (for jobs).
    /// - Throws: EBUSY when another thread is running this loop already.
    public func run() throws(VMSockError) {
        let me = UInt(pthread_self())
        guard loopThread.compareExchange(expected: 0, desired: me, ordering: .acquiringAndReleasing).exchanged else {
            throw VMSockError(code: EBUSY, "the loop is already running on another thread")
        }
        defer { loopThread.store(0, ordering: .releasing) }
        if event_base_loop(base, EVLOOP_NO_EXIT_ON_EMPTY) < 0 {
            throw VMSockError(code: EINVAL, "libevent's loop failed")
        }
    }

    /// Makes `run()` return after the callbacks of the current round. Any thread. A stop that comes before `run`
    /// is remembered: the next `run()` returns at once (so a stop racing with the start is never lost).
    public func stop() {
        event_base_loopexit(base, nil)
    }

    /// Whether the caller is the thread running this loop.
    public var inLoopThread: Bool {
        loopThread.load(ordering: .acquiring) == UInt(pthread_self())
    }

    /// Runs `job` on the loop thread, soon. Any thread; wakes the loop if it sleeps. Jobs run in the order posted.
    /// A job posted before `run()` runs when the loop starts; jobs still queued when the loop is freed never run.
    public func execute(_ job: @escaping @Sendable () -> Void) {
        if jobs.append(job) { LibeventEvent.activate(jobsEvent, EV_READ) }
    }

    func preconditionInLoopThread(_ what: StaticString = #function) {
        precondition(inLoopThread, "EventLoop: \(what) must be called on the loop thread (in a callback or an execute job)")
    }
}

/// Jobs posted from any thread, run on the loop thread by the loop's jobs event.
final class JobQueue: EventTarget, @unchecked Sendable {  // `queue` is behind its Mutex
    private let queue = Mutex<[@Sendable () -> Void]>([])

    /// Queues a job. Returns true when the queue was empty, that is when the loop must be woken: later jobs ride
    /// on the same wake-up (one activation, one system call, however many jobs).
    func append(_ job: @escaping @Sendable () -> Void) -> Bool {
        queue.withLock { queue in
            queue.append(job)
            return queue.count == 1
        }
    }

    override func fired(_ events: Int16) { runPending() }

    func runPending() {
        var batch: [@Sendable () -> Void] = []
        queue.withLock { swap(&$0, &batch) }
        for job in batch { job() }
    }
}
