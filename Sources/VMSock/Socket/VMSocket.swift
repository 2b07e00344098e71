import Glibc
import Synchronization

/// A connected byte stream to another process on this host, carried through shared-memory rings.
///
/// It behaves like a connected TCP socket: bytes arrive in order, none lost or duplicated; `read` returns 0 at end
/// of stream; `shutdown(.write)` gives the peer end of stream after every byte; a peer that dies gives end of
/// stream after the bytes it had published, and later writes fail with EPIPE (never SIGPIPE).
///
/// | BSD sockets                    | vmsock                                          |
/// |--------------------------------|-------------------------------------------------|
/// | socket + connect               | `VMSocket.connect(to:options:)`                  |
/// | read / recv                    | `read(into:)`, `read(upTo:)`                     |
/// | write / send                   | `write(_:)` (partial), `writeAll(_:)`            |
/// | readv / writev                 | `readv(_:)`, `writev(_:)`                        |
/// | shutdown                       | `shutdown(_:)`                                   |
/// | close                          | `close()`                                        |
/// | fcntl(O_NONBLOCK)              | `isNonBlocking`                                  |
/// | SO_RCVTIMEO / SO_SNDTIMEO      | `readTimeout`, `writeTimeout`                    |
/// | SO_SNDBUF                      | `VMSocketOptions.ringSize`                       |
/// | poll(POLLIN)                   | `armReadable()` then poll `pollDescriptor`       |
/// | getpeername / SO_PEERCRED      | `peerAddress`, `peerCredentials`                 |
///
/// Threads: one thread may read while another writes. Do not read from two threads at once, nor write from two.
/// `close()` may be called from any thread; calls blocked in other threads then fail with EBADF.
public final class VMSocket: @unchecked Sendable {  // all mutable state lives in the engine; see its notes
    let stream: SharedMemoryStream

    /// The endpoint this socket connected to (connector) or was accepted on (listener).
    public let address: VMSocketAddress

    init(stream: SharedMemoryStream, address: VMSocketAddress) {
        self.stream = stream
        self.address = address
    }

    deinit { stream.close() }

    /// Connects to a vmsock listener on this host. The corresponding C calls are `socket` and `connect`.
    ///
    /// - Throws: `VMSockError` with ECONNREFUSED (nobody listens, the listener refused us or is not trusted),
    ///   ETIMEDOUT (the handshake did not finish in time), EINVAL (bad ring size), EPROTO (the listener broke the
    ///   handshake), ECONNRESET (it hung up during the handshake).
    public static func connect(to address: VMSocketAddress, options: VMSocketOptions = .init()) throws(VMSockError)
        -> VMSocket
    {
        let link = try Handshake.connect(
            address, capacity: options.ringSize, policy: options.peerPolicy, timeoutMs: options.handshakeTimeoutMs)
        return VMSocket(stream: try SharedMemoryStream(link), address: address)
    }

    // MARK: Reading

    /// Reads up to `buffer.count` bytes. Blocks until at least one byte is readable (unless non-blocking).
    /// - Returns: the number of bytes read; 0 at end of stream (the peer shut down writing, closed, or died).
    /// - Throws: EAGAIN (non-blocking, nothing yet), ETIMEDOUT (`readTimeout`), EPROTO (the peer broke the ring
    ///   rules; the connection is torn down), EBADF (closed).
    @inline(__always)
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(VMSockError) -> Int {
        try stream.read(into: buffer)
    }

    /// Reads up to `maximum` bytes into a new array; an empty array means end of stream.
    public func read(upTo maximum: Int) throws(VMSockError) -> [UInt8] {
        guard maximum > 0 else { throw VMSockError(code: EINVAL, "read(upTo:) needs a positive byte count") }
        var bytes = [UInt8](repeating: 0, count: maximum)
        let result = bytes.withUnsafeMutableBytes { buffer in
            Result { () throws(VMSockError) in try stream.read(into: buffer) }
        }
        bytes.removeSubrange(try result.get()...)
        return bytes
    }

    /// Scatter read: fills the buffers in order with what is readable now. The C call is `readv`.
    public func readv(_ buffers: [UnsafeMutableRawBufferPointer]) throws(VMSockError) -> Int {
        try stream.readv(buffers)
    }

    /// Zero-copy read: calls `body` with the readable bytes where they lie in shared memory (read-only), and
    /// consumes as many as it returns. Blocks like `read`. Returns 0 without calling `body` at end of stream.
    ///
    /// The bytes belong to the peer's memory: a hostile peer can change them while `body` looks at them, so copy
    /// before validating anything you do not want changed under you. Do not keep the pointer after `body` returns.
    public func readInPlace(_ body: (UnsafeRawBufferPointer) throws -> Int) throws -> Int {
        try stream.readInPlace(body)
    }

    // MARK: Writing

    /// Writes as many bytes as fit, blocking until at least one does (unless non-blocking).
    /// - Returns: the number written, from 1 to `buffer.count` (0 only for an empty buffer).
    /// - Throws: EPIPE (we or the peer shut down, or the peer is gone), EAGAIN, ETIMEDOUT, EPROTO, EBADF.
    @inline(__always)
    public func write(_ buffer: UnsafeRawBufferPointer) throws(VMSockError) -> Int {
        try stream.write(buffer)
    }

    /// Writes every byte, blocking as needed. On a non-blocking socket it may throw EAGAIN after writing part;
    /// use `write` there to learn how much went.
    public func writeAll(_ buffer: UnsafeRawBufferPointer) throws(VMSockError) {
        var done = 0
        while done < buffer.count {
            done += try stream.write(UnsafeRawBufferPointer(rebasing: buffer[done...]))
        }
    }

    public func writeAll(_ bytes: [UInt8]) throws(VMSockError) {
        try bytes.withUnsafeBytes { buffer in Result { () throws(VMSockError) in try writeAll(buffer) } }.get()
    }

    /// Gather write: writes what fits of the buffers, in order, as one publish. The C call is `writev`.
    public func writev(_ buffers: [UnsafeRawBufferPointer]) throws(VMSockError) -> Int {
        try stream.writev(buffers)
    }

    /// Zero-copy write: waits until at least `minimum` bytes (at most the ring size) are free, calls `body` with
    /// the free space in the ring, and publishes as many bytes as it returns.
    @discardableResult
    public func writeInPlace(minimum: Int = 1, _ body: (UnsafeMutableRawBufferPointer) throws -> Int) throws -> Int {
        try stream.writeInPlace(minimum: minimum, body)
    }

    // MARK: Shutdown and close

    public enum ShutdownDirection: Sendable {
        case read, write, both
    }

    /// Shuts down one or both directions. The C call is `shutdown`.
    /// - `.write`: the peer reads every byte written so far, then end of stream. Our later writes fail with EPIPE.
    /// - `.read`: our reads return 0 from now on, and the peer's writes fail with EPIPE (a TCP peer would not learn
    ///   of it; here it does, so that it does not block forever on a ring nobody drains).
    public func shutdown(_ direction: ShutdownDirection) throws(VMSockError) {
        try stream.shutdown(read: direction != .write, write: direction != .read)
    }

    /// Closes the connection. The peer reads what we wrote, then end of stream. Idempotent.
    public func close() { stream.close() }

    // MARK: Options

    /// Non-blocking mode: calls that would wait throw EAGAIN instead. Like O_NONBLOCK.
    public var isNonBlocking: Bool {
        get { stream.nonBlocking.load(ordering: .relaxed) }
        set { stream.nonBlocking.store(newValue, ordering: .relaxed) }
    }

    /// How long a blocking read may wait before it throws ETIMEDOUT; nil waits forever. Like SO_RCVTIMEO.
    public var readTimeout: Duration? {
        get { Self.duration(stream.readTimeout) }
        set { stream.readTimeout.store(Self.nanos(newValue), ordering: .relaxed) }
    }

    /// How long a blocking write may wait for room before it throws ETIMEDOUT; nil waits forever. Like SO_SNDTIMEO.
    public var writeTimeout: Duration? {
        get { Self.duration(stream.writeTimeout) }
        set { stream.writeTimeout.store(Self.nanos(newValue), ordering: .relaxed) }
    }

    /// How long a blocking call spins on shared memory before it sleeps. Default: `VMSOCK_SPIN_US` or 50 µs.
    public var spinMicroseconds: Int {
        get { Int(stream.spinNanos.load(ordering: .relaxed) / 1000) }
        set { stream.spinNanos.store(Int64(max(0, min(newValue, SpinPolicy.maximumMicroseconds))) * 1000, ordering: .relaxed) }
    }

    /// Bytes of our outgoing ring, and of the peer's.
    public var ringSize: Int { stream.capacity }
    public var peerRingSize: Int { stream.peerCapacity }

    // MARK: Identity and readiness

    /// The process at the other end (SO_PEERCRED at connect time).
    public var peerCredentials: PeerCredentials { stream.peerCredentials }

    /// A descriptor that polls readable when this socket may be readable: data arrived, the peer shut down or
    /// died. It is an epoll descriptor; use it with poll, epoll or libevent for POLLIN only. Never close it.
    ///
    /// Contract (arm, then re-check): the peer rings only a sleeper that said so. Call `armReadable()` first; if it
    /// returns true, read now. Otherwise poll this descriptor; when it fires, read (non-blocking) until EAGAIN,
    /// then arm again. Without arming, the descriptor may never fire.
    public var pollDescriptor: Int32 { stream.pollDescriptor.raw }

    /// Announces that we are about to poll `pollDescriptor`, then re-checks the ring.
    /// - Returns: true when the socket is readable now (or at end of stream): read instead of polling.
    public func armReadable() throws(VMSockError) -> Bool { try stream.armReadable() }

    private static func nanos(_ duration: Duration?) -> Int64 {
        guard let duration else { return -1 }
        let (seconds, attoseconds) = duration.components
        return max(0, seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }

    private static func duration(_ nanos: borrowing Atomic<Int64>) -> Duration? {
        let value = nanos.load(ordering: .relaxed)
        return value < 0 ? nil : .nanoseconds(value)
    }
}
