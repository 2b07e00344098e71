import CVMSock
import Glibc
import Synchronization
import VMSockRing

/// Accepts connections on a TCP address and port, over both transports, through one `accept()`. The
/// corresponding C calls are `socket`, `bind`, `listen` and `accept`.
///
/// It binds a real TCP socket (SO_REUSEADDR; port 0 picks a free port), and only once that succeeded registers a
/// shared-memory endpoint for the same address and port in the host-local registry (see `Registry`), unless its
/// transport policy is `tcp`. TCP clients anywhere reach it over TCP; vmsock clients on this host that trust it
/// reach it over shared memory. Closing it, or its process dying, removes the registration.
public final class VMListener: @unchecked Sendable {  // immutable but for atomics; the acceptor has its own notes
    /// The bound address and port (`getsockname`): with port 0 asked for, the port the kernel picked.
    public var localAddress: IPEndpoint { acceptor.localAddress }
    public var options: VMSocketOptions { acceptor.options }
    /// Where shared-memory clients find this listener (registry names); empty when it offers TCP only.
    public let registrations: [String]
    /// Why this listener offers TCP only, when it does: the policy, or the registration that failed.
    public let sharedMemoryUnavailableReason: String?
    /// Why a listener in a process that names a vmsockd region (`VMSOCK_IVSHMEM`) is not listening in it.
    public let ivshmemUnavailableReason: String?

    private let acceptor: Acceptor
    private let nonBlocking = Atomic<Bool>(false)

    /// Resolves `host` (nil: every IPv4 address, 0.0.0.0; "::" for IPv6 and IPv4), binds and listens.
    /// - Throws: EADDRINUSE when another socket holds the address and port; EADDRNOTAVAIL for an address that is
    ///   not this host's; EINVAL for a bad ring size or a name that does not resolve; under the `shm` policy, the
    ///   error that kept it from registering.
    public convenience init(
        host: String? = nil, port: UInt16, options: VMSocketOptions = .init(), backlog: Int32 = 128
    ) throws(VMSockError) {
        let endpoint = try Resolver.resolve(host ?? "0.0.0.0", port: port, family: options.addressFamily)[0]
        try self.init(endpoint: endpoint, options: options, backlog: backlog)
    }

    public init(endpoint: IPEndpoint, options: VMSocketOptions = .init(), backlog: Int32 = 128) throws(VMSockError) {
        try SharedRegion.checkCapacity(options.ringSize)
        let (tcp, bound) = try TCPCalls.listen(endpoint, backlog: backlog)
        var registered: [Registration] = []
        var problem: String? = nil
        var regionProblem: String? = nil
        if options.effectiveTransport == .tcp {
            problem = "the transport policy is tcp"
        } else if options.effectiveTransport == .ivshmem {
            problem = "the transport policy is ivshmem (the region only)"
        } else {
            for (index, name) in Registry.names(forListenerOn: bound, directory: options.effectiveDirectory).enumerated() {
                do throws(VMSockError) {
                    registered.append(try Registration(name, backlog: backlog))
                } catch {
                    // The first name is the one local clients look up; the others only serve other namespaces.
                    if index == 0 {
                        if options.effectiveTransport == .shm { throw error }
                        problem = error.message
                    }
                }
            }
        }
        // A peer of a vmsockd region also listens there, for the region's other peers (guests among them).
        var region: IvshmemListening? = nil
        if options.effectiveTransport != .tcp && options.effectiveTransport != .shm {
            do throws(VMSockError) {
                if let node = try IvshmemNode.node(for: options) {
                    region = try IvshmemListening(node: node, bound: bound, options: options)
                } else if options.effectiveTransport == .ivshmem {
                    throw VMSockError(code: EINVAL, "the transport policy is ivshmem, but no vmsockd region is named (set VMSOCK_IVSHMEM)")
                }
            } catch {
                if options.effectiveTransport == .ivshmem { throw error }
                regionProblem = error.message
            }
        }
        registrations = registered.map(\.address.description) + (region.map { ["ivshmem \($0.node.path)"] } ?? [])
        sharedMemoryUnavailableReason = problem
        ivshmemUnavailableReason = regionProblem
        acceptor = try Acceptor(tcp: tcp, bound: bound, registrations: registered, region: region, options: options)
    }

    deinit { close() }

    /// Bytes of the ring this listener makes for each shared-memory connection it accepts (the ring it writes):
    /// `options.ringSize` until `setRingSize` changes it.
    public var ringSize: Int { acceptor.ringSize.load(ordering: .relaxed) }

    /// Sets the ring size for connections accepted from now on (like setting SO_SNDBUF on a listening socket):
    /// a server that lets its client choose, as iperf3's -w does, sets it before accepting the test's connections.
    /// - Throws: EINVAL for a size that is not a power of two from 4096 to 67108864.
    public func setRingSize(_ bytes: Int) throws(VMSockError) {
        try SharedRegion.checkCapacity(bytes)
        acceptor.ringSize.store(bytes, ordering: .relaxed)
    }

    // MARK: Accepting

    /// Accepts the next connection: a TCP client, or a shared-memory connector whose handshake succeeds.
    ///
    /// Accept never waits for one connector: a shared-memory connector is taken in at once and waits (up to the
    /// handshake timeout) for its hello alongside the others, and is answered by whichever accept sees its hello
    /// arrive. A connector that fails the handshake (not trusted, wrong version, malformed hello, no hello in
    /// time, dead before its hello, or more than `PendingHandshakes.limit` (64) already waiting) is turned away
    /// with a reason and counted in `rejectedCount`, and accept goes on to the next one.
    /// - Throws: EAGAIN in non-blocking mode when no connection is ready (handshakes may be under way: the
    ///   `pollDescriptor` fires when one completes its hello); EBADF after `close`; EOPNOTSUPP in a forked child of
    ///   the process that made a listener offering shared memory (accept in the process that listens; a TCP-only
    ///   listener may be shared across fork, and there, as a kernel socket's, its close does not wake a blocked
    ///   accept of that process).
    public func accept() throws(VMSockError) -> VMSocket {
        var spun = false
        while true {
            if let connection = try acceptor.acceptNow() { return VMSocket(connection) }
            if nonBlocking.load(ordering: .relaxed) {
                throw VMSockError(code: EAGAIN, "no connection waiting (non-blocking listener)")
            }
            // About to sleep: make the next shared-memory connection's half now, off its critical path; but not
            // while a connector just taken in is sending its hello: the answer comes first, and makes the spare
            // after its welcome has gone (`Handshake.answer`).
            let helloSoon = acceptor.expectsHelloSoon
            // Look without sleeping first, for the spin budget: once per call (a server's next client often comes
            // within tens of microseconds, less than the wake-up that sleeping costs here, see `SpinPolicy`), and
            // again while a connector just taken in has yet to send its hello (it knocks first, then makes its
            // half).
            try acceptor.readiness.use("listener") { fd throws(VMSockError) in
                // Inside, so that a close (which frees the spare once the last caller has left) comes after it.
                if acceptor.offersSharedMemory && !helloSoon { LocalHalf.prepareSpare(capacity: ringSize) }
                if !spun || helloSoon {
                    spun = true
                    ControlSocket.spinUntilReadable(fd, nanoseconds: SpinPolicy.processNanoseconds)
                } else {
                    _ = try Sys.wait(fd, Int16(POLLIN), until: .never)
                }
            }
        }
    }

    /// Links of closed shared-memory connections this listener keeps for their connectors to reopen (see
    /// `VMSocketOptions.reusesLinks`).
    public var parkedLinkCount: Int { acceptor.parkedLinkCount }

    /// Connectors turned away since the listener started, and why the last one was.
    public var rejectedCount: Int { acceptor.rejectedCount }
    public var lastRejectionReason: String? { acceptor.lastRejectionReason }

    /// Non-blocking mode for `accept`.
    public var isNonBlocking: Bool {
        get { nonBlocking.load(ordering: .relaxed) }
        set { nonBlocking.store(newValue, ordering: .relaxed) }
    }

    /// Polls readable (POLLIN) when a connection may be waiting, of either transport, when a shared-memory
    /// connector's hello arrives, and when one ran out of time (call `accept`, which drops it). Valid until `close`.
    public var pollDescriptor: Int32 { acceptor.readiness.raw }

    // MARK: Closing

    /// Stops listening: the address, port and registration are free for another listener at once. A blocked
    /// `accept` fails with EBADF. Idempotent.
    public func close() { acceptor.close() }
}
