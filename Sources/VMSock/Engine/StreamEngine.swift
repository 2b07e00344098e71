import Glibc
import Synchronization

/// What carries a connection's bytes: the shared-memory engine (`SharedMemoryStream`) or the TCP engine
/// (`TCPStream`). `VMSocket` holds exactly one, chosen when the connection is set up, and calls it through this
/// protocol for everything but the shared-memory hot path.
///
/// Why the hot path is not here: a call through a protocol is a dynamic dispatch, and its existential is retained
/// and released around the call. The shared-memory `read`, `write`, `readInPlace` and `writeInPlace` must make
/// neither (see `SharedMemoryStream+FastPath.swift` and tools/check-data-path.sh), so `VMSocket` keeps an
/// unretained reference to a shared-memory engine and calls it directly, inlined. Every other engine's data calls
/// come through here: a TCP call costs a system call anyway.
///
/// Threads: the engines follow `VMSocket`'s contract (one reader and one writer at a time; `close` from anywhere).
protocol StreamEngine: AnyObject, Sendable {
    var transport: Transport { get }
    /// Non-blocking mode, timeouts and spin budget, read by the engine's waiting code.
    var settings: EngineSettings { get }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws(VMSockError) -> Int
    /// Scatter read and gather write over C's `iovec`s, so that the C API passes its caller's array through as it is.
    func readv(_ vectors: UnsafeBufferPointer<iovec>) throws(VMSockError) -> Int
    func readInPlace(_ body: (UnsafeRawBufferPointer) throws -> Int) throws -> Int
    func write(_ buffer: UnsafeRawBufferPointer) throws(VMSockError) -> Int
    func writev(_ vectors: UnsafeBufferPointer<iovec>) throws(VMSockError) -> Int
    func writeInPlace(minimum: Int, _ body: (UnsafeMutableRawBufferPointer) throws -> Int) throws -> Int

    func shutdown(read: Bool, write: Bool) throws(VMSockError)
    /// Wakes blocked calls and tells the peer; idempotent. Resources go with the last reference.
    func close()

    /// What a poller waits on for each direction, and the arm-then-recheck calls: `ReadinessSource`'s, which
    /// `VMSocket` forwards here. (Not inherited from it: the shared-memory engine is `@usableFromInline`, and a
    /// public protocol would make each of these part of the module's inlinable surface.)
    var readInterest: PollInterest { get }
    var writeInterest: PollInterest { get }
    func armReadable() throws(VMSockError) -> Bool
    func armWritable() throws(VMSockError) -> Bool
    func disarmReadable()
    func disarmWritable()

    /// Bytes we may have in flight towards the peer, and the peer towards us (ring sizes, or SO_SNDBUF/SO_RCVBUF).
    var sendCapacity: Int { get }
    var receiveCapacity: Int { get }
    /// Segments sent more than once (TCP_INFO); 0 where nothing is ever sent twice; nil when unknown.
    var retransmissions: Int? { get }
    /// Bytes the sender may have in flight (iperf3's Cwnd): TCP's congestion window; the ring's size; nil when unknown.
    var congestionWindow: Int? { get }
    /// Sleeps and doorbell rings; nil where the kernel does the waiting.
    var waitStatistics: WaitStatistics? { get }
    /// The process at the other end, where the engine can know it.
    var peerCredentials: PeerCredentials? { get }
}

/// The options of a connection that its engine reads while waiting: set from any thread, read relaxed.
final class EngineSettings: Sendable {
    let nonBlocking = Atomic<Bool>(false)
    /// Nanoseconds; negative means no timeout.
    let readTimeout = Atomic<Int64>(-1)
    let writeTimeout = Atomic<Int64>(-1)
    /// How long a blocked call spins before it sleeps, in nanoseconds; nil for an engine that does not spin.
    private let spin: Atomic<Int64>
    private let spins: Bool

    init(spinNanos: Int64?) {
        spin = Atomic(spinNanos ?? 0)
        spins = spinNanos != nil
    }

    /// 0 for an engine that does not spin.
    var spinNanos: Int64 { spin.load(ordering: .relaxed) }

    /// Ignored by an engine that does not spin.
    func setSpinNanos(_ nanos: Int64) {
        if spins { spin.store(nanos, ordering: .relaxed) }
    }
}
