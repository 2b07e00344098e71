/// A "waiting" word of the need-wakeup handshake, as its owner (the side about to sleep) keeps it.
///
/// The word is odd while its owner waits and even otherwise, and every announcement stores a value it never stored
/// before. So the waker can ring once per announcement instead of once per publish: while a sleeper is waking (tens
/// of microseconds here) its writer may publish hundreds of times, and with a plain flag each of those was a
/// system call (`vmperf -V` counted 490,000 rings for 4,300 sleeps in one second of 1 KiB writes with
/// `--spin-us 0`). 64 bits, so that no value comes back in the life of a connection.
public struct WaitWord: Sendable {
    public private(set) var value: UInt64 = 0

    public init() {}

    public var isAnnounced: Bool { value & 1 != 0 }

    /// The next announcement: odd, and new (an announcement while announced moves on too: whoever rang for the
    /// previous one may have been drained already).
    @inline(__always)
    public mutating func announce() -> UInt64 {
        value &+= isAnnounced ? 2 : 1
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
    private var rang: UInt64 = 0

    public init() {}

    /// Whether `word` (the peer's waiting word, just loaded) asks for a ring we have not sent yet; if so, it is
    /// remembered as sent. An untrusted peer can only make us ring more often (at most once per publish).
    @inline(__always)
    public mutating func shouldRing(_ word: UInt64) -> Bool {
        guard word & 1 != 0, word != rang else { return false }
        rang = word
        return true
    }
}
