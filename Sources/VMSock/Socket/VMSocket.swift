import Glibc
import Synchronization

/// A connected byte stream that behaves like a connected TCP socket, carried through shared-memory rings when the
/// peer is a vmsock process on this host, and over real TCP otherwise.
///
/// Bytes arrive in order, none lost or duplicated; `read` returns 0 at end of stream; `shutdown(.write)` gives the
/// peer end of stream after every byte; writes to a peer that is gone fail with EPIPE (never SIGPIPE). Code written
/// against it does not need to know which transport it got; `transport` and `fallbackReason` say, for logs.
///
/// | BSD sockets                    | vmsock                                          |
/// |--------------------------------|-------------------------------------------------|
/// | getaddrinfo + socket + connect | `VMSocket.connect(host:port:options:)`           |
/// | read / recv                    | `read(into:)`, `read(upTo:)`                     |
/// | write / send                   | `write(_:)` (partial), `writeAll(_:)`            |
/// | readv / writev                 | `readv(_:)`, `writev(_:)`                        |
/// | shutdown                       | `shutdown(_:)`                                   |
/// | close                          | `close()`                                        |
/// | fcntl(O_NONBLOCK)              | `isNonBlocking`                                  |
/// | SO_RCVTIMEO / SO_SNDTIMEO      | `readTimeout`, `writeTimeout`                    |
/// | SO_SNDBUF                      | `VMSocketOptions.ringSize`                       |
/// | poll(POLLIN)                   | `armReadable()` then poll `pollDescriptor`       |
/// | getsockname / getpeername      | `localAddress`, `peerAddress`                    |
/// | SO_PEERCRED                    | `peerCredentials` (shared memory only)           |
///
/// Threads: one thread may read while another writes. Do not read from two threads at once, nor write from two.
/// `close()` may be called from any thread; calls blocked in other threads then fail with EBADF.
public final class VMSocket: @unchecked Sendable {  // all mutable state lives in the engine; see its notes
    /// The engine that carries the bytes, chosen when the connection was set up; every call but the hot path of
    /// a shared-memory connection goes through it.
    let engine: any StreamEngine
    /// The same engine when it is the shared-memory one, unretained, for the hot calls: calling through a loaded
    /// strong reference (or an existential) retains and releases it around every call, and the data path must
    /// make no ARC traffic (see tools/check-data-path.sh). `engine` keeps the object alive as long as this socket.
    /// The hot calls are inlinable, down to the ring (see `SharedMemoryStream+FastPath.swift`).
    @usableFromInline let fastPath: Unmanaged<SharedMemoryStream>?
    /// What the set-up layer asked to run once this socket is gone (park the link for reuse).
    private let onRelease: (@Sendable () -> Void)?
    /// The TCP port a shared-memory connector reports as its own, held while the socket lives.
    private let portHeld: Descriptor?

    /// How this connection carries its bytes. Stored, not asked of the engine: callers test it per write.
    public let transport: Transport
    /// Why a connect that could have used shared memory uses TCP; nil over shared memory and for accepted sockets.
    public let fallbackReason: FallbackReason?
    /// What went wrong on the way to shared memory, in words, when `fallbackReason` is one that has a story
    /// (untrusted owner, refused, version mismatch, out of resources, handshake failed).
    public let fallbackDetail: String?
    /// Our address (`getsockname`). Over shared memory a connector reports the address it dialed with a port of
    /// its own, which it holds as a TCP port while the socket lives (0 only if the kernel had none to give); an
    /// accepted socket reports the address and port the client dialed.
    public let localAddress: IPEndpoint
    /// The peer's address (`getpeername`). Over shared memory: the listener's address and port as dialed (for a
    /// connector), or the client's address and port (for an accepted socket; the client is on this host).
    public let peerAddress: IPEndpoint

    /// For a connection through a vmsockd region: how this process reaches it and is woken (`IvshmemMode`).
    private let ivshmemMode: String?

    init(_ connection: Connection) {
        engine = connection.engine
        transport = connection.engine.transport
        ivshmemMode = (connection.engine as? SharedMemoryStream)?.link.lease?.node.attachment.mode.rawValue
        fastPath = (connection.engine as? SharedMemoryStream).map { Unmanaged.passUnretained($0) }
        onRelease = connection.onRelease
        portHeld = connection.portHeld
        localAddress = connection.local
        peerAddress = connection.peer
        fallbackReason = connection.fallback
        fallbackDetail = connection.detail
    }

    deinit {
        close()
        onRelease?()
    }

    /// "shared memory", "TCP", or "TCP (no shared-memory listener)": the transport and, when `auto` chose TCP,
    /// why; through a vmsockd region, how this process reaches it: "ivshmem (vmsockd socket)", "ivshmem (pci, vfio
    /// interrupts)", "ivshmem (pci, polling)". What `vmcat -v` prints.
    public var transportDescription: String {
        if let ivshmemMode { return "\(transport) (\(ivshmemMode))" }
        guard let fallbackReason else { return transport.description }  // set only for a TCP connect
        return "TCP (\(fallbackReason))"
    }

    /// Connects to `host` (a name, or an IPv4 or IPv6 address) and `port`, trying each address getaddrinfo gives
    /// in order. The corresponding C calls are `getaddrinfo`, `socket` and `connect`.
    ///
    /// Under the `auto` policy it uses shared memory when the destination is an address of this host, a trusted
    /// vmsock listener is registered for it, and the handshake succeeds; otherwise TCP, with `fallbackReason`
    /// saying why. Under `shm` it fails instead of falling back; under `tcp` it never tries shared memory.
    ///
    /// - Throws: `VMSockError` with ECONNREFUSED (nobody listens; or `shm` policy and no usable shared-memory
    ///   listener, with the reason), ETIMEDOUT (`connectTimeout`), EHOSTUNREACH/ENETUNREACH, EINVAL (the name does
    ///   not resolve, bad ring size).
    public static func connect(host: String, port: UInt16, options: VMSocketOptions = .init()) throws(VMSockError)
        -> VMSocket
    {
        try VMSocket(Connector.connect(to: Resolver.resolve(host, port: port, family: options.addressFamily), options: options))
    }

    /// Frees what this process keeps for its next shared-memory connections: the links of closed connections
    /// kept for reuse (see `VMSocketOptions.reusesLinks`; their rings, doorbells and control sockets), the
    /// spare ring and doorbells a listener makes before it sleeps or after a welcome (and a connector that does
    /// not reuse links while a listener answers its hello), and the TCP port a connector binds ahead while it
    /// waits for a listener. Later connections make new ones.
    public static func closeIdleLinks() {
        LinkPool.shared.removeAll()
        LocalHalf.dropSpare()
        TCPCalls.dropSparePort()
    }

    /// Links this process keeps from closed shared-memory connections, waiting to be reused.
    public static var idleLinkCount: Int { LinkPool.shared.count }

    /// Connects to one address; see `connect(host:port:options:)`.
    public static func connect(to endpoint: IPEndpoint, options: VMSocketOptions = .init()) throws(VMSockError)
        -> VMSocket
    {
        try VMSocket(Connector.connect(to: [endpoint], options: options))
    }

    // MARK: Reading

    /// Reads up to `buffer.count` bytes. Blocks until at least one byte is readable (unless non-blocking).
    /// - Returns: the number of bytes read; 0 at end of stream (the peer shut down writing, closed, or died).
    /// - Throws: EAGAIN (non-blocking, nothing yet), ETIMEDOUT (`readTimeout`), EPROTO (the peer broke the ring
    ///   rules; the connection is torn down), EBADF (closed).
    @inlinable @inline(__always)
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(VMSockError) -> Int {
        if let fastPath {
            return try fastPath._withUnsafeGuaranteedRef { stream in
                Result { () throws(VMSockError) in try stream.read(into: buffer) }
            }.get()
        }
        return try readThroughEngine(into: buffer)
    }

    @usableFromInline
    func readThroughEngine(into buffer: UnsafeMutableRawBufferPointer) throws(VMSockError) -> Int {
        try engine.read(into: buffer)
    }

    /// Reads up to `maximum` bytes into a new array; an empty array means end of stream.
    public func read(upTo maximum: Int) throws(VMSockError) -> [UInt8] {
        guard maximum > 0 else { throw VMSockError(code: EINVAL, "read(upTo:) needs a positive byte count") }
        var bytes = [UInt8](repeating: 0, count: maximum)
        let result = bytes.withUnsafeMutableBytes { buffer in
            Result { () throws(VMSockError) in try read(into: buffer) }
        }
        bytes.removeSubrange(try result.get()...)
        return bytes
    }

    /// Scatter read: fills the buffers in order with what is readable now. The C call is `readv`.
    public func readv(_ buffers: [UnsafeMutableRawBufferPointer]) throws(VMSockError) -> Int {
        try buffers.map { iovec(iov_base: $0.baseAddress, iov_len: $0.count) }.withUnsafeBufferPointer {
            (vectors) throws(VMSockError) in try readv(vectors: vectors)
        }
    }

    /// Scatter read over C's `iovec`s, as `readv(2)` takes them: no array is made, so a shared-memory call
    /// allocates nothing. Every `iov_base` with a non-zero `iov_len` must be valid, and the lengths must sum to at
    /// most `Int.max` (the C API checks both).
    public func readv(vectors: UnsafeBufferPointer<iovec>) throws(VMSockError) -> Int {
        if let fastPath {
            return try fastPath._withUnsafeGuaranteedRef { stream in
                Result { () throws(VMSockError) in try stream.readv(vectors) }
            }.get()
        }
        return try engine.readv(vectors)
    }

    /// Zero-copy read: calls `body` with the readable bytes where they lie in shared memory (read-only), and
    /// consumes as many as it returns. Blocks like `read`. Returns 0 without calling `body` at end of stream.
    ///
    /// The bytes belong to the peer's memory: a hostile peer can change them while `body` looks at them, so copy
    /// before validating anything you do not want changed under you. Do not keep the pointer after `body` returns.
    /// Over TCP the bytes lie in a private buffer of the socket instead (one copy, same contract).
    @inlinable @inline(__always)
    public func readInPlace(_ body: (UnsafeRawBufferPointer) throws -> Int) throws -> Int {
        if let fastPath {
            return try fastPath._withUnsafeGuaranteedRef { try $0.readInPlace(body) }
        }
        return try readInPlaceThroughEngine(body)
    }

    @usableFromInline
    func readInPlaceThroughEngine(_ body: (UnsafeRawBufferPointer) throws -> Int) throws -> Int {
        try engine.readInPlace(body)
    }

    // MARK: Writing

    /// Writes as many bytes as fit, blocking until at least one does (unless non-blocking).
    /// - Returns: the number written, from 1 to `buffer.count` (0 only for an empty buffer).
    /// - Throws: EPIPE (we or the peer shut down, or the peer is gone), EAGAIN, ETIMEDOUT, EPROTO, EBADF.
    @inlinable @inline(__always)
    public func write(_ buffer: UnsafeRawBufferPointer) throws(VMSockError) -> Int {
        if let fastPath {
            return try fastPath._withUnsafeGuaranteedRef { stream in
                Result { () throws(VMSockError) in try stream.write(buffer) }
            }.get()
        }
        return try writeThroughEngine(buffer)
    }

    @usableFromInline
    func writeThroughEngine(_ buffer: UnsafeRawBufferPointer) throws(VMSockError) -> Int {
        try engine.write(buffer)
    }

    /// Writes every byte, blocking as needed. On a non-blocking socket it may throw EAGAIN after writing part;
    /// use `write` there to learn how much went.
    public func writeAll(_ buffer: UnsafeRawBufferPointer) throws(VMSockError) {
        var done = 0
        while done < buffer.count {
            done += try write(UnsafeRawBufferPointer(rebasing: buffer[done...]))
        }
    }

    public func writeAll(_ bytes: [UInt8]) throws(VMSockError) {
        try bytes.withUnsafeBytes { buffer in Result { () throws(VMSockError) in try writeAll(buffer) } }.get()
    }

    /// Gather write: writes what fits of the buffers, in order, as one publish. The C call is `writev`.
    public func writev(_ buffers: [UnsafeRawBufferPointer]) throws(VMSockError) -> Int {
        try buffers.map { iovec(iov_base: UnsafeMutableRawPointer(mutating: $0.baseAddress), iov_len: $0.count) }
            .withUnsafeBufferPointer { (vectors) throws(VMSockError) in try writev(vectors: vectors) }
    }

    /// Gather write over C's `iovec`s, as `writev(2)` takes them (see `readv(vectors:)`).
    public func writev(vectors: UnsafeBufferPointer<iovec>) throws(VMSockError) -> Int {
        if let fastPath {
            return try fastPath._withUnsafeGuaranteedRef { stream in
                Result { () throws(VMSockError) in try stream.writev(vectors) }
            }.get()
        }
        return try engine.writev(vectors)
    }

    /// Zero-copy write: waits until at least `minimum` bytes (at most the ring size) are free, calls `body` with
    /// the free space in the ring, and publishes as many bytes as it returns. Over TCP, `body` fills a private
    /// buffer (at least 64 KiB) that is sent in full before this returns.
    @discardableResult
    @inlinable @inline(__always)
    public func writeInPlace(minimum: Int = 1, _ body: (UnsafeMutableRawBufferPointer) throws -> Int) throws -> Int {
        if let fastPath {
            return try fastPath._withUnsafeGuaranteedRef { try $0.writeInPlace(minimum: minimum, body) }
        }
        return try writeInPlaceThroughEngine(minimum: minimum, body)
    }

    @usableFromInline
    func writeInPlaceThroughEngine(minimum: Int, _ body: (UnsafeMutableRawBufferPointer) throws -> Int) throws -> Int {
        try engine.writeInPlace(minimum: minimum, body)
    }

    // MARK: Shutdown and close

    public enum ShutdownDirection: Sendable {
        case read, write, both
    }

    /// Shuts down one or both directions. The C call is `shutdown`.
    /// - `.write`: the peer reads every byte written so far, then end of stream. Our later writes fail with EPIPE.
    /// - `.read`: our reads return 0 from now on. Over shared memory the peer's writes then fail with EPIPE (a TCP
    ///   peer would not learn of it; here it does, so that it does not block forever on a ring nobody drains).
    public func shutdown(_ direction: ShutdownDirection) throws(VMSockError) {
        try engine.shutdown(read: direction != .write, write: direction != .read)
    }

    /// Closes the connection. The peer reads what we wrote, then end of stream. Idempotent. (Over TCP, as with
    /// close(2), bytes we received but never read make the kernel reset the connection instead.)
    public func close() { engine.close() }

    // MARK: Options

    /// Non-blocking mode: calls that would wait throw EAGAIN instead. Like O_NONBLOCK.
    public var isNonBlocking: Bool {
        get { engine.settings.nonBlocking.load(ordering: .relaxed) }
        set { engine.settings.nonBlocking.store(newValue, ordering: .relaxed) }
    }

    /// How long a blocking read may wait before it throws ETIMEDOUT; nil waits forever. Like SO_RCVTIMEO.
    public var readTimeout: Duration? {
        get { Self.duration(engine.settings.readTimeout) }
        set { engine.settings.readTimeout.store(Self.nanos(newValue), ordering: .relaxed) }
    }

    /// How long a blocking write may wait for room before it throws ETIMEDOUT; nil waits forever. Like SO_SNDTIMEO.
    public var writeTimeout: Duration? {
        get { Self.duration(engine.settings.writeTimeout) }
        set { engine.settings.writeTimeout.store(Self.nanos(newValue), ordering: .relaxed) }
    }

    /// How long a blocking call spins on shared memory before it sleeps. Default: `VMSOCK_SPIN_US` or 50 µs.
    /// Always 0 over TCP, which waits in the kernel.
    public var spinMicroseconds: Int {
        get { Int(engine.settings.spinNanos / 1000) }
        set { engine.settings.setSpinNanos(Int64(max(0, min(newValue, SpinPolicy.maximumMicroseconds))) * 1000) }
    }

    /// Bytes of our outgoing ring, and of the peer's. Over TCP: the kernel's send and receive buffer sizes.
    public var ringSize: Int { engine.sendCapacity }

    public var peerRingSize: Int { engine.receiveCapacity }

    /// Segments sent more than once so far, as iperf3 reports them: over TCP the kernel's count (TCP_INFO), nil
    /// if the kernel does not say; over shared memory 0, since nothing is ever sent twice.
    public var retransmissions: Int? { engine.retransmissions }

    /// Bytes this side may have sent and not yet seen taken, as iperf3's Cwnd: over TCP the kernel's congestion
    /// window (TCP_INFO), nil if the kernel does not say; over shared memory the size of the ring it writes.
    public var congestionWindow: Int? { engine.congestionWindow }

    /// How often this connection's calls slept and rang the peer (see `WaitStatistics`); nil over TCP, whose
    /// waits happen in the kernel.
    public var waitStatistics: WaitStatistics? { engine.waitStatistics }

    // MARK: Identity and readiness

    /// The process at the other end (SO_PEERCRED at connect time); nil over TCP, which cannot know it.
    public var peerCredentials: PeerCredentials? { engine.peerCredentials }

    /// A descriptor that polls readable (POLLIN) when this socket may be readable: data arrived, the peer shut
    /// down or died. Over shared memory it is an epoll descriptor; over TCP, the socket itself. Never close it.
    ///
    /// Contract (arm, then re-check): the peer rings only a sleeper that said so. Call `armReadable()` first; if it
    /// returns true, read now. Otherwise poll this descriptor; when it fires, read (non-blocking) until EAGAIN,
    /// then arm again. Without arming, the descriptor may never fire.
    public var pollDescriptor: Int32 { engine.readInterest.descriptor }

    /// Announces that we are about to poll `pollDescriptor`, then re-checks.
    /// - Returns: true when the socket is readable now (or at end of stream): read instead of polling.
    public func armReadable() throws(VMSockError) -> Bool { try engine.armReadable() }

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
