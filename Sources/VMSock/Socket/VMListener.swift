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
public final class VMListener: @unchecked Sendable {  // immutable but for atomics and the lock-guarded `owned`
    /// The bound address and port (`getsockname`): with port 0 asked for, the port the kernel picked.
    public let localAddress: IPEndpoint
    public let options: VMSocketOptions
    /// Where shared-memory clients find this listener (registry names); empty when it offers TCP only.
    public let registrations: [String]
    /// Why this listener offers TCP only, when it does: the policy, or the registration that failed.
    public let sharedMemoryUnavailableReason: String?

    private let tcpSocket: Int32
    private let controlSockets: [Int32]
    private let readiness: Int32
    /// Shared-memory connectors accepted but not yet answered; nil when the listener offers TCP only.
    private let pending: PendingHandshakes?
    /// What `close` releases, once no accept uses it.
    private let owned: Mutex<[AnyObject]>
    /// Bit 0: closed. Above it: twice the number of accept calls inside right now. Whoever leaves it at exactly
    /// "closed, no users" releases the descriptors, so an accept never runs on a descriptor number reused
    /// elsewhere.
    private let users = Atomic<Int>(0)
    private let nonBlocking = Atomic<Bool>(false)
    private let turn = Atomic<Int>(0)
    private let acceptedRingSize: Atomic<Int>
    private let rejected = Atomic<Int>(0)
    private let lastRejection = Mutex<String?>(nil)

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
        self.options = options
        acceptedRingSize = Atomic(options.ringSize)
        let (tcp, bound) = try TCPCalls.listen(endpoint, backlog: backlog)
        localAddress = bound
        var registered: [Registration] = []
        var problem: String? = nil
        if options.effectiveTransport == .tcp {
            problem = "the transport policy is tcp"
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
        registrations = registered.map(\.address.description)
        sharedMemoryUnavailableReason = problem
        tcpSocket = tcp.raw
        controlSockets = registered.map(\.socket.raw)
        let epoll = Descriptor(try Sys.check("epoll_create1") { epoll_create1(Int32(EPOLL_CLOEXEC)) })
        for fd in [tcp.raw] + controlSockets {
            try PendingHandshakes.control(epoll.raw, EPOLL_CTL_ADD, fd, token: UInt64(fd))
        }
        readiness = epoll.raw
        let pending = registered.isEmpty
            ? nil : try PendingHandshakes(epoll: epoll.raw, timeoutMs: options.handshakeTimeoutMs)
        self.pending = pending
        owned = Mutex([tcp, epoll] + registered)
    }

    deinit { close() }

    /// Bytes of the ring this listener makes for each shared-memory connection it accepts (the ring it writes):
    /// `options.ringSize` until `setRingSize` changes it.
    public var ringSize: Int { acceptedRingSize.load(ordering: .relaxed) }

    /// Sets the ring size for connections accepted from now on (like setting SO_SNDBUF on a listening socket):
    /// a server that lets its client choose, as iperf3's -w does, sets it before accepting the test's connections.
    /// - Throws: EINVAL for a size that is not a power of two from 4096 to 67108864.
    public func setRingSize(_ bytes: Int) throws(VMSockError) {
        try SharedRegion.checkCapacity(bytes)
        acceptedRingSize.store(bytes, ordering: .relaxed)
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
    ///   `pollDescriptor` fires when one completes its hello); EBADF after `close`.
    public func accept() throws(VMSockError) -> VMSocket {
        try enter()
        defer { leave() }
        var spun = false
        while true {
            // Take turns, so that a stream of clients of one transport cannot starve the other.
            let tcpFirst = turn.add(1, ordering: .relaxed).newValue & 1 == 0
            if tcpFirst, let socket = try acceptTCP() { return socket }
            if let socket = try acceptSharedMemory() { return socket }
            if !tcpFirst, let socket = try acceptTCP() { return socket }
            if nonBlocking.load(ordering: .relaxed) {
                throw VMSockError(code: EAGAIN, "no connection waiting (non-blocking listener)")
            }
            // About to sleep: make the next shared-memory connection's half now, off its critical path.
            if pending != nil { LocalHalf.prepareSpare(capacity: ringSize) }
            // Look without sleeping first, for the spin budget: once per call (a server's next client often comes
            // within tens of microseconds, less than the wake-up that sleeping costs here, see `SpinPolicy`), and
            // again while a connector just taken in has yet to send its hello (it knocks first, then makes its
            // half).
            if !spun || pending?.hasArrival(within: SpinPolicy.processNanoseconds) == true {
                spun = true
                ControlSocket.spinUntilReadable(readiness, nanoseconds: SpinPolicy.processNanoseconds)
                continue
            }
            var pfd = [pollfd(fd: readiness, events: Int16(POLLIN), revents: 0)]
            _ = try Sys.poll(&pfd, timeoutMs: -1)
            if users.load(ordering: .relaxed) & 1 != 0 { throw VMSockError(code: EBADF, "listener is closed") }
        }
    }

    private func acceptTCP() throws(VMSockError) -> VMSocket? {
        guard let connection = try checkClosed({ () throws(VMSockError) in try TCPCalls.accept(tcpSocket) }) else { return nil }
        let local = IPEndpoint.of(connection.raw, peer: false) ?? localAddress
        let peer = IPEndpoint.of(connection.raw, peer: true) ?? .wildcard(localAddress.family, port: 0)
        TransportStatistics.count(.tcp, fallback: nil)
        return VMSocket(engine: .tcp(TCPStream(connection)), local: local, peer: peer)
    }

    /// Drops the connectors whose time ran out, takes in new ones, then answers one whose hello arrived.
    private func acceptSharedMemory() throws(VMSockError) -> VMSocket? {
        guard let pending else { return nil }
        for late in pending.takeExpired() where late.link == nil {  // parked links just go
            reject("a connector (pid \(late.peer.pid)) sent no hello within \(options.handshakeTimeoutMs) ms")
        }
        for control in controlSockets {
            // A connector whose hello is already there is answered at once, without a trip through `pending`.
            if let arrived = try takeInConnectors(control, pending), let socket = answer(arrived) { return socket }
        }
        while let ready = pending.takeReady() {
            if let parked = ready.link {
                if let socket = reopen(parked) { return socket }
            } else if let socket = answer(ready) {
                return socket
            }
        }
        return nil
    }

    /// Accepts the connectors waiting on one registration (a bounded number per call) into `pending`, checking
    /// who they are first, and stops at one whose hello has arrived already (the usual case: connectors send it
    /// right after connecting), returning it to be answered now. Never waits.
    private func takeInConnectors(_ control: Int32, _ pending: PendingHandshakes) throws(VMSockError) -> PendingHandshakes.Waiting? {
        for _ in 0..<PendingHandshakes.limit {
            let fd = Sys.retryingEINTR { vms_accept4_cloexec(control) }
            if fd < 0 {
                let code = errno
                if code == EAGAIN || code == ECONNABORTED { return nil }
                if users.load(ordering: .relaxed) & 1 != 0 { throw VMSockError(code: EBADF, "listener is closed") }
                throw VMSockError.system("accept(shared-memory registration)", errno: code)
            }
            let connector = Descriptor(fd)
            do throws(VMSockError) {
                let peer = try Handshake.admit(connector, policy: options.peerPolicy)
                var pfd = pollfd(fd: connector.raw, events: Int16(POLLIN), revents: 0)
                if Glibc.poll(&pfd, 1, 0) == 1 { return .init(control: connector, peer: peer) }
                if try !pending.add(.init(control: connector, peer: peer)) {
                    Handshake.reject(connector, .outOfResources)
                    reject("turned away a connector (pid \(peer.pid)): \(PendingHandshakes.limit) handshakes already pending")
                }
            } catch {
                reject(error.description)
            }
        }
        return nil
    }

    /// Reads the hello that arrived and answers it: the new connection, or nil (counted) when it failed.
    private func answer(_ ready: PendingHandshakes.Waiting) -> VMSocket? {
        do throws(VMSockError) {
            var link = try Handshake.answer(
                ready.control, peer: ready.peer, capacity: ringSize, reusable: options.reusesLinks)
            if link.reusable, let pending { link.parking = { [pending] in pending.park($0) } }
            return try sharedMemorySocket(link, reused: false)
        } catch {
            reject(error.description)
            return nil
        }
    }

    /// Answers the reopen of a parked link: the new connection, or nil when the link is dropped instead (counted
    /// as a rejection only when the connector broke the protocol).
    private func reopen(_ parked: EstablishedLink) -> VMSocket? {
        do throws(VMSockError) {
            return try sharedMemorySocket(Handshake.answerReopen(parked, capacity: ringSize), reused: true)
        } catch {
            if error.code == EPROTO { reject(error.description) }
            return nil
        }
    }

    private func sharedMemorySocket(_ link: EstablishedLink, reused: Bool) throws(VMSockError) -> VMSocket {
        let stream = try SharedMemoryStream(link)
        let local = link.dialed ?? localAddress
        TransportStatistics.count(.sharedMemory, fallback: nil, reused: reused)
        return VMSocket(engine: .sharedMemory(stream), local: local, peer: local.with(port: 0))
    }

    private func reject(_ reason: String) {
        rejected.add(1, ordering: .relaxed)
        lastRejection.withLock { $0 = reason }
    }

    private func checkClosed<R>(_ body: () throws(VMSockError) -> R) throws(VMSockError) -> R {
        do throws(VMSockError) { return try body() } catch {
            if users.load(ordering: .relaxed) & 1 != 0 { throw VMSockError(code: EBADF, "listener is closed") }
            throw error
        }
    }

    /// Links of closed shared-memory connections this listener keeps for their connectors to reopen (see
    /// `VMSocketOptions.reusesLinks`).
    public var parkedLinkCount: Int { pending?.parkedCount ?? 0 }

    /// Connectors turned away since the listener started, and why the last one was.
    public var rejectedCount: Int { rejected.load(ordering: .relaxed) }
    public var lastRejectionReason: String? { lastRejection.withLock { $0 } }

    /// Non-blocking mode for `accept`.
    public var isNonBlocking: Bool {
        get { nonBlocking.load(ordering: .relaxed) }
        set { nonBlocking.store(newValue, ordering: .relaxed) }
    }

    /// Polls readable (POLLIN) when a connection may be waiting, of either transport, when a shared-memory
    /// connector's hello arrives, and when one ran out of time (call `accept`, which drops it). Valid until `close`.
    public var pollDescriptor: Int32 { readiness }

    // MARK: Closing

    /// Stops listening: the address, port and registration are free for another listener at once. A blocked
    /// `accept` fails with EBADF. Idempotent.
    public func close() {
        let before = users.bitwiseOr(1, ordering: .acquiringAndReleasing).oldValue
        guard before & 1 == 0 else { return }
        // Wakes an accept blocked in another thread: its poll on the epoll descriptor sees the hang-up.
        for fd in [tcpSocket] + controlSockets { _ = Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
        if before == 0 { release() }
    }

    private func enter() throws(VMSockError) {
        if users.add(2, ordering: .acquiringAndReleasing).newValue & 1 != 0 {
            leave()
            throw VMSockError(code: EBADF, "listener is closed")
        }
    }

    private func leave() {
        if users.subtract(2, ordering: .acquiringAndReleasing).newValue == 1 { release() }
    }

    /// Closes every descriptor and removes the registrations (the objects' deinits do it). Runs once: `owned` is
    /// empty afterwards.
    private func release() {
        pending?.dropAll()
        let objects = owned.withLock { objects in
            defer { objects = [] }
            return objects
        }
        _ = objects
    }
}
