import Glibc
import VMSockRing

/// How connect picks a transport: resolve, then for each address try shared memory (when the policy and the
/// address allow it), and fall back to TCP with the reason, or fail under `shm`.
///
/// This is the blocking connect; `AsyncConnector` takes the same steps, waiting through an event loop instead.
/// The decisions (which registrations, whom to trust, why to fall back, what to throw) live here for both.
enum Connector {
    static func connect(host: String, port: UInt16, options: VMSocketOptions) throws(VMSockError) -> VMSocket {
        try connect(to: Resolver.resolve(host, port: port, family: options.addressFamily), options: options)
    }

    /// Tries each address in order, as a TCP client does, and throws the last failure if none connects.
    static func connect(to endpoints: [IPEndpoint], options: VMSocketOptions) throws(VMSockError) -> VMSocket {
        try validate(options)
        var failure = noAddress
        for endpoint in endpoints {
            do throws(VMSockError) {
                return try connect(to: endpoint, options: options)
            } catch {
                failure = error
            }
        }
        throw failure
    }

    private static func connect(to destination: IPEndpoint, options: VMSocketOptions) throws(VMSockError) -> VMSocket {
        var fallback = FallbackReason.disabledByPolicy
        var detail: String? = nil
        if options.effectiveTransport != .tcp {
            switch sharedMemory(to: destination, options: options) {
            case .success(let socket): return socket
            case .failure(let error): (fallback, detail) = try fallingBack(after: error, to: destination, options: options)
            }
        }
        let socket = try TCPCalls.connect(destination, timeoutMs: options.connectTimeoutMs)
        return tcpSocket(socket, to: destination, fallback: fallback, detail: detail)
    }

    /// The shared-memory attempt. Every failure carries the `FallbackReason` that explains it.
    private static func sharedMemory(to destination: IPEndpoint, options: VMSocketOptions) -> Result<VMSocket, VMSockError> {
        let candidates = registrations(for: destination, options: options)
        if candidates.isEmpty { return .failure(notLocal) }
        var failure = noListener
        for address in candidates {
            if options.reusesLinks {
                do throws(VMSockError) {
                    if let socket = try reopenParkedLink(to: address, dialed: destination, options: options) {
                        return .success(socket)
                    }
                } catch {
                    return .failure(handshakeFailure(error))
                }
            }
            let control: Descriptor
            do throws(VMSockError) {
                control = try ControlSocket.connect(address, timeoutMs: options.handshakeTimeoutMs)
            } catch {
                if error.code == ECONNREFUSED { continue }  // nobody registered under this name
                return .failure(controlConnectFailure(error))
            }
            do throws(VMSockError) {
                // A registration we do not trust may be a squatter; a trusted one may still follow.
                guard let peer = try trustedOwner(control, address, options, else: &failure) else { continue }
                // Our half is made after we knock: the connect has woken the listener, and a wake-up costs more
                // here than making a half, so the hello is usually there by the time the listener looks (it also
                // looks again without sleeping for a while, see `VMListener.accept`).
                var link = try Handshake.connect(
                    control, peer: peer, dialed: destination, address: address, capacity: options.ringSize,
                    reusable: options.reusesLinks, timeoutMs: options.handshakeTimeoutMs)
                if link.reusable { link.parking = LinkPool.shared.parking(for: address) }
                return .success(try sharedMemorySocket(link, to: destination))
            } catch {
                return .failure(handshakeFailure(error))
            }
        }
        return .failure(failure)
    }

    /// A connection on a parked link to `address` (see `LinkReuse`), or nil when none could be reopened: a link
    /// that fails to reopen is freed, and the caller makes a new one. Throws ETIMEDOUT when the listener did not
    /// answer within the handshake timeout (it is alive but not accepting: a new link would wait as long), after
    /// freeing the other links parked for it.
    private static func reopenParkedLink(
        to address: ControlAddress, dialed: IPEndpoint, options: VMSocketOptions
    ) throws(VMSockError) -> VMSocket? {
        while let parked = LinkPool.shared.take(address, capacity: options.ringSize, policy: options.peerPolicy) {
            do throws(VMSockError) {
                let link = try Handshake.reopen(parked, dialed: dialed, timeoutMs: options.handshakeTimeoutMs)
                return try sharedMemorySocket(link, to: dialed, reused: true)
            } catch {
                if error.code == ETIMEDOUT {
                    LinkPool.shared.removeAll(for: address)
                    throw error
                }
            }
        }
        return nil
    }

    // MARK: Steps and decisions shared with the async connect

    static func validate(_ options: VMSocketOptions) throws(VMSockError) {
        try SharedRegion.checkCapacity(options.ringSize)
    }

    static var noAddress: VMSockError { VMSockError(code: EINVAL, "no address to connect to") }
    static var notLocal: VMSockError { VMSockError(code: ECONNREFUSED, "").because(.remote) }
    static var noListener: VMSockError { VMSockError(code: ECONNREFUSED, "").because(.noListener) }

    /// The registry names to try for `destination`, in order; none when it is not an address of this host.
    static func registrations(for destination: IPEndpoint, options: VMSocketOptions) -> [ControlAddress] {
        let isLocal = LocalAddresses.isLocal(destination)
        return Registry.candidates(for: destination, isLocal: isLocal, directory: options.effectiveDirectory)
    }

    /// The owner of the registration behind `control` when we trust it; otherwise nil, and `failure` says why.
    static func trustedOwner(
        _ control: Descriptor, _ address: ControlAddress, _ options: VMSocketOptions, else failure: inout VMSockError
    ) throws(VMSockError) -> PeerCredentials? {
        let peer = try ControlSocket.peerCredentials(control.raw)
        guard options.peerPolicy.admits(peer) else {
            failure = VMSockError(
                code: ECONNREFUSED, "the registration \(address) is owned by uid \(peer.uid) (pid \(peer.pid)), which this process does not trust"
            ).because(.untrustedOwner)
            return nil
        }
        return peer
    }

    /// A control connect that failed otherwise than with nobody there.
    static func controlConnectFailure(_ error: VMSockError) -> VMSockError {
        error.because(error.code == EMFILE || error.code == ENFILE ? .outOfResources : .handshakeFailed)
    }

    /// A handshake failure, with its fallback reason.
    static func handshakeFailure(_ error: VMSockError) -> VMSockError {
        if error.fallback != nil { return error }
        switch error.code {
        case EMFILE, ENFILE, ENOMEM, ENOSPC: return error.because(.outOfResources)
        default: return error.because(.handshakeFailed)
        }
    }

    /// After the shared-memory attempt failed: why TCP is used instead, or, under the `shm` policy, the error.
    static func fallingBack(
        after error: VMSockError, to destination: IPEndpoint, options: VMSocketOptions
    ) throws(VMSockError) -> (FallbackReason, String?) {
        let fallback = error.fallback ?? .handshakeFailed
        let detail = error.message.isEmpty ? nil : error.message
        if options.effectiveTransport == .shm {
            // Nothing to connect to is ECONNREFUSED; a listener that broke, reset or timed out the handshake
            // keeps its own code (EPROTO, ECONNRESET, ETIMEDOUT), as over shared memory.
            throw VMSockError(
                code: error.code,
                "no shared-memory connection to \(destination) (\(fallback)\(detail.map { ": \($0)" } ?? "")); the transport policy is shm, so no TCP fallback")
        }
        return (fallback, detail)
    }

    static func sharedMemorySocket(
        _ link: EstablishedLink, to destination: IPEndpoint, reused: Bool = false
    ) throws(VMSockError) -> VMSocket {
        let stream = try SharedMemoryStream(link)
        TransportStatistics.count(.sharedMemory, fallback: nil, reused: reused)
        return VMSocket(engine: .sharedMemory(stream), local: destination.with(port: 0), peer: destination)
    }

    static func tcpSocket(
        _ socket: Descriptor, to destination: IPEndpoint, fallback: FallbackReason, detail: String?
    ) -> VMSocket {
        let local = IPEndpoint.of(socket.raw, peer: false) ?? .wildcard(destination.family, port: 0)
        TransportStatistics.count(.tcp, fallback: fallback)
        return VMSocket(
            engine: .tcp(TCPStream(socket)), local: local, peer: destination, fallback: fallback, detail: detail)
    }
}
