/// A "waiting" word of the need-wakeup handshake, as its owner (the side about to sleep) keeps it privately and
/// stores it to its header (`LocalHeader.setWaitingForData`).
///
/// The word is odd while its owner waits and even otherwise, and every announcement stores a value the word never
/// held before in this connection. So the waker can ring once per announcement instead of once per publish: while
/// a sleeper is waking (tens of microseconds here) its writer may publish hundreds of times, and with a plain flag
/// each of those was a system call. 64 bits, so that no value comes back in the life of a connection (2^63
/// announcements). A new connection, reopened links included, starts again from zero on both sides: the waker's
/// memory of what it rang for (`RingMemo`) belongs to the connection, never to the link.
public struct WaitWord: Sendable {
    public private(set) var value: UInt64 = 0

    public init() {}

    public var isAnnounced: Bool { value & 1 != 0 }

    /// The next announcement: odd, and new. An announcement while announced moves on too, so that a waker that
    /// rang for the previous one rings again (its ring may have been drained already).
    @inline(__always)
    public mutating func announce() -> UInt64 {
        value &+= isAnnounced ? 2 : 1  // wraps only after 2^63 announcements
        return value
    }

    /// The withdrawal of the current announcement, or nil when there is none (nothing to store).
    @inline(__always)
    public mutating func withdraw() -> UInt64? {
        guard isAnnounced else { return nil }
        value &+= 1
        return value
    }
}

/// The waker's memory of the last announcement it rang for: one ring per announcement.
public struct RingMemo: Sendable {
    @usableFromInline var rang: UInt64 = 0

    public init() {}

    /// Whether `word` (the peer's waiting word, just loaded) asks for a ring we have not sent yet. An untrusted
    /// peer can only make us ring more often (at most once per publish), never block us.
    @inlinable @inline(__always)
    public func wantsRing(_ word: UInt64) -> Bool { word & 1 != 0 && word != rang }

    /// Remembers that we rang for `word`.
    @inlinable @inline(__always)
    public mutating func rang(for word: UInt64) { rang = word }

    /// The last announcement rung for, for a snapshot of a stuck connection.
    public var lastRung: UInt64 { rang }
}

/// The order in which a poller arms (announces that it waits, then sleeps in poll on its bell), so that the one
/// ring its announcement gets is never lost: clear stale rings from the bell, *then* announce, then re-check.
///
/// A waker publishes, then reads the waiting word: two steps, and the sleeper can run in between. It may see
/// the publish, consume it, and announce anew; the waker's read then finds the new announcement and rings for
/// it, though that ring announces nothing new. Ringing once per announcement, the waker rings no more for it.
/// So a ring sent for the current announcement must never be drained while that announcement stands: drained
/// after announcing (as vmsock did first, commit 9fd1b8a), the stale ring was swallowed, the re-check found
/// nothing, the poller slept, and the waker's next publish did not ring (the hang of LoopStressTests). Drained
/// before announcing, a ring for the new announcement stays in the bell and wakes the poll; at worst for
/// nothing (the poller re-checks, and arms anew). Rings before the announcement are stale: drained here, or
/// one spurious wake-up if they arrive just after the drain.
///
/// The caller checks readiness once before (a socket that is ready costs no system call), and polls when this
/// returns false.
public enum PollerArming {
    /// - Parameters:
    ///   - drain: empties the bell (non-blocking).
    ///   - announce: stores a new announcement, then the fence or barrier that orders it before `isReady`.
    ///   - isReady: the re-check of the ring.
    /// - Returns: `isReady()`'s answer: true when the caller should do its I/O instead of polling.
    @inlinable @inline(__always)
    public static func arm<Failure: Error>(
        drain: () -> Void, announce: () -> Void, isReady: () throws(Failure) -> Bool
    ) throws(Failure) -> Bool {
        drain()
        announce()
        return try isReady()
    }
}
