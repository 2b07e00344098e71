import Glibc

/// A shared-memory link as vmsock-run hands it to its C data path (`Sources/CVMSockPreload/stream.c`): the
/// regions and descriptors of an `EstablishedLink`, owned here until the C half releases it.
///
/// The C data path speaks the ring layout of `RingLayout` with two words of its own: the reader's "waiting for
/// data" word holds an arm generation instead of a flag, and the writer keeps a bell word (`preloadBell`). Only
/// two vmsock-run processes ever share such a link: they find each other under their own registry names
/// (`PreloadRegistry`), never a `VMListener`'s.
package final class PreloadLink: @unchecked Sendable {  // immutable; the C half owns its use
    let link: EstablishedLink

    init(_ link: EstablishedLink) { self.link = link }

    package var localBase: UnsafeMutableRawPointer { link.localRegion.base }
    package var peerBase: UnsafeRawPointer { UnsafeRawPointer(link.peerRegion.base) }
    package var localCapacity: Int { link.localRegion.capacity }
    package var peerCapacity: Int { link.peerRegion.capacity }
    package var controlFD: Int32 { link.control.raw }
    package var spaceBellFD: Int32 { link.spaceBell.fd }
    package var peerSpaceBellFD: Int32 { link.peerSpaceBell.fd }
    package var dataBellFD: Int32 { link.dataBell.fd }
    package var peerDataBellFD: Int32 { link.peerDataBell.fd }
}

/// Where vmsock-run's listeners register: the registry's names (`Registry.key`) under a prefix of their own, so
/// that a preloaded program and a `VMSocket` program never try to share rings (their protocols after the
/// handshake differ: a preloaded connector also makes a real TCP connection).
enum PreloadRegistry {
    /// The C data path's own words (the arm word's layout, which doorbell a writer rings) change without the
    /// handshake knowing: vmsock-run processes of different data paths must not share rings, so each registers and
    /// looks up under its own version, and to each other they are plain TCP. 2: data doorbells for epoll sleepers.
    static let dataPathVersion = 2

    static func address(of endpoint: IPEndpoint) -> ControlAddress {
        ControlAddress(kind: .abstract, name: "vmsock-run/\(dataPathVersion)/" + Registry.key(of: endpoint))
    }

    /// Where a connector looks for `destination`'s listener: the exact address, then the wildcard of its family,
    /// then the IPv6 wildcard for IPv4 (a dual-stack listener).
    static func candidates(for destination: IPEndpoint) -> [ControlAddress] {
        let exact = destination.mappedIPv4 ?? destination
        var endpoints = [exact, .wildcard(exact.family, port: exact.port)]
        if exact.family == .v4 { endpoints.append(.wildcard(.v6, port: exact.port)) }
        return endpoints.map(address(of:))
    }
}

/// What the preload library's C half provides to the set-up in this module, set once at load.
package struct PreloadHooks: Sendable {
    /// A descriptor the library owns (a registration, a control socket) that a forked child must close.
    package var noteInternal: @Sendable (Int32) -> Void = { _ in }
    package var forgetInternal: @Sendable (Int32) -> Void = { _ in }
    /// Whether listeners may still welcome connectors (not in a forked child; not once the process forked
    /// unless its claim socket is open).
    package var listenersAllowed: @Sendable () -> Bool = { true }
    /// The claim socket is open: a forked sibling that accepts can take the links welcomed here.
    package var claimsReady: @Sendable () -> Void = {}
    /// How many TCP sockets listen on the listening socket's exact address and port (more than one: an
    /// SO_REUSEPORT group, where another process may accept the connection), or -1 when it cannot tell.
    package var listenersSharing: @Sendable (Int32) -> Int32 = { _ in 1 }
    /// Called first on the listener thread: marks it as the library's own, so its calls are not interposed.
    package var enterLibraryThread: @Sendable () -> Void = {}
    /// Bracket the listener thread's work between its waits (`vmsp_setup_enter`): a fork waits until no thread
    /// is inside the set-up, so that a forked child, which still accepts and releases through it, finds no lock
    /// held by a thread it does not have.
    package var enterSetUp: @Sendable () -> Void = {}
    package var leaveSetUp: @Sendable () -> Void = {}
    /// The welcome book (claim.c), which accepts in this process and its forked children read: a hello being
    /// answered (+1, -1), and a link welcomed or gone for a connector port (port, +1 or -1).
    package var welcomeAnswering: @Sendable (Int32) -> Void = { _ in }
    package var welcomePort: @Sendable (Int32, Int32) -> Void = { _, _ in }
    /// Binds an unbound socket for a connect to the address, returning the address and port its connection
    /// will have, or nil with errno.
    package var bindSource: @Sendable (Int32, IPEndpoint) -> IPEndpoint? = { _, _ in nil }

    package init() {}
}

extension IPEndpoint {
    /// An AF_INET or AF_INET6 address of `length` bytes; nil for anything else.
    package init?(socketAddress address: UnsafePointer<sockaddr>, length: socklen_t) {
        let family = Int32(address.pointee.sa_family)
        let needed = family == AF_INET ? MemoryLayout<sockaddr_in>.size : MemoryLayout<sockaddr_in6>.size
        guard Int(length) >= needed else { return nil }
        self.init(address)
    }

    /// The socket's bound address (`getsockname`).
    package static func localAddress(of fd: Int32) -> IPEndpoint? { of(fd, peer: false) }

    /// `withSockaddr` for callers outside the module, whose body cannot throw.
    package func withSocketAddress<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        withSockaddr { (address, length) throws(Never) -> R in body(address, length) }
    }
}
