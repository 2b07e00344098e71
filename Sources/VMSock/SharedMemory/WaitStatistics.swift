import Synchronization

/// How often a shared-memory connection stopped spinning: sleeps on its doorbells, and rings of the peer's.
///
/// Each of these is a system call (a ring) or a wake-up (a sleep, tens of microseconds here), where the steady
/// state has none; a throughput or latency figure far below the usual one is explained by them or it is not.
/// `vmperf` prints them with `-V` and in its JSON.
public struct WaitStatistics: Sendable, Equatable, Codable {
    /// Times a read (or a poll for readability) slept on our data bell.
    public var readSleeps = 0
    /// Times a write (or a poll for writability) slept on our space bell.
    public var writeSleeps = 0
    /// Times we rang the peer's data bell: it slept waiting for our bytes.
    public var dataRings = 0
    /// Times we rang the peer's space bell: it slept waiting for room in its ring.
    public var spaceRings = 0

    public init() {}
}

/// The live counters behind `WaitStatistics`. Each has one writer, the reading or the writing thread (see
/// `SharedMemoryStream`'s threading contract), so a relaxed load and store count it: no locked instruction.
/// They change only on the slow path, next to a system call.
struct WaitCounters: ~Copyable {
    let readSleeps = Atomic<Int>(0)  // reading thread
    let spaceRings = Atomic<Int>(0)  // reading thread (a consume rings the peer's writer)
    let writeSleeps = Atomic<Int>(0)  // writing thread
    let dataRings = Atomic<Int>(0)  // writing thread (a publish rings the peer's reader)

    @inline(__always)
    static func count(_ counter: borrowing Atomic<Int>) {
        counter.store(counter.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
    }

    var snapshot: WaitStatistics {
        var figures = WaitStatistics()
        figures.readSleeps = readSleeps.load(ordering: .relaxed)
        figures.writeSleeps = writeSleeps.load(ordering: .relaxed)
        figures.dataRings = dataRings.load(ordering: .relaxed)
        figures.spaceRings = spaceRings.load(ordering: .relaxed)
        return figures
    }
}
