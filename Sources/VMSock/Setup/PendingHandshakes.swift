import CVMSock
import Glibc
import Synchronization

/// Shared-memory connectors a listener has accepted but whose hello has not arrived yet, so that `accept` never
/// waits for a hello: a slow or silent connector cannot hold up the ones behind it.
///
/// Each waits in the listener's epoll set (its `pollDescriptor`), which therefore polls readable when a hello
/// arrives, until its deadline. A timerfd in the same set polls readable once the earliest deadline has passed, so
/// that a blocked accept, or a loop watching the listener, wakes up to drop the connectors that ran out of time.
///
/// Threads: any number of accepts at once. The table is behind a lock, and a connector leaves it (and the epoll
/// set) before anyone reads its hello, so exactly one thread answers each.
final class PendingHandshakes: @unchecked Sendable {  // the table is behind its Mutex; the rest is immutable
    /// How many handshakes may wait at once; a connector beyond that is turned away.
    static let limit = 64
    /// How many parked links (`LinkReuse`) may wait for a reopen at once; a link beyond that is freed.
    static let parkedLimit = 16

    /// epoll data words: a listening socket's is its descriptor (below 2^31); the timer's and the pending
    /// connectors' are above, and a connector's token is never reused, so a stale event cannot name another one.
    static let timerToken: UInt64 = 1 << 32
    private static let firstToken: UInt64 = 1 << 33

    /// A connector whose hello is awaited, or a parked link (`link`) whose reopen is.
    struct Waiting {
        let control: Descriptor
        let peer: PeerCredentials
        var link: EstablishedLink? = nil
        /// The hello, when it had arrived by the time the connector was taken in (such a one is answered at once
        /// and never waits here).
        var hello: ControlSocket.Received? = nil
    }

    private struct Entry {
        let token: UInt64
        let waiting: Waiting
        let deadline: Int64
    }

    private struct Table {
        /// In arrival order, hence in deadline order.
        var entries: [Entry] = []
        var nextToken = PendingHandshakes.firstToken
        /// When the timer fires next; nil when it is disarmed.
        var timerDeadline: Int64? = nil
        /// The timerfd in the epoll set; nil once `dropAll` released everything.
        var timer: Descriptor?
    }

    private let table: Mutex<Table>
    private let epoll: Int32
    private let timeoutNanos: Int64

    /// - Parameters: epoll: the listener's epoll set, which must outlive this; timeoutMs: how long a connector
    ///   has for its hello.
    init(epoll: Int32, timeoutMs: Int32) throws(VMSockError) {
        self.epoll = epoll
        timeoutNanos = Int64(timeoutMs) * 1_000_000
        let timer = try Sys.timerCreate()
        try Self.control(epoll, EPOLL_CTL_ADD, timer.raw, token: Self.timerToken)
        table = Mutex(Table(timer: timer))
    }

    /// Closes every waiting connector and the timer: for the listener's close, once no accept runs. A parked link
    /// that its connector has begun to reopen ends that connection, as a TCP listener's close resets the
    /// connections in its backlog.
    func dropAll() {
        let dropped = table.withLock { table in
            defer { table = Table() }
            return (table.entries, table.timer)
        }
        for case let link? in dropped.0.map(\.waiting.link) where link.isOwnedByThisProcess && link.retire() {
            link.refuseReopen()
        }
        _ = dropped  // their descriptors close here, outside the lock
    }

    /// Adds a connector that passed the policy check. Returns false, keeping nothing, when `limit` are waiting.
    func add(_ waiting: Waiting) throws(VMSockError) -> Bool {
        try enter(waiting, limit: Self.limit)
    }

    /// Parks a link whose connection is gone, to wait for its connector's reopen for up to the handshake timeout,
    /// and marks it `parked` for the connector once it is in (under the lock, so that no other accept can take
    /// and reopen it before the mark). Returns false, keeping nothing, when `parkedLimit` are parked or the
    /// listener is closed.
    func park(_ link: EstablishedLink) -> Bool {
        (try? enter(Waiting(control: link.control, peer: link.peer, link: link), limit: Self.parkedLimit)) ?? false
    }

    private func enter(_ waiting: Waiting, limit: Int) throws(VMSockError) -> Bool {
        let parked = waiting.link != nil
        return try table.withLock { (table) throws(VMSockError) -> Bool in
            guard table.timer != nil, table.entries.count(where: { ($0.waiting.link != nil) == parked }) < limit else {
                return false
            }
            let token = table.nextToken
            // Level-triggered: a hello that is there already makes the set readable at once.
            try Self.control(epoll, EPOLL_CTL_ADD, waiting.control.raw, token: token)
            table.nextToken += 1
            waiting.link?.markParked()
            let deadline = monotonicNanos() + timeoutNanos
            table.entries.append(Entry(token: token, waiting: waiting, deadline: deadline))
            if table.timerDeadline == nil { setTimer(&table, deadline) }
            return true
        }
    }

    /// Takes out the connectors and parked links whose deadline has passed (the caller turns the connectors away
    /// and frees the links). Costs no system call
    /// before the timer is due.
    func takeExpired() -> [Waiting] {
        let now = monotonicNanos()
        return table.withLock { table in
            guard let due = table.timerDeadline, now >= due else { return [] }
            var expired: [Waiting] = []
            while let first = table.entries.first, first.deadline <= now {
                table.entries.removeFirst()
                try? Self.control(epoll, EPOLL_CTL_DEL, first.waiting.control.raw, token: first.token)
                expired.append(first.waiting)
            }
            if let timer = table.timer { Sys.timerClear(timer.raw) }  // setTimer re-arms (or disarms) below
            setTimer(&table, table.entries.first?.deadline)
            return expired
        }
    }

    /// Takes out the connector or parked link whose epoll data word is `token`, as the listener's set reported it
    /// ready (its hello or reopen arrived, or it hung up); nil for any other word, or one another accept took
    /// since. Costs a system call (taking it out of the set) only when it returns one.
    func take(_ token: UInt64) -> Waiting? {
        guard token >= Self.firstToken else { return nil }
        return table.withLock { table in
            guard let index = table.entries.firstIndex(where: { $0.token == token }) else { return nil }
            // A forked child shares the parked links' rings with its parent: only the parent reopens them.
            if let link = table.entries[index].waiting.link, !link.isOwnedByThisProcess { return nil }
            let entry = table.entries.remove(at: index)
            try? Self.control(epoll, EPOLL_CTL_DEL, entry.waiting.control.raw, token: entry.token)
            return entry.waiting
        }
    }

    /// How many connectors wait for their hello.
    var count: Int { table.withLock { $0.entries.count(where: { $0.waiting.link == nil }) } }

    /// How many parked links wait for a reopen.
    var parkedCount: Int { table.withLock { $0.entries.count(where: { $0.waiting.link != nil }) } }

    /// Whether a connector was taken in less than `nanoseconds` ago (its hello is most likely on its way).
    func hasArrival(within nanoseconds: Int64) -> Bool {
        guard let newest = table.withLock({ $0.entries.last(where: { $0.waiting.link == nil })?.deadline }) else {
            return false
        }
        return newest - timeoutNanos > monotonicNanos() - nanoseconds
    }

    /// Arms the timer for `deadline` (absolute, CLOCK_MONOTONIC), or disarms it for nil. Re-arming also clears a
    /// pending expiry, so the set stops polling readable for it.
    private func setTimer(_ table: inout Table, _ deadline: Int64?) {
        guard table.timerDeadline != deadline, let timer = table.timer else { return }
        // It fails only for a descriptor that is no timerfd or a value out of range, neither possible here; were
        // it to, expired entries would still go at the next accept, which compares with the clock.
        table.timerDeadline = deadline
        try? Sys.timerSet(timer.raw, at: deadline)
    }

    static func control(_ epoll: Int32, _ operation: Int32, _ fd: Int32, token: UInt64) throws(VMSockError) {
        try Sys.epollControl(epoll, operation, fd, events: EPOLLIN.rawValue | EPOLLRDHUP.rawValue, data: token)
    }
}
