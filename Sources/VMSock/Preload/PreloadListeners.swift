import CVMSock
import Glibc
import Synchronization

/// vmsock-run's listening side: a registration per listening TCP socket, and one background thread per process
/// that answers hellos, since the application itself only ever calls accept.
///
/// A welcomed link waits, keyed by the connector's address and port (the hello carries both), until the
/// application accepts the TCP connection from there, or its control socket hangs up (the connector closed or died; a connector
/// whose TCP connect failed releases its link at once). It never expires while the connector lives: the
/// connector uses shared memory from the welcome on, and an accept that found no link would disagree with it.
/// At most `welcomedLimit` wait per listener; beyond that, connectors are rejected and use TCP.
package final class PreloadListeners: @unchecked Sendable {  // all state behind `state`; the thread owns epoll
    package static let shared = PreloadListeners()

    static let pendingLimit = 64
    static let welcomedLimit = 1024
    static let helloTimeoutNanos: Int64 = 5_000_000_000
    static let hungUpKeepNanos: Int64 = 5_000_000_000
    static let mutedNanos: Int64 = 100_000_000

    private enum Entry {
        /// A registration of the listener on descriptor `listener`.
        case registration(Registration, listener: Int32)
        /// A connector whose hello has not arrived.
        case pending(Descriptor, PeerCredentials, listener: Int32, deadline: Int64)
        /// A welcomed link, waiting for the application's accept.
        case welcomed(EstablishedLink, listener: Int32)
        /// Where forked siblings claim welcomed links (`PreloadClaims`).
        case claims(Registration)
    }

    private struct State {
        var entries: [UInt64: Entry] = [:]
        /// Listener descriptor -> its registrations' tokens.
        var listeners: [Int32: [UInt64]] = [:]
        /// (listener, connector address and port, as `matchKey` has them) -> the welcomed link's token.
        var welcomed: [Int32: [IPEndpoint: UInt64]] = [:]
        var nextToken: UInt64 = 1
        var epoll: Int32 = -1
        var threadStarted = false
        /// Welcomed links whose connector hung up before the accept -> when they are dropped.
        var hungUp: [UInt64: Int64] = [:]
        /// Registrations left out of the wait (`mute`) -> their socket, and when they are watched again.
        var muted: [UInt64: (socket: Int32, until: Int64)] = [:]
    }

    private let state = Mutex(State())
    /// For refusing connectors while the process has no descriptor left (`nextConnector`); made with the thread.
    private let reserve = Mutex<ReserveDescriptor?>(nil)
    /// Hellos being answered: between the welcome's send and the link's entry, an accept must wait.
    private let answering = Atomic<Int>(0)

    private var hooks: PreloadHooks { PreloadConnector.hooks.withLock { $0 } }

    // MARK: The application's calls

    /// Registers the listening socket `fd` (bound to `bound`). Returns nil, or why it stays TCP-only.
    package func listen(fd: Int32, bound: IPEndpoint) -> String? {
        if TransportPolicy.processDefault == .tcp { return "VMSOCK_TRANSPORT=tcp" }
        let registration: Registration
        do throws(VMSockError) {
            try startThreadIfNeeded()
            registration = try Registration(PreloadRegistry.address(of: bound), backlog: 128)
        } catch {
            return "\(error)"
        }
        let epoll = state.withLock { $0.epoll }
        let token = state.withLock { state in
            let token = state.nextToken
            state.nextToken += 1
            state.entries[token] = .registration(registration, listener: fd)
            state.listeners[fd, default: []].append(token)
            return token
        }
        hooks.noteInternal(registration.socket.raw)
        do throws(VMSockError) {
            try Sys.epollControl(epoll, EPOLL_CTL_ADD, registration.socket.raw, events: UInt32(EPOLLIN.rawValue), data: token)
        } catch {
            unlisten(fd: fd)
            return "\(error)"
        }
        return nil
    }

    /// In a forked child whose listeners' owner has exited (a daemon's first process), before it takes them over:
    /// the state copied at fork is its parent's. Its descriptors were closed at fork (their numbers may name the
    /// application's files by now) and its thread did not come along, so the copy is set aside, never released
    /// (releasing would close those numbers), and the state starts empty.
    package func forgetCopiedState() {
        let copied = state.withLock { state in
            let copied = state
            state = State()
            return copied
        }
        Self.setAside.withLock { $0.append(copied) }
        answering.store(0, ordering: .sequentiallyConsistent)
    }

    private static let setAside = Mutex<[State]>([])

    /// The listening socket `fd` closed: its registrations go, and the links welcomed for it (their connectors'
    /// TCP connections are reset with the listening socket).
    package func unlisten(fd: Int32) {
        let removed: [Entry] = state.withLock { state in
            var removed: [Entry] = []
            for token in state.listeners.removeValue(forKey: fd) ?? [] {
                if let entry = state.entries.removeValue(forKey: token) { removed.append(entry) }
            }
            for (key, token) in state.welcomed.removeValue(forKey: fd) ?? [:] {
                hooks.welcomePort(Int32(key.port), -1)
                if let entry = state.entries.removeValue(forKey: token) { removed.append(entry) }
            }
            for (token, entry) in state.entries {
                if case .pending(_, _, let listener, _) = entry, listener == fd {
                    state.entries[token] = nil
                    removed.append(entry)
                }
            }
            return removed
        }
        for entry in removed { forget(entry) }
    }

    /// The link welcomed for the connection `fd` just accepted on `listener`, or why there is none.
    package func accept(listener: Int32, fd: Int32) -> Result<PreloadLink, PreloadRefusal> {
        guard let peer = IPEndpoint.of(fd, peer: true) else { return .failure(PreloadRefusal("no peer address")) }
        // Once welcomed, the connector uses shared memory: a miss here while its entry is on the way would leave
        // the two ends disagreeing (its requests in a ring nobody reads). The thread that answers never blocks, so
        // the bound is only against a thread descheduled for long on a loaded machine (100 ms was not enough).
        let deadline = monotonicNanos() + Self.helloTimeoutNanos
        while true {
            // Read before the look-up: a hello answered by then has its entry made (it is made before the count
            // goes down), so the look-up sees it; one still being answered keeps us looking.
            let beingAnswered = answering.load(ordering: .sequentiallyConsistent)
            if var link = takeWelcomed(listener: listener, from: peer) {
                // Accepted here: nobody maps our region writable from now on. (It cannot fail on a memfd of ours
                // without F_SEAL_SEAL; were it to, the connection would still work, with the protection missing.)
                _ = try? SharedRegion.sealWrites(link.memory[0].raw)
                link.memory = []
                return .success(PreloadLink(link))
            }
            // A hello being answered now may be this connection's: its welcome went before its entry was made.
            if beingAnswered == 0 || monotonicNanos() > deadline {
                return .failure(PreloadRefusal("no hello from \(peer): the peer is not under vmsock-run"))
            }
            Sys.yield()
        }
    }

    /// Takes the link welcomed for the connector at `peer` off `listener`'s list, and out of the thread's sight.
    private func takeWelcomed(listener: Int32, from peer: IPEndpoint) -> EstablishedLink? {
        let link: EstablishedLink? = state.withLock { state in
            guard let token = state.welcomed[listener]?.removeValue(forKey: Self.matchKey(peer)) else { return nil }
            hooks.welcomePort(Int32(peer.port), -1)
            guard case .welcomed(let link, _) = state.entries.removeValue(forKey: token) else { return nil }
            state.hungUp[token] = nil
            return link
        }
        guard let link else { return nil }
        _ = try? Sys.epollControl(state.withLock { $0.epoll }, EPOLL_CTL_DEL, link.control.raw, events: 0, data: 0)
        hooks.forgetInternal(link.control.raw)
        return link
    }

    // MARK: The thread

    private func startThreadIfNeeded() throws(VMSockError) {
        let start = try state.withLock { state throws(VMSockError) -> Bool in
            guard !state.threadStarted else { return false }
            let epoll = try Sys.epollCreate()
            state.epoll = epoll.release()
            state.threadStarted = true
            return true
        }
        guard start else { return }
        hooks.noteInternal(state.withLock { $0.epoll })
        let hooks = self.hooks
        let reserve = ReserveDescriptor(note: { hooks.noteInternal($0) }, forget: { hooks.forgetInternal($0) })
        self.reserve.withLock { $0 = reserve }
        openClaims()
        // Every signal blocked in the thread (`Sys.startThread`): nginx's master sleeps in sigsuspend for SIGCHLD,
        // and a SIGCHLD taken by this thread left it asleep for good after its workers ended.
        // `hooks` was read above, inside the set-up: the thread takes no lock outside it.
        // The thread is inside the set-up from its first instruction (it leaves only to wait, `run`): its start
        // runs Swift code, which may be making type metadata under the runtime's lock, and a fork meanwhile left
        // that lock held in the child, whose next such step then waited for good (a daemon taking its first
        // process's listeners over; interop/preload-fork's daemon cases hung about once in 200).
        hooks.enterSetUp()
        do throws(VMSockError) {
            try Sys.startThread("vmsock-run listener") { self.run(hooks) }
        } catch {
            hooks.leaveSetUp()
            state.withLock { $0.threadStarted = false }
            throw error
        }
    }

    /// Binds this process's claim socket. Without it, a forked sibling could not take the links welcomed here,
    /// so the listeners then stop offering shared memory once the process forks (`hooks.claimsReady` not called).
    private func openClaims() {
        guard let registration = try? Registration(PreloadClaims.address(pid: Sys.processID()), backlog: 128) else { return }
        let (token, epoll) = state.withLock { state in
            let token = state.nextToken
            state.nextToken += 1
            state.entries[token] = .claims(registration)
            return (token, state.epoll)
        }
        hooks.noteInternal(registration.socket.raw)
        guard (try? Sys.epollControl(epoll, EPOLL_CTL_ADD, registration.socket.raw, events: UInt32(EPOLLIN.rawValue), data: token)) != nil
        else { return }
        hooks.claimsReady()
    }

    /// The thread's loop. It works inside the set-up gate (entered for it by its starter) and leaves it only to
    /// wait, so that a fork (which waits until nobody is inside) finds this thread asleep, holding no lock (see
    /// `PreloadHooks.enterSetUp`). The wait's first call is made inside, without waiting: what it runs for the
    /// first time is made there, not outside the gate.
    private func run(_ hooks: PreloadHooks) {
        hooks.enterLibraryThread()
        let epoll = state.withLock { $0.epoll }
        var events = [epoll_event](repeating: epoll_event(), count: 64)
        _ = try? Sys.epollWait(epoll, &events, timeoutMs: 0)  // what it found is reported again (level-triggered)
        while true {
            let timeoutMs: Int32 = state.withLock { $0.muted.isEmpty } ? 1000 : Int32(Self.mutedNanos / 1_000_000)
            hooks.leaveSetUp()
            let count = (try? Sys.epollWait(epoll, &events, timeoutMs: timeoutMs)) ?? 0
            hooks.enterSetUp()
            for event in events.prefix(count) { handle(token: event.data.u64) }
            expirePending()
            reserve.withLock { $0 }?.refill()
            unmuteDue()
        }
    }

    /// Leaves a registration whose connectors cannot be taken (no descriptor left, and no reserve) out of the
    /// wait for `mutedNanos`: they stay in its backlog, which the level-triggered wait would report again at once,
    /// for as long as the process is out.
    private func mute(_ token: UInt64, _ socket: Int32) {
        let epoll = state.withLock { state in
            state.muted[token] = (socket, monotonicNanos() + Self.mutedNanos)
            return state.epoll
        }
        _ = try? Sys.epollControl(epoll, EPOLL_CTL_MOD, socket, events: 0, data: token)
    }

    private func unmuteDue() {
        let now = monotonicNanos()
        let (due, epoll) = state.withLock { state -> ([(UInt64, Int32)], Int32) in
            let due = state.muted.filter { $0.value.until <= now }
            for token in due.keys { state.muted[token] = nil }
            return (due.filter { state.entries[$0.key] != nil }.map { ($0.key, $0.value.socket) }, state.epoll)
        }
        for (token, socket) in due {
            _ = try? Sys.epollControl(epoll, EPOLL_CTL_MOD, socket, events: UInt32(EPOLLIN.rawValue), data: token)
        }
    }

    private func handle(token: UInt64) {
        let entry = state.withLock { $0.entries[token] }
        switch entry {
        case .registration(let registration, let listener):
            if !takeConnectors(registration, listener: listener) { mute(token, registration.socket.raw) }
        case .pending(let control, let peer, let listener, _):
            guard state.withLock({ $0.entries.removeValue(forKey: token) }) != nil else { return }
            answer(control, peer: peer, listener: listener)
        case .claims(let registration):
            if !answerClaims(registration) { mute(token, registration.socket.raw) }
        case .welcomed(let link, _):
            // Nothing may arrive on a welcomed link's control socket but its hang-up: the connector is gone. Its
            // TCP connection may still wait in the backlog, with bytes it wrote before closing in the ring (a
            // request then close, or wrk's probe): the link stays for the accept, a while.
            _ = try? Sys.epollControl(state.withLock { $0.epoll }, EPOLL_CTL_DEL, link.control.raw, events: 0, data: 0)
            state.withLock { state in
                if state.entries[token] != nil { state.hungUp[token] = monotonicNanos() + Self.hungUpKeepNanos }
            }
        case nil:
            return
        }
    }

    /// The next connector waiting on `socket`; nil once none waits, or none can be taken (`starved`). While the
    /// process has no descriptor left (EMFILE, ENFILE), each is accepted in the reserve's place and refused: it uses
    /// TCP at once, instead of waiting out its handshake while this thread finds it in the backlog again and again.
    private func nextConnector(on socket: Int32, _ what: String, starved: inout Bool) -> Descriptor? {
        while true {
            do throws(VMSockError) {
                return try Sys.acceptUnixNonBlocking(socket, what: what)
            } catch where error.code == EMFILE || error.code == ENFILE {
                let refused = reserve.withLock { $0 }?.withOneFree { () -> Bool in
                    guard let control = try? Sys.acceptUnixNonBlocking(socket, what: what) else { return false }
                    Handshake.reject(control, .outOfResources)
                    return true  // `control` is closed here, before the reserve is made again
                }
                guard refused == true else {
                    starved = true
                    return nil
                }
            } catch {
                return nil
            }
        }
    }

    /// Answers the connectors waiting on `registration`; false when some could not be taken (`nextConnector`).
    private func takeConnectors(_ registration: Registration, listener: Int32) -> Bool {
        var starved = false
        while let control = nextConnector(on: registration.socket.raw, "accept(vmsock-run registration)", starved: &starved) {
            guard hooks.listenersAllowed() else {
                Handshake.reject(control, .outOfResources)  // this process forked: the connector uses TCP
                continue
            }
            guard let peer = try? Handshake.admit(control, policy: .sameUser) else { continue }  // rejected
            let pendingCount = state.withLock { state in
                state.entries.values.reduce(0) { count, entry in
                    if case .pending = entry { return count + 1 }
                    return count
                }
            }
            guard pendingCount < Self.pendingLimit else {
                Handshake.reject(control, .outOfResources)
                continue
            }
            let raw = control.raw
            let (token, epoll) = state.withLock { state in
                let token = state.nextToken
                state.nextToken += 1
                state.entries[token] = .pending(control, peer, listener: listener, deadline: monotonicNanos() + Self.helloTimeoutNanos)
                return (token, state.epoll)
            }
            hooks.noteInternal(raw)
            _ = try? Sys.epollControl(epoll, EPOLL_CTL_ADD, raw, events: UInt32(EPOLLIN.rawValue), data: token)
        }
        return !starved
    }

    private func answer(_ control: Descriptor, peer: PeerCredentials, listener: Int32) {
        let epoll = state.withLock { $0.epoll }
        _ = try? Sys.epollControl(epoll, EPOLL_CTL_DEL, control.raw, events: 0, data: 0)
        let full = state.withLock { ($0.welcomed[listener]?.count ?? 0) >= Self.welcomedLimit }
        let known = state.withLock { $0.listeners[listener] != nil }
        // SO_REUSEPORT (OpenBSD nc sets it on every listener) is harmless alone; with a second socket on the same
        // address and port, the kernel may hand the TCP connection to the other one: then TCP for everyone.
        guard hooks.listenersAllowed(), !full, known, hooks.listenersSharing(listener) == 1 else {
            Handshake.reject(control, .outOfResources)
            hooks.forgetInternal(control.raw)
            return
        }
        answering.add(1, ordering: .sequentiallyConsistent)
        hooks.welcomeAnswering(1)
        defer {
            hooks.welcomeAnswering(-1)  // after the link's port is counted, below
            answering.subtract(1, ordering: .sequentiallyConsistent)
        }
        guard let link = try? Handshake.answer(
            control, peer: peer, capacity: PreloadConnector.ringSize, reusable: false, keepMemory: true)
        else {
            hooks.forgetInternal(control.raw)
            return
        }
        // vmsock-run's connector always says where it connects from (it binds first): without that, accept could
        // not tell its connection from another, so the link goes (the connector sees the hang-up).
        guard let source = link.source, !source.isWildcard, source.port != 0 else {
            hooks.forgetInternal(link.control.raw)
            return
        }
        let token: UInt64? = state.withLock { state in
            guard state.listeners[listener] != nil else { return nil }  // closed meanwhile
            let token = state.nextToken
            state.nextToken += 1
            state.entries[token] = .welcomed(link, listener: listener)
            if let older = state.welcomed[listener, default: [:]].updateValue(token, forKey: Self.matchKey(source)) {
                state.entries[older] = nil  // a connector reused its port: the older one's connection never came
            } else {
                hooks.welcomePort(Int32(source.port), 1)
            }
            return token
        }
        guard let token else {
            hooks.forgetInternal(link.control.raw)
            return
        }
        _ = try? Sys.epollControl(epoll, EPOLL_CTL_ADD, link.control.raw, events: UInt32(EPOLLRDHUP.rawValue | EPOLLIN.rawValue), data: token)
    }

    /// Hands welcomed links to the forked siblings that accepted their connections. A claim comes right after the
    /// connect, so the wait for it is short. The claimer proves it holds the listening socket by passing it: a
    /// process that holds it could accept the connection anyway. (Not "same user": nginx's workers run as
    /// nobody under a root master.) This thread made every welcome before its entry, so a claim never overtakes
    /// the hello it is for.
    /// Answers the claims waiting on `registration`; false when some could not be taken (`nextConnector`).
    private func answerClaims(_ registration: Registration) -> Bool {
        var starved = false
        while let control = nextConnector(on: registration.socket.raw, "accept(vmsock-run claims)", starved: &starved) {
            guard let request = try? ControlSocket.receive(control.raw, timeoutMs: 100),
                let claim = PreloadClaims.Claim(request.bytes), request.descriptors.count == 1,
                Self.sameSocket(request.descriptors[0].raw, claim.listener), state.withLock({ $0.listeners[claim.listener] != nil })
            else { continue }
            let link = takeWelcomed(listener: claim.listener, from: claim.peer)
            withExtendedLifetime(link) {  // its descriptors stay open until they are sent
                let answer = PreloadClaims.answer(link)
                try? ControlSocket.send(control.raw, answer.bytes, descriptors: answer.descriptors)
            }
        }
        return !starved
    }

    /// How a connector's address and port are compared: the port and the address, an IPv4-mapped IPv6 address
    /// as the IPv4 one (a dual-stack socket on either side sees its IPv4 peer that way). The port alone is not
    /// enough: two sockets on different addresses may hold the same port, and one may be a plain TCP client.
    static func matchKey(_ endpoint: IPEndpoint) -> IPEndpoint { endpoint.mappedIPv4 ?? endpoint }

    /// Whether two descriptors name the same socket (sockfs gives each socket its own inode).
    private static func sameSocket(_ a: Int32, _ b: Int32) -> Bool {
        guard let x = try? Sys.fileStatus(a, "fstat(claimed listener)"), let y = try? Sys.fileStatus(b, "fstat(listener)")
        else { return false }
        return x.st_dev == y.st_dev && x.st_ino == y.st_ino
    }

    /// Drops connectors whose hello did not come in time.
    private func expirePending() {
        let now = monotonicNanos()
        let expired: [Entry] = state.withLock { state in
            var expired: [Entry] = []
            for (token, entry) in state.entries {
                if case .pending(_, _, _, let deadline) = entry, deadline < now {
                    state.entries[token] = nil
                    expired.append(entry)
                }
            }
            for (token, deadline) in state.hungUp where deadline < now {
                state.hungUp[token] = nil
                guard let entry = state.entries.removeValue(forKey: token) else { continue }
                if case .welcomed(let link, let listener) = entry, let source = link.source,
                    state.welcomed[listener]?.removeValue(forKey: Self.matchKey(source)) != nil
                {
                    hooks.welcomePort(Int32(source.port), -1)
                }
                expired.append(entry)
            }
            return expired
        }
        for entry in expired { forget(entry) }
    }

    /// Releases an entry taken out of the table (its descriptors close when it goes).
    private func forget(_ entry: Entry) {
        switch entry {
        case .registration(let registration, _):
            hooks.forgetInternal(registration.socket.raw)
            registration.close()
        case .pending(let control, _, _, _):
            hooks.forgetInternal(control.raw)
        case .welcomed(let link, _):
            hooks.forgetInternal(link.control.raw)
        case .claims(let registration):
            hooks.forgetInternal(registration.socket.raw)
            registration.close()
        }
    }
}

/// Why an accepted connection stays TCP.
package struct PreloadRefusal: Error, CustomStringConvertible {
    package let description: String
    init(_ description: String) { self.description = description }
}
