import Glibc
import VMSockRing

/// How connect picks a transport: resolve, then for each address try shared memory (when the policy and the
/// address allow it), and fall back to TCP with the reason, or fail under `shm`.
enum Connector {
    static func connect(host: String, port: UInt16, options: VMSocketOptions) throws(VMSockError) -> VMSocket {
        try connect(to: Resolver.resolve(host, port: port, family: options.addressFamily), options: options)
    }

    /// Tries each address in order, as a TCP client does, and throws the last failure if none connects.
    static func connect(to endpoints: [IPEndpoint], options: VMSocketOptions) throws(VMSockError) -> VMSocket {
        guard RingLayout.isValid(capacity: options.ringSize) else {
            throw VMSockError(code: EINVAL, "ring size \(options.ringSize) is invalid: use a power of two from 4096 to 67108864")
        }
        var failure = VMSockError(code: EINVAL, "no address to connect to")
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
        let policy = options.effectiveTransport
        var fallback = FallbackReason.disabledByPolicy
        var detail: String? = nil
        if policy != .tcp {
            switch sharedMemory(to: destination, options: options) {
            case .success(let socket):
                TransportStatistics.count(.sharedMemory, fallback: nil)
                return socket
            case .failure(let error):
                fallback = error.fallback ?? .handshakeFailed
                detail = error.message.isEmpty ? nil : error.message
                if policy == .shm {
                    // Nothing to connect to is ECONNREFUSED; a listener that broke, reset or timed out the
                    // handshake keeps its own code (EPROTO, ECONNRESET, ETIMEDOUT), as over shared memory.
                    throw VMSockError(
                        code: error.code,
                        "no shared-memory connection to \(destination) (\(fallback)\(detail.map { ": \($0)" } ?? "")); the transport policy is shm, so no TCP fallback")
                }
            }
        }
        let socket = try TCPCalls.connect(destination, timeoutMs: options.connectTimeoutMs)
        let local = IPEndpoint.of(socket.raw, peer: false) ?? .wildcard(destination.family, port: 0)
        TransportStatistics.count(.tcp, fallback: fallback)
        return VMSocket(
            engine: .tcp(TCPStream(socket)), local: local, peer: destination, fallback: fallback, detail: detail)
    }

    /// The shared-memory attempt. Every failure carries the `FallbackReason` that explains it.
    private static func sharedMemory(to destination: IPEndpoint, options: VMSocketOptions) -> Result<VMSocket, VMSockError> {
        let directory = options.effectiveDirectory
        let isLocal = LocalAddresses.isLocal(destination)
        let candidates = Registry.candidates(for: destination, isLocal: isLocal, directory: directory)
        if candidates.isEmpty {
            return .failure(VMSockError(code: ECONNREFUSED, "").because(.remote))
        }
        var failure = VMSockError(code: ECONNREFUSED, "").because(.noListener)
        for address in candidates {
            let control: Descriptor
            do throws(VMSockError) {
                control = try ControlSocket.connect(address, timeoutMs: options.handshakeTimeoutMs)
            } catch {
                if error.code == ECONNREFUSED { continue }  // nobody registered under this name
                return .failure(error.because(error.code == EMFILE || error.code == ENFILE ? .outOfResources : .handshakeFailed))
            }
            do throws(VMSockError) {
                let peer = try ControlSocket.peerCredentials(control.raw)
                guard options.peerPolicy.admits(peer) else {
                    // A registration we do not trust may be a squatter; a trusted one may still follow.
                    failure = VMSockError(
                        code: ECONNREFUSED, "the registration \(address) is owned by uid \(peer.uid) (pid \(peer.pid)), which this process does not trust"
                    ).because(.untrustedOwner)
                    continue
                }
                let link = try Handshake.connect(
                    control, peer: peer, dialed: destination, address: address, capacity: options.ringSize,
                    timeoutMs: options.handshakeTimeoutMs)
                let stream = try SharedMemoryStream(link)
                return .success(VMSocket(
                    engine: .sharedMemory(stream), local: destination.with(port: 0), peer: destination))
            } catch {
                return .failure(error.fallback == nil ? error.because(classify(error)) : error)
            }
        }
        return .failure(failure)
    }

    private static func classify(_ error: VMSockError) -> FallbackReason {
        switch error.code {
        case EMFILE, ENFILE, ENOMEM, ENOSPC: .outOfResources
        default: .handshakeFailed
        }
    }
}
