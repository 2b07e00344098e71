/// Settings fixed when a connection is made (the `setsockopt` calls that must come before `connect`/`accept`).
public struct VMSocketOptions: Sendable {
    /// Bytes of this side's outgoing ring: a power of two from 4 KiB to 64 MiB (default 256 KiB).
    /// The peer chooses the size of the other direction. Like SO_SNDBUF. Not used by TCP connections.
    public var ringSize: Int = 256 << 10
    /// Which transports connect may use, and whether a listener registers for shared memory.
    /// nil: the process default (`VMSOCK_TRANSPORT`, else `auto`).
    public var transport: TransportPolicy? = nil
    /// Which peers to trust, judged by SO_PEERCRED: for a connector, the owner of a shared-memory registration
    /// (an untrusted one makes `auto` use TCP); for a listener, the shared-memory connectors it admits.
    /// Default: our own user or root.
    public var peerPolicy: PeerPolicy = .sameUser
    /// How long the shared-memory handshake may take before it fails with ETIMEDOUT (and how long a listener waits
    /// for a connector's hello).
    public var handshakeTimeout: Duration = .seconds(5)
    /// How long a TCP connect may take before it fails with ETIMEDOUT; nil: as long as the kernel tries.
    public var connectTimeout: Duration? = nil
    /// Only IPv4 or only IPv6 addresses (like `nc -4`/`-6`); nil: both.
    public var addressFamily: IPEndpoint.Family? = nil
    /// The address and port a connection leaves from, as bind(2) before connect(2) (`nc -s`/`-p`, iperf3's
    /// `-B`/`--cport`); port 0: one the kernel picks; a wildcard address (0.0.0.0 or ::): the port only, from the
    /// address the route gives. It is the connection's local address over every transport, held while it lives.
    /// A connect fails with bind's error (EADDRINUSE, EADDRNOTAVAIL), and skips the destination's addresses of
    /// the other family (EAFNOSUPPORT). nil: the route's address and a port the kernel picks.
    public var sourceAddress: IPEndpoint? = nil
    /// The registry directory; nil: `VMSOCK_DIR`, and without it the abstract Unix namespace (see `Registry`).
    public var registryDirectory: String? = nil
    /// Whether a closed shared-memory connection's rings, doorbells and control socket are kept for the next
    /// connection between the same two processes: a connector's next connect to the same listener, or a
    /// listener's next connection from the same connector (both must allow it). That connection then costs one
    /// message each way instead of a new set-up. A connector keeps up to four such links (`VMSocket.closeIdleLinks`
    /// frees them), a listener up to sixteen, for the handshake timeout (expired ones are freed by its next
    /// accept, or its close). The blocking and the async connect alike. Default true.
    public var reusesLinks: Bool = true
    /// The vmsockd socket whose region this process joins, for connections with the region's peers (see
    /// `TransportPolicy.ivshmem`); nil: `VMSOCK_IVSHMEM`, and without it no region. A process joins each region
    /// once, at the first socket that needs it, and stays a peer of it while the process lives.
    public var ivshmemPath: String? = nil

    public init() {}

    public init(ringSize: Int) {
        self.ringSize = ringSize
    }

    public init(transport: TransportPolicy) {
        self.transport = transport
    }

    var effectiveTransport: TransportPolicy { transport ?? TransportPolicy.processDefault }
    var effectiveDirectory: String? { registryDirectory ?? Registry.processDirectory }

    var handshakeTimeoutMs: Int32 { Self.milliseconds(handshakeTimeout) }
    var connectTimeoutMs: Int32 { connectTimeout.map(Self.milliseconds) ?? -1 }

    private static func milliseconds(_ duration: Duration) -> Int32 {
        let (seconds, attoseconds) = duration.components
        return Int32(clamping: max(0, seconds * 1000 + attoseconds / 1_000_000_000_000_000))
    }
}
