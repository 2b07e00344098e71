import CVMSock
import Glibc
import Synchronization

/// The listener's side of set-up: a TCP socket and the shared-memory registrations for the same address and
/// port, watched through one epoll set, and the steps that turn what arrives on them into connections.
///
/// `acceptNow` never waits: it takes turns between the transports, takes in shared-memory connectors (checking
/// who they are), answers the ones whose hello arrived, answers reopens of parked links, and drops connectors
/// whose time ran out. `VMListener.accept` is its blocking driver and `AsyncListener.accept` its async one; both
/// wait on `readiness` between calls.
///
/// Threads: any number of calls at once. Each descriptor is a `GuardedDescriptor`, so `close` from another thread
/// makes calls in progress fail with EBADF and never lets one act on a descriptor number reused elsewhere.
final class Acceptor: @unchecked Sendable {  // immutable but for atomics and lock-guarded state
    let localAddress: IPEndpoint
    let options: VMSocketOptions
    let registrations: [Registration]
    /// The epoll set of the TCP socket, the registrations, pending connectors and parked links, and their timer.
    let readiness: GuardedDescriptor
    private let tcp: GuardedDescriptor
    /// Shared-memory connectors accepted but not yet answered; nil when the listener offers TCP only.
    private let pending: PendingHandshakes?
    /// The listener's entries in a vmsockd region, when it has joined one.
    private let region: IvshmemListening?
    private let turn = Atomic<Int>(0)
    let ringSize: Atomic<Int>
    private let rejected = Atomic<Int>(0)
    private let lastRejection = Mutex<String?>(nil)
    /// The process that listens. A forked child holds copies of the descriptors, and shares the epoll set and the
    /// sockets themselves with it: it may not accept when the listener offers shared memory (its table of pending
    /// connectors is a stale copy; a TCP-only listener it may), and its close lets its copies go without shutting
    /// down, unlinking or withdrawing anything of the parent's.
    private let creator = Sys.processID()

    init(
        tcp: Descriptor, bound: IPEndpoint, registrations: [Registration], region: IvshmemListening?, options: VMSocketOptions
    ) throws(VMSockError) {
        localAddress = bound
        self.options = options
        self.registrations = registrations
        self.region = region
        ringSize = Atomic(options.ringSize)
        let epoll = try Sys.epollCreate()
        for fd in [tcp.raw] + registrations.map(\.socket.raw) + (region.map { [$0.bell.fd] } ?? []) {
            try Sys.epollControl(epoll.raw, EPOLL_CTL_ADD, fd, events: EPOLLIN.rawValue | EPOLLRDHUP.rawValue, data: UInt64(fd))
        }
        let pending = registrations.isEmpty
            ? nil : try PendingHandshakes(epoll: epoll.raw, timeoutMs: options.handshakeTimeoutMs)
        let tcp = GuardedDescriptor(tcp.release())
        self.pending = pending
        self.tcp = tcp
        // Everything goes once the last call waiting on the set has left: a wait on the set wakes for the hang-up
        // of the sockets that `close` shuts down, and closing one of them first would take its event out of the
        // set before a sleeper saw it.
        let creator = creator
        readiness = GuardedDescriptor(epoll.release()) {
            // A forked child's copy withdraws nothing, and takes no lock a parent's thread may have held at the
            // fork (its copies of the waiting connectors close with the listener's last reference).
            if Sys.processID() == creator {
                region?.close()
                pending?.dropAll()
                // The spare half made for the next connection has none to serve here any more (a connect makes
                // its own). Here, once the last accept has left, so that none makes another after it.
                if pending != nil { LocalHalf.dropSpare() }
            }
            for registration in registrations { registration.close() }
            tcp.close()
        }
    }

    deinit { close() }

    var parkedLinkCount: Int { pending?.parkedCount ?? 0 }
    var rejectedCount: Int { rejected.load(ordering: .relaxed) }
    var lastRejectionReason: String? { lastRejection.withLock { $0 } }
    var offersSharedMemory: Bool { pending != nil }

    /// Whether a shared-memory connector was taken in so recently that its hello is most likely on its way (it
    /// knocks first, then makes its half): worth looking again without sleeping.
    var expectsHelloSoon: Bool { pending?.hasArrival(within: SpinPolicy.processNanoseconds) == true }

    /// The next connection that is ready, of either transport, or nil when none is.
    /// - Throws: EBADF once closed; what accept(2) throws on the TCP socket.
    func acceptNow() throws(VMSockError) -> Connection? {
        guard pending == nil && region == nil || Sys.processID() == creator else {
            throw VMSockError(
                code: EOPNOTSUPP,
                "this listener was made by process \(creator), and this process is a fork of it: accept there, or "
                    + "make a listener here (vmsock-run shares listeners across fork)")
        }
        do throws(VMSockError) {
            return try readiness.use("listener") { epoll throws(VMSockError) -> Connection? in
                let ready = ReadyNow(epoll, capacity: readyCapacity)
                // Take turns, so that a stream of clients of one transport cannot starve the other.
                let tcpFirst = turn.add(1, ordering: .relaxed).newValue & 1 == 0
                if tcpFirst, let connection = try acceptTCP(ready) { return connection }
                if let connection = try acceptSharedMemory(ready) { return connection }
                if let connection = try acceptRegion() { return connection }
                if !tcpFirst, let connection = try acceptTCP(ready) { return connection }
                return nil
            }
        } catch {
            // A close from another thread shuts the sockets down under a call in progress, which then fails
            // with whatever accept says of a shut-down socket: the caller should learn that it was closed.
            if readiness.isClosed { throw VMSockError(code: EBADF, "listener is closed") }
            // Out of descriptors: the spare half made before sleeping may hold the ones accept needs. Once freed,
            // look again (no spare then, so this retries at most once).
            if error.code == EMFILE || error.code == ENFILE, LocalHalf.dropSpare() { return try acceptNow() }
            throw error
        }
    }

    /// What the listener's set reports ready, from one epoll_wait that does not wait: an accept(2) is tried only
    /// on a socket it names. An accept that finds nothing costs 1.8 µs on a TCP socket here, against 0.12 µs for
    /// the epoll_wait, and a listener used to try each socket twice per connection (before sleeping and after
    /// waking). Every socket is in the set level-triggered, so what is left waiting is reported again.
    struct ReadyNow {
        private var events: [epoll_event]
        private let count: Int

        init(_ epoll: Int32, capacity: Int) {
            events = [epoll_event](repeating: epoll_event(), count: capacity)
            count = Sys.epollReady(epoll, &events)
        }

        /// Whether the listening socket `fd` (its data word is its descriptor) is ready.
        func names(_ fd: Int32) -> Bool { events.prefix(count).contains { $0.data.u64 == UInt64(UInt32(bitPattern: fd)) } }

        /// The data words of what is ready, for `PendingHandshakes`.
        var tokens: some Sequence<UInt64> { events.prefix(count).lazy.map(\.data.u64) }
    }

    /// Room for everything the set can hold: the sockets, the region's bell, the timer, every pending connector
    /// and every parked link.
    private var readyCapacity: Int {
        registrations.count + 3 + (pending == nil ? 0 : PendingHandshakes.limit + PendingHandshakes.parkedLimit)
    }

    private func acceptTCP(_ ready: ReadyNow) throws(VMSockError) -> Connection? {
        let socket = try tcp.use("listener") { fd throws(VMSockError) in ready.names(fd) ? try TCPCalls.accept(fd) : nil }
        guard let socket else { return nil }
        let peer = IPEndpoint.of(socket.raw, peer: true) ?? .wildcard(localAddress.family, port: 0)
        return .tcp(socket, peer: peer)
    }

    /// Drops the connectors whose time ran out, takes in new ones, then answers one whose hello arrived.
    private func acceptSharedMemory(_ ready: ReadyNow) throws(VMSockError) -> Connection? {
        guard let pending else { return nil }
        for late in pending.takeExpired() {
            guard let parked = late.link else {
                reject("a connector (pid \(late.peer.pid)) sent no hello within \(options.handshakeTimeoutMs) ms")
                continue
            }
            // A parked link goes (a forked child's copy just closes), unless its connector has begun to reopen it:
            // then its reopen is on the way, and the link is kept for it once more (or as long as the reopen is
            // there to take). A connector that began and still has not sent it by then has its connection ended.
            guard parked.isOwnedByThisProcess, parked.retire() else { continue }
            var kept = parked
            let arrived = (try? Sys.isReady(parked.control.raw, Int16(POLLIN))) ?? false
            if !parked.keptForReopen || arrived {
                kept.keptForReopen = true
                if pending.park(kept) { continue }
            }
            kept.refuseReopen()
        }
        for registration in registrations {
            // A connector whose hello is already there is answered at once, without a trip through `pending`.
            if let arrived = try takeInConnectors(registration, ready, pending), let connection = answer(arrived, pending) {
                return connection
            }
        }
        for token in ready.tokens {
            guard let waiting = pending.take(token) else { continue }
            if let parked = waiting.link {
                if let connection = reopen(parked, pending) { return connection }
            } else if let connection = answer(waiting, pending) {
                return connection
            }
        }
        return nil
    }

    /// Accepts the connectors waiting on one registration (a bounded number per call) into `pending`, checking
    /// who they are first, and stops at one whose hello has arrived already (the usual case: connectors send it
    /// right after connecting), returning it to be answered now. Never waits.
    private func takeInConnectors(
        _ registration: Registration, _ ready: ReadyNow, _ pending: PendingHandshakes
    ) throws(VMSockError) -> PendingHandshakes.Waiting? {
        for _ in 0..<PendingHandshakes.limit {
            let accepted = try registration.socket.use("listener") { fd throws(VMSockError) in
                ready.names(fd) ? try Sys.acceptUnix(fd, what: "accept(shared-memory registration)") : nil
            }
            guard let connector = accepted else { return nil }
            do throws(VMSockError) {
                let peer = try Handshake.admit(connector, policy: options.peerPolicy)
                // One recvmsg that does not wait, where a poll and then a recvmsg took two calls.
                if let hello = try ControlSocket.receiveIfReady(connector.raw) {
                    return .init(control: connector, peer: peer, hello: hello)
                }
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

    /// Accepts the next request through the vmsockd region, if any. Its bell is rung by the region's dispatcher
    /// (at every ring, and every tick), so it is drained first and every request then looked at.
    private func acceptRegion() throws(VMSockError) -> Connection? {
        guard let region else { return nil }
        region.bell.drain()
        do throws(VMSockError) { try region.republishIfStale() } catch { reject("could not publish the listener in vmsockd's region again: \(error.message)") }
        guard let (link, peer) = region.node.accept(region, rejected: { reject($0) }) else { return nil }
        return try .sharedMemory(link, local: link.dialed ?? localAddress, peer: peer, reused: false, parking: nil)
    }

    /// Reads the hello that arrived and answers it: the new connection, or nil (counted) when it failed.
    private func answer(_ ready: PendingHandshakes.Waiting, _ pending: PendingHandshakes) -> Connection? {
        do throws(VMSockError) {
            let link = try Handshake.answer(
                ready.control, peer: ready.peer, capacity: ringSize.load(ordering: .relaxed),
                reusable: options.reusesLinks, received: ready.hello)
            return try connection(on: link, reused: false, pending)
        } catch {
            reject(error.description)
            return nil
        }
    }

    /// Answers the reopen of a parked link: the new connection, or nil when the link is dropped instead (counted
    /// as a rejection only when the connector broke the protocol). A connection its connector began on the
    /// dropped link is ended (`refuseReopen`).
    private func reopen(_ parked: EstablishedLink, _ pending: PendingHandshakes) -> Connection? {
        do throws(VMSockError) {
            let link = try Handshake.answerReopen(parked)
            return try connection(on: link, reused: true, pending)
        } catch {
            if error.code == EPROTO { reject(error.description) }
            if parked.peerBeganReopen { parked.refuseReopen() }
            return nil
        }
    }

    /// An accepted shared-memory connection reports the address and port the client dialed as ours, and the
    /// client's address and port, as its hello said, as the peer's. The address must be one of this host's (the
    /// client is a process here); otherwise, or when the hello had none, the dialed one stands in for it (loopback
    /// for a wildcard).
    private func connection(on link: EstablishedLink, reused: Bool, _ pending: PendingHandshakes) throws(VMSockError) -> Connection {
        let local = link.dialed ?? localAddress
        let peerHost = local.isWildcard ? IPEndpoint.loopback(local.family, port: 0) : local
        let said = link.source.flatMap { !$0.isWildcard && LocalAddresses.isLocal($0) ? $0 : nil }
        return try .sharedMemory(
            link, local: local, peer: said ?? peerHost.with(port: link.source?.port ?? 0), reused: reused,
            parking: { [pending, weak self] link in
                // A link of another ring size than the one we make now (`setRingSize`) serves no more.
                guard let self, link.localRegion.capacity == ringSize.load(ordering: .relaxed) else { return false }
                return pending.park(link)
            })
    }

    private func reject(_ reason: String) {
        rejected.add(1, ordering: .relaxed)
        lastRejection.withLock { $0 = reason }
    }

    /// Stops listening: wakes every call waiting on `readiness` (the sockets' hang-up makes the set readable),
    /// and once the last of them has left (at once when none is inside), frees the pending connectors and parked
    /// links and closes every descriptor, which removes the registrations; the process's spare half goes too
    /// (a process keeps one: another listener's or a connector's is made again by the next connection).
    /// Idempotent.
    func close() {
        guard !readiness.isClosed else { return }
        // Closed first: a call that the shutdowns below make fail then reports EBADF (see `acceptNow`). With no
        // call inside, this releases everything at once, and the shutdowns find closed sockets: nothing to wake.
        readiness.close()
        guard Sys.processID() == creator else { return }  // the sockets are the parent's too: never shut down here
        for socket in [tcp] + registrations.map(\.socket) { socket.shutdown() }
    }
}
