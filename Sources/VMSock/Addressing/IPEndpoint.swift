import Glibc

/// An IP address and port: what `getsockname` and `getpeername` give for a TCP socket.
///
/// Both transports report these. A shared-memory connection has no TCP port of its own on the connecting side;
/// see `VMSocket.localAddress` for what it reports there.
public struct IPEndpoint: Sendable, Hashable, CustomStringConvertible {
    public enum Family: Sendable, Hashable { case v4, v6 }

    public let family: Family
    /// The address in network byte order: 4 bytes for IPv4, 16 for IPv6.
    public let addressBytes: [UInt8]
    public let port: UInt16

    public init(family: Family, addressBytes: [UInt8], port: UInt16) {
        precondition(addressBytes.count == (family == .v4 ? 4 : 16), "IPv4 takes 4 address bytes, IPv6 16")
        self.family = family
        self.addressBytes = addressBytes
        self.port = port
    }

    /// Parses a numeric address ("127.0.0.1", "::1", "fe80::1"); nil when `host` is not one.
    public init?(numericHost host: String, port: UInt16) {
        var v4 = in_addr()
        if inet_pton(AF_INET, host, &v4) == 1 {
            self.init(family: .v4, addressBytes: withUnsafeBytes(of: v4) { Array($0) }, port: port)
            return
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, host, &v6) == 1 {
            self.init(family: .v6, addressBytes: withUnsafeBytes(of: v6) { Array($0) }, port: port)
            return
        }
        return nil
    }

    /// The numeric address without the port ("127.0.0.1", "::1").
    public var host: String {
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        addressBytes.withUnsafeBytes { bytes in
            _ = inet_ntop(family == .v4 ? AF_INET : AF_INET6, bytes.baseAddress, &text, socklen_t(text.count))
        }
        return String(decoding: text.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// "127.0.0.1:7000", "[::1]:7000".
    public var description: String { family == .v4 ? "\(host):\(port)" : "[\(host)]:\(port)" }

    public func with(port: UInt16) -> IPEndpoint { IPEndpoint(family: family, addressBytes: addressBytes, port: port) }

    /// 127.0.0.0/8, ::1, and IPv4-mapped loopback.
    public var isLoopback: Bool {
        switch family {
        case .v4: return addressBytes[0] == 127
        case .v6:
            if addressBytes == Self.v6Loopback { return true }
            return mappedIPv4?.isLoopback ?? false
        }
    }

    /// 0.0.0.0 or ::, the address a listener binds to accept on every interface.
    public var isWildcard: Bool { addressBytes.allSatisfy { $0 == 0 } }

    /// The IPv4 address inside an IPv4-mapped IPv6 one (::ffff:a.b.c.d), as a dual-stack listener reports its
    /// IPv4 peers.
    public var mappedIPv4: IPEndpoint? {
        guard family == .v6, addressBytes[0..<10].allSatisfy({ $0 == 0 }), addressBytes[10] == 0xff,
            addressBytes[11] == 0xff
        else { return nil }
        return IPEndpoint(family: .v4, addressBytes: Array(addressBytes[12..<16]), port: port)
    }

    /// 127.0.0.1 or ::1.
    static func loopback(_ family: Family, port: UInt16) -> IPEndpoint {
        IPEndpoint(family: family, addressBytes: family == .v4 ? [127, 0, 0, 1] : v6Loopback, port: port)
    }

    static func wildcard(_ family: Family, port: UInt16) -> IPEndpoint {
        IPEndpoint(family: family, addressBytes: [UInt8](repeating: 0, count: family == .v4 ? 4 : 16), port: port)
    }

    static let v6Loopback: [UInt8] = [UInt8](repeating: 0, count: 15) + [1]

    // MARK: sockaddr

    var socketFamily: Int32 { family == .v4 ? AF_INET : AF_INET6 }

    /// Calls `body` with this endpoint as a `sockaddr` and its length.
    func withSockaddr<R, E: Error>(_ body: (UnsafePointer<sockaddr>, socklen_t) throws(E) -> R) throws(E) -> R {
        switch family {
        case .v4:
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = port.bigEndian
            withUnsafeMutableBytes(of: &addr.sin_addr) { $0.copyBytes(from: addressBytes) }
            return try withUnsafePointer(to: &addr) { (pointer) throws(E) -> R in
                try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { (address) throws(E) -> R in
                    try body(address, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        case .v6:
            var addr = sockaddr_in6()
            addr.sin6_family = sa_family_t(AF_INET6)
            addr.sin6_port = port.bigEndian
            withUnsafeMutableBytes(of: &addr.sin6_addr) { $0.copyBytes(from: addressBytes) }
            return try withUnsafePointer(to: &addr) { (pointer) throws(E) -> R in
                try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { (address) throws(E) -> R in
                    try body(address, socklen_t(MemoryLayout<sockaddr_in6>.size))
                }
            }
        }
    }

    /// Reads an AF_INET or AF_INET6 `sockaddr`; nil for any other family.
    init?(_ address: UnsafePointer<sockaddr>) {
        switch Int32(address.pointee.sa_family) {
        case AF_INET:
            let v4 = UnsafeRawPointer(address).loadUnaligned(as: sockaddr_in.self)
            self.init(
                family: .v4, addressBytes: withUnsafeBytes(of: v4.sin_addr) { Array($0) }, port: UInt16(bigEndian: v4.sin_port))
        case AF_INET6:
            let v6 = UnsafeRawPointer(address).loadUnaligned(as: sockaddr_in6.self)
            self.init(
                family: .v6, addressBytes: withUnsafeBytes(of: v6.sin6_addr) { Array($0) },
                port: UInt16(bigEndian: v6.sin6_port))
        default:
            return nil
        }
    }

    /// `getsockname` (local) or `getpeername` (peer) of a socket; nil when the call fails (a peer that already
    /// reset the connection: ENOTCONN) or the address is not IPv4 or IPv6.
    static func of(_ fd: Int32, peer: Bool) -> IPEndpoint? {
        guard var storage = try? (peer ? Sys.peerAddress(fd) : Sys.localAddress(fd)) else { return nil }
        return withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { IPEndpoint($0) }
        }
    }
}
