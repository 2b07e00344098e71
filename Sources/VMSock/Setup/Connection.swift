/// A connection as the set-up layer hands it to the facade: the engine that carries it, its addresses, how its
/// transport was chosen, and what to do once the socket is gone.
struct Connection {
    let engine: any StreamEngine
    let local: IPEndpoint
    let peer: IPEndpoint
    var fallback: FallbackReason? = nil
    var detail: String? = nil
    /// Run by the socket's deinit, when nothing in this process can use the engine any more: parks a reusable
    /// link where its next connection will find it (the connector's `LinkPool`, the listener's parked links).
    /// Ownership flows down: the set-up layer decides where a link goes, the engine only says whether it may.
    var onRelease: (@Sendable () -> Void)? = nil
    /// A shared-memory connector's port: a TCP socket bound to `local`, held as long as the socket lives, so that
    /// no TCP connection on the host has the same address meanwhile (`TCPCalls.reservePort`).
    var portHeld: Descriptor? = nil

    /// A shared-memory connection on `link`, counted; its link is parked by `parking` when the socket is gone.
    static func sharedMemory(
        _ link: EstablishedLink, local: IPEndpoint, peer: IPEndpoint, reused: Bool, parking: LinkParking?
    ) throws(VMSockError) -> Connection {
        let stream = try SharedMemoryStream(link)
        TransportStatistics.count(stream.transport, fallback: nil, reused: reused)
        var connection = Connection(engine: stream, local: local, peer: peer)
        if link.reusable, let parking {
            connection.onRelease = { [stream] in
                // Not kept: retired (a connector frees its copy at its next look), and freed here.
                if let link = stream.detachForReuse(), !parking(link) { link.markRetired() }
            }
        }
        return connection
    }

    /// A TCP connection on a connected socket, counted. `fallback` is set for a connect that could have used
    /// shared memory.
    static func tcp(
        _ socket: Descriptor, peer: IPEndpoint, fallback: FallbackReason? = nil, detail: String? = nil
    ) -> Connection {
        let local = IPEndpoint.of(socket.raw, peer: false) ?? .wildcard(peer.family, port: 0)
        TransportStatistics.count(.tcp, fallback: fallback)
        return Connection(engine: TCPStream(socket), local: local, peer: peer, fallback: fallback, detail: detail)
    }
}
