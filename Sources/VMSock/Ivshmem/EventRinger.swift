import CVMSock
import Glibc
import Synchronization

/// Rings region peers' eventfds from a thread of its own, so that no caller of `PeerBell.ring` can be made to
/// wait on one.
///
/// ivshmem hands every peer the same open file of each eventfd, so any peer can clear its O_NONBLOCK and fill its
/// counter. `vms_eventfd_ring_shared` puts the flag back and polls for room first, but a peer that refills the
/// counter between that poll and the write holds the write until the eventfd's owner reads it: for ever, when the
/// owner is that hostile peer or is dead. Eventfd refuses RWF_NOWAIT for writes, and a reopened /proc/self/fd gives
/// ENXIO, so no flag of ours can close that window. So callers only queue the ring (`ring(_:)`: a lock held for an
/// append, and a byte to our own socketpair), and this thread does the write. If it is stuck in one,
/// `rescueIfStuck` (the node's dispatcher, every pass) reads that eventfd's count away, which lets the write
/// finish: the stuck peer loses the wake-ups it had pending (its next pass re-checks anyway) and the rings queued
/// behind go out. A hostile peer that keeps winning that race only delays rings, to the 100 ms re-check every
/// sleeper keeps; it never blocks a caller.
final class EventRinger: @unchecked Sendable {  // its state behind `state`'s lock; `wake` immutable
    /// What the thread does with one eventfd: `vms_eventfd_ring_shared`, or a test's stand-in.
    typealias Ring = @Sendable (Int32) -> Void

    /// How long a ring may take before the dispatcher reads its eventfd's count away.
    static let stuckAfterNanos: Int64 = 20_000_000

    private let wake: Doorbell
    private let write: Ring
    private let state = Mutex(State())

    private struct State {
        var pending: [PeerBell] = []
        /// The bell being rung, and since when.
        var current: PeerBell? = nil
        var since: Int64 = 0
        var rescues = 0
        var stopped = false
    }

    private init(wake: Doorbell, write: @escaping Ring) {
        self.wake = wake
        self.write = write
        state.withLock { $0.pending.reserveCapacity(64) }
    }

    /// A ringer with its thread started.
    static func start(write: @escaping Ring = { _ = vms_eventfd_ring_shared($0) }) throws(VMSockError) -> EventRinger {
        let ringer = EventRinger(wake: try Doorbell.create(), write: write)
        try Sys.startThread("ivshmem ringer") { ringer.run() }
        return ringer
    }

    /// Queues a ring of `bell`'s eventfd. Never blocks: the thread writes it.
    func ring(_ bell: PeerBell) {
        let first = state.withLock { (state) -> Bool in
            // A stopped ringer's node is finished: its peers learnt that from the region, not from a ring.
            if state.stopped || state.pending.contains(where: { $0 === bell }) { return false }
            state.pending.append(bell)
            return state.pending.count == 1
        }
        if first { wake.ringSelf() }
    }

    /// If the thread has been in one write for over `stuckAfterNanos`, reads that eventfd's count away (never
    /// blocking), so that the write can finish. Returns whether it did.
    @discardableResult
    func rescueIfStuck() -> Bool {
        let now = monotonicNanos()
        let stuck = state.withLock { (state) -> PeerBell? in
            guard let current = state.current, now - state.since > Self.stuckAfterNanos else { return nil }
            state.rescues += 1
            return current
        }
        guard let stuck else { return false }
        _ = vms_eventfd_read_nowait(stuck.fd)  // the bell, held here, keeps its descriptor open
        return true
    }

    /// Ends the thread once it has rung what is queued (the node that owns it is finished).
    func stop() {
        state.withLock { $0.stopped = true }
        wake.ringSelf()
    }

    /// How many times a stuck write was rescued (for tests and diagnostics).
    var rescues: Int { state.withLock { $0.rescues } }

    private func run() {
        while true {
            _ = try? Sys.poll(wake.fd, Int16(POLLIN), timeoutMs: 1000)
            wake.drain()
            while let bell = next() {
                write(bell.fd)
                state.withLock { $0.current = nil }
            }
            // Let go of what is queued (each bell holds us: a cycle, and a duplicated eventfd each).
            if state.withLock({ (state) -> Bool in
                if state.stopped { state.pending.removeAll() }
                return state.stopped
            }) { return }
        }
    }

    /// The next bell to ring, marked as being rung from now.
    private func next() -> PeerBell? {
        state.withLock { state in
            guard !state.pending.isEmpty else { return nil }
            let bell = state.pending.removeFirst()
            state.current = bell
            state.since = monotonicNanos()
            return bell
        }
    }
}
