import CVMSock
import Glibc
import Synchronization
import VMSockRing

/// Accepts vmsock connections on an endpoint of this host. The corresponding C calls are `socket`, `bind`,
/// `listen` and `accept`.
///
/// The endpoint is a name in the abstract Unix namespace: closing the listener, or its process dying, frees it
/// at once and leaves nothing on disk.
public final class VMListener: @unchecked Sendable {  // immutable but for atomics
    public let address: VMSocketAddress
    public let options: VMSocketOptions
    private let socket: Int32
    /// Bit 0: closed. Above it: accept calls using `socket` right now. Whoever leaves it at exactly "closed, no
    /// users" closes the descriptor, so a concurrent accept never runs on a descriptor number reused elsewhere.
    private let users = Atomic<Int>(0)
    private let descriptorClosed = Atomic<Bool>(false)
    private let rejected = Atomic<Int>(0)
    private let lastRejection = Mutex<String?>(nil)

    /// Binds and listens.
    /// - Throws: EADDRINUSE when another listener holds the endpoint; EINVAL for a bad ring size or name.
    public init(address: VMSocketAddress, options: VMSocketOptions = .init(), backlog: Int32 = 128) throws(VMSockError) {
        guard RingLayout.isValid(capacity: options.ringSize) else {
            throw VMSockError(code: EINVAL, "ring size \(options.ringSize) is invalid: use a power of two from 4096 to 67108864")
        }
        self.address = address
        self.options = options
        // The listener manages its descriptor by hand (see `users`), so it keeps a duplicate of its own.
        let bound = try ControlSocket.listen(address, backlog: backlog)
        self.socket = dup(bound.raw)
        guard socket >= 0 else { throw .system("dup(listening socket)") }
    }

    deinit { close() }

    private func enter() throws(VMSockError) {
        if users.add(2, ordering: .acquiringAndReleasing).newValue & 1 != 0 {
            leave()
            throw VMSockError(code: EBADF, "listener is closed")
        }
    }

    private func leave() {
        if users.subtract(2, ordering: .acquiringAndReleasing).newValue == 1 { closeDescriptorOnce() }
    }

    private func closeDescriptorOnce() {
        if !descriptorClosed.exchange(true, ordering: .acquiringAndReleasing) { Sys.close(socket) }
    }

    /// Accepts the next connection whose handshake succeeds. A connector that fails the handshake (not trusted,
    /// wrong version, malformed hello, dead before its hello) is turned away with a reason and counted in
    /// `rejectedCount`, and accept goes on to the next one.
    /// - Throws: EAGAIN in non-blocking mode when no connector is waiting; EBADF after `close`.
    public func accept() throws(VMSockError) -> VMSocket {
        while true {
            try enter()
            let fd = vms_accept_retrying(socket)
            let code = errno
            leave()
            if fd < 0 {
                if code == EAGAIN { throw VMSockError(code: EAGAIN, "no connection waiting (non-blocking listener)") }
                if code == ECONNABORTED { continue }
                if users.load(ordering: .relaxed) & 1 != 0 { throw VMSockError(code: EBADF, "listener is closed") }
                throw VMSockError.system("accept(\(address))", errno: code)
            }
            let control = Descriptor(fd)
            do throws(VMSockError) {
                let link = try Handshake.accept(
                    control, capacity: options.ringSize, policy: options.peerPolicy, timeoutMs: options.handshakeTimeoutMs)
                return VMSocket(stream: try SharedMemoryStream(link), address: address)
            } catch {
                rejected.add(1, ordering: .relaxed)
                lastRejection.withLock { $0 = error.description }
            }
        }
    }

    /// Connectors turned away since the listener started, and why the last one was.
    public var rejectedCount: Int { rejected.load(ordering: .relaxed) }
    public var lastRejectionReason: String? { lastRejection.withLock { $0 } }

    /// Non-blocking mode for `accept`. The listener's descriptor polls readable when a connector waits.
    /// Setting it after `close` does nothing.
    public var isNonBlocking: Bool {
        get {
            guard (try? enter()) != nil else { return false }
            defer { leave() }
            return (fcntl(socket, F_GETFL) & O_NONBLOCK) != 0
        }
        set {
            guard (try? enter()) != nil else { return }
            defer { leave() }
            try? Sys.setNonBlocking(socket, newValue)
        }
    }

    /// Polls readable when a connection is waiting to be accepted. Valid until `close`.
    public var pollDescriptor: Int32 { socket }

    /// Stops listening: the endpoint is free for another listener at once. A blocked `accept` fails with EBADF.
    public func close() {
        let before = users.bitwiseOr(1, ordering: .acquiringAndReleasing).oldValue
        guard before & 1 == 0 else { return }
        Glibc.shutdown(socket, Int32(SHUT_RDWR))  // wakes an accept blocked in another thread
        if before == 0 { closeDescriptorOnce() }
    }
}

private func vms_accept_retrying(_ fd: Int32) -> Int32 {
    Sys.retryingEINTR { vms_accept4_cloexec(fd) }
}
