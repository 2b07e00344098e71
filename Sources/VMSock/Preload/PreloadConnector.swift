import Glibc
import Synchronization

/// vmsock-run's connect, before the real TCP connect: find the listener's registration, hold the connector's
/// port, send the hello (carrying that port) and wait for the welcome. Any failure here leaves the connection on
/// TCP, with the reason; after a welcome the caller must make the TCP connection and use the link.
package enum PreloadConnector {
    /// Each side's ring, in bytes (like SO_SNDBUF): 1 MiB holds eight of iperf3's 128 KiB writes.
    static let ringSize = 1 << 20
    /// How long a connector waits for the welcome. It normally comes within microseconds; a listener thread this
    /// slow is better left for TCP.
    static let handshakeTimeoutMs: Int32 = 1000

    package static let hooks = Mutex(PreloadHooks())

    package enum Outcome {
        case welcomed(PreloadLink)
        case tcp(reason: String)
    }

    /// - Parameters: fd: the application's TCP socket (unconnected); destination: where it connects.
    package static func connect(fd: Int32, destination: IPEndpoint) -> Outcome {
        if TransportPolicy.processDefault == .tcp { return .tcp(reason: "VMSOCK_TRANSPORT=tcp") }
        guard destination.isWildcard || LocalAddresses.isLocal(destination) else {
            return .tcp(reason: "\(destination.host) is not an address of this host")
        }
        var lastFailure = "no vmsock-run listener on \(destination)"
        for address in PreloadRegistry.candidates(for: destination) {
            let control: Descriptor
            do throws(VMSockError) {
                guard let connected = try ControlSocket.connectNow(address) else {
                    lastFailure = "the listener's registration \(address) has a full backlog"
                    continue
                }
                control = connected
            } catch {
                if error.code != ECONNREFUSED { lastFailure = "registration \(address): \(error)" }
                continue
            }
            return handshake(fd: fd, destination: destination, control: control, address: address)
        }
        return .tcp(reason: lastFailure)
    }

    private static func handshake(fd: Int32, destination: IPEndpoint, control: Descriptor, address: ControlAddress) -> Outcome {
        do throws(VMSockError) {
            let peer = try ControlSocket.peerCredentials(control.raw)
            guard PeerPolicy.sameUser.admits(peer) else {
                return .tcp(reason: "the registration \(address) belongs to uid \(peer.uid), not a trusted user")
            }
            // The listener pairs the connection it accepts with this hello by our address and port.
            guard let source = hooks.withLock({ $0.bindSource })(fd, destination) else {
                return .tcp(reason: "could not bind the socket for its port: \(VMSockError.name(of: errno))")
            }
            let hello = try Handshake.sendHello(
                control, dialed: destination, source: source, address: address, capacity: ringSize)
            let reply = try ControlSocket.receive(control.raw, timeoutMs: handshakeTimeoutMs)
            let link = try Handshake.finishConnect(hello, reply: reply, control: control, peer: peer, address: address)
            return .welcomed(PreloadLink(link))
        } catch {
            return .tcp(reason: "handshake with \(address) failed: \(error)")
        }
    }
}
