/// Settings fixed when a connection is made (the `setsockopt` calls that must come before `connect`/`accept`).
public struct VMSocketOptions: Sendable {
    /// Bytes of this side's outgoing ring: a power of two from 4 KiB to 64 MiB (default 256 KiB).
    /// The peer chooses the size of the other direction. Like SO_SNDBUF.
    public var ringSize: Int = 256 << 10
    /// Which peers to trust, judged by SO_PEERCRED. Default: our own user or root.
    public var peerPolicy: PeerPolicy = .sameUser
    /// How long the handshake may take before connect gives up with ETIMEDOUT (and how long a listener waits for
    /// a connector's hello).
    public var handshakeTimeout: Duration = .seconds(5)

    public init() {}

    public init(ringSize: Int) {
        self.ringSize = ringSize
    }

    var handshakeTimeoutMs: Int32 {
        let (seconds, attoseconds) = handshakeTimeout.components
        return Int32(clamping: seconds * 1000 + attoseconds / 1_000_000_000_000_000)
    }
}
