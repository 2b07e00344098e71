import CVMSock
import Glibc

// Hooks for the hostile-peer tests, behind `@_spi(Testing) import VMSock`. They let a test process play a peer
// that breaks the rules: corrupt the words of its own region, chatter on the control socket, or speak the
// handshake by hand. Nothing here is part of the supported API.

extension VMSocket {
    /// The base of our own (writable) ring region.
    @_spi(Testing) public var _localRegionBase: UnsafeMutableRawPointer { stream.link.localRegion.base }
    /// The control socket's descriptor.
    @_spi(Testing) public var _controlDescriptor: Int32 { stream.link.control.raw }
    /// The base of the peer's (read-only) ring region.
    @_spi(Testing) public var _peerRegionBase: UnsafeRawPointer { UnsafeRawPointer(stream.link.peerRegion.base) }
    /// Rings the peer's data bell, as a publish would.
    @_spi(Testing) public func _ringPeerDataBell() { stream.link.peerDataBell.ring() }
}

@_spi(Testing) public enum RawControl {
    /// Connects a bare control socket to an endpoint; the caller owns the descriptor.
    public static func connect(_ address: VMSocketAddress) throws(VMSockError) -> Int32 {
        let fd = try ControlSocket.connect(address, timeoutMs: 5000)
        return dup(fd.raw)
    }

    /// Binds a bare listening control socket; the caller owns the descriptor.
    public static func listen(_ address: VMSocketAddress) throws(VMSockError) -> Int32 {
        let fd = try ControlSocket.listen(address, backlog: 16)
        return dup(fd.raw)
    }

    public static func send(_ fd: Int32, _ bytes: [UInt8], descriptors: [Int32]) throws(VMSockError) {
        try ControlSocket.send(fd, bytes, descriptors: descriptors)
    }

    /// Receives one message; the returned descriptors are owned by the caller.
    public static func receive(_ fd: Int32, timeoutMs: Int32) throws(VMSockError) -> (bytes: [UInt8], descriptors: [Int32]) {
        let received = try ControlSocket.receive(fd, timeoutMs: timeoutMs)
        return (received.bytes, received.descriptors.map { dup($0.raw) })
    }

    /// A correctly made, sealed ring region memfd of `capacity` bytes; the caller owns the descriptor.
    public static func makeRegion(capacity: Int) throws(VMSockError) -> Int32 {
        let (_, fd) = try SharedRegion.create(capacity: capacity)
        return dup(fd.raw)
    }

    /// The ringing end of a new doorbell (a Unix stream socket); the caller owns it.
    public static func makeBell() -> Int32 {
        var ends: [Int32] = [-1, -1]
        socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &ends)
        close(ends[0])
        return ends[1]
    }

    /// An eventfd (not a valid doorbell); the caller owns it.
    public static func makeEventFD() -> Int32 { eventfd(0, Int32(EFD_CLOEXEC)) }
}
