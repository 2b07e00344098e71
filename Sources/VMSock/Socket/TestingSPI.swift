import CVMSock
import Glibc
import VMSockRing

// Hooks for the hostile-peer tests, behind `@_spi(Testing) import VMSock`. They let a test process play a peer
// that breaks the rules: corrupt the words of its own region, chatter on the control socket, or speak the
// handshake by hand. Nothing here is part of the supported API.

extension VMSocket {
    /// The shared-memory engine; these hooks are for shared-memory connections only.
    private var sharedMemory: SharedMemoryStream? { engine as? SharedMemoryStream }

    /// The base of our own (writable) ring region.
    @_spi(Testing) public var _localRegionBase: UnsafeMutableRawPointer { sharedMemory!.link.localRegion.base }
    /// The control socket's descriptor.
    @_spi(Testing) public var _controlDescriptor: Int32 { sharedMemory!.link.control.raw }
    /// The base of the peer's (read-only) ring region.
    @_spi(Testing) public var _peerRegionBase: UnsafeRawPointer { UnsafeRawPointer(sharedMemory!.link.peerRegion.base) }
    /// Whether the peer announced it waits for data (our publishes ring its bell), or for space.
    @_spi(Testing) public var _peerWaits: (data: Bool, space: Bool) { sharedMemory!.peerWaits }
    /// How this connection orders its wake-ups: "asymmetric" or "fenced" (see `WakeUpOrdering`).
    @_spi(Testing) public var _wakeUpOrdering: String { "\(sharedMemory!.link.ordering)" }
    /// The wake-up state of a shared-memory connection (positions, flags, bells, counters), for a test that
    /// timed out to print; "tcp" over TCP.
    @_spi(Testing) public var _debugSnapshot: String { sharedMemory?.debugSnapshot ?? "tcp" }
    /// Rings the peer's data bell, as a publish would.
    @_spi(Testing) public func _ringPeerDataBell() { sharedMemory!.link.peerDataBell.ring() }
}

@_spi(Testing) public enum RawControl {
    /// Whether this process registered for membarrier (so its connections can be asymmetric).
    public static var asymmetricFencesAvailable: Bool { Membarrier.isRegistered }

    /// The registry name a listener on `endpoint` registers first (abstract unless `directory` is given).
    public static func registryName(_ endpoint: IPEndpoint, directory: String? = nil) -> String {
        Registry.address(of: endpoint, directory: directory).description
    }

    /// Connects a bare control socket to the registration of a listener on `endpoint`; the caller owns it.
    public static func connect(_ endpoint: IPEndpoint, directory: String? = nil) throws(VMSockError) -> Int32 {
        try ControlSocket.connect(Registry.address(of: endpoint, directory: directory), timeoutMs: 5000).release()
    }

    /// Registers a bare listening control socket for `endpoint`, as a listener would (without the TCP socket);
    /// the caller owns the descriptor.
    public static func listen(_ endpoint: IPEndpoint, directory: String? = nil) throws(VMSockError) -> Int32 {
        try ControlSocket.listen(Registry.address(of: endpoint, directory: directory), backlog: 16).release()
    }

    public static func send(_ fd: Int32, _ bytes: [UInt8], descriptors: [Int32]) throws(VMSockError) {
        try ControlSocket.send(fd, bytes, descriptors: descriptors)
    }

    /// Receives one message; the returned descriptors are owned by the caller.
    public static func receive(_ fd: Int32, timeoutMs: Int32) throws(VMSockError) -> (bytes: [UInt8], descriptors: [Int32]) {
        let received = try ControlSocket.receive(fd, timeoutMs: timeoutMs)
        return (received.bytes, received.descriptors.map { (try? Sys.duplicate($0.raw))?.release() ?? -1 })
    }

    /// A correctly made, sealed ring region memfd of `capacity` bytes; the caller owns the descriptor.
    public static func makeRegion(capacity: Int) throws(VMSockError) -> Int32 {
        let (_, fd) = try SharedRegion.create(capacity: capacity)
        return try Sys.duplicate(fd.raw).release()
    }

    /// Like `makeRegion`, with the region kept mapped: `reopen(g)` starts generation `g` in its header, as a
    /// connector's reopen does (`LinkReuse`). The caller owns the descriptor.
    public static func makeRegionKept(capacity: Int) throws(VMSockError) -> (fd: Int32, reopen: (UInt32) -> Void) {
        let (region, fd) = try SharedRegion.create(capacity: capacity)
        return (try Sys.duplicate(fd.raw).release(), { LocalHeader(base: region.base).reopen(generation: $0, consumed: nil) })
    }

    /// The ringing end of a new doorbell (a Unix stream socket); the caller owns it.
    public static func makeBell() -> Int32 {
        let type = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        guard let (_, ringing) = try? Sys.socketPair(type, "socketpair(bell)") else { return -1 }
        return ringing.release()  // the other end is closed as it goes
    }

    /// An eventfd (not a valid doorbell); the caller owns it.
    public static func makeEventFD() -> Int32 { (try? Sys.eventFD(flags: Int32(EFD_CLOEXEC)))?.release() ?? -1 }
}
