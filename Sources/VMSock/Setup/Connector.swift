import Glibc

/// One connect, from the addresses a name resolved to, to a connection: for each address in order, shared memory
/// when the policy and the address allow it (a parked link first, then a new one), else TCP with the reason (or,
/// under `shm`, the error).
///
/// It is a sequence of steps that never block: `advance()` does what can be done now and returns either the
/// connection or what to wait for. Two drivers run it, `connect(_:)` below, which blocks in poll, and the async
/// connect (`AsyncConnect.swift`), which waits through an event loop, so that both take the same steps and make
/// the same decisions. Descriptors are owned by the state, so a connector dropped half-way (a failure, a
/// cancellation) closes what it made.
struct Connector {
    /// What the driver does next.
    enum Step {
        /// Wait until `interest` polls ready or `deadline` passes, then advance again. `spinFirst`: the answer
        /// usually comes within microseconds, less than a wake-up costs, so a thread that may spin looks without
        /// sleeping first (`SpinPolicy`).
        case wait(PollInterest, until: Deadline, spinFirst: Bool)
        /// Sleep, then advance again: an AF_UNIX backlog that is full cannot be polled for room.
        case pause(Duration)
        case connected(Connection)
    }

    private enum State {
        case nextAddress
        case nextRegistration(Attempt)
        case knocking(Attempt, until: Deadline, pause: Duration)
        case awaitingWelcome(Attempt, Handshake.HelloSent, control: Descriptor, peer: PeerCredentials, until: Deadline)
        case tcp(Descriptor, to: IPEndpoint, fallback: FallbackReason, detail: String?, until: Deadline)
        /// Asked a peer of the vmsockd region for a connection; waiting for its answer in the region.
        case ivshmem(IvshmemRequest, to: IPEndpoint, local: IPEndpoint, portHeld: Descriptor?, until: Deadline)
    }

    /// The shared-memory attempt on one destination: the registrations left to try, why the ones tried failed,
    /// and the TCP port held for the connection once one is (made when the hello or reopen goes).
    private struct Attempt {
        let destination: IPEndpoint
        var candidates: [ControlAddress]
        var failure: VMSockError
        var portHeld: Descriptor? = nil
        var local: IPEndpoint
        var address: ControlAddress { candidates[0] }

        init(destination: IPEndpoint, candidates: [ControlAddress], failure: VMSockError) {
            self.destination = destination
            self.candidates = candidates
            self.failure = failure
            local = destination.with(port: 0)
        }

        /// Holds a TCP port for the connection, once per attempt (`TCPCalls.holdPort`): `source`'s if the caller
        /// chose one (its bind failing fails the attempt), else one the kernel picks (without one, port 0).
        mutating func holdPort(from source: IPEndpoint?) throws(VMSockError) {
            guard portHeld == nil, let (socket, local) = try TCPCalls.holdPort(for: destination, source: source) else { return }
            (portHeld, self.local) = (socket, local)
        }

        /// The connection on `link`, which reports the port held as ours.
        func connection(on link: EstablishedLink, reused: Bool) throws(VMSockError) -> Connection {
            var connection = try Connection.sharedMemory(
                link, local: local, peer: destination, reused: reused, parking: LinkPool.shared.parking(for: address))
            connection.portHeld = portHeld
            return connection
        }
    }

    let options: VMSocketOptions
    private var endpoints: [IPEndpoint]
    private var failure = VMSockError(code: EINVAL, "no address to connect to")
    private var state = State.nextAddress

    init(to endpoints: [IPEndpoint], options: VMSocketOptions) throws(VMSockError) {
        try SharedRegion.checkCapacity(options.ringSize)
        self.endpoints = endpoints
        self.options = options
    }

    /// The blocking driver: runs the steps, waiting in poll (after a spin where the step suggests one).
    static func connect(to endpoints: [IPEndpoint], options: VMSocketOptions) throws(VMSockError) -> Connection {
        var connector = try Connector(to: endpoints, options: options)
        while true {
            switch try connector.advance() {
            case .connected(let connection):
                return connection
            case .wait(let interest, let deadline, let spinFirst):
                if spinFirst { ControlSocket.spinUntilReadable(interest.descriptor, nanoseconds: SpinPolicy.processNanoseconds) }
                _ = try Sys.wait(interest.descriptor, interest.events, until: deadline)
            case .pause(let duration):
                Sys.sleep(duration)
            }
        }
    }

    /// Does what can be done now. Throws the last address's failure once every address failed.
    mutating func advance() throws(VMSockError) -> Step {
        while true {
            do throws(VMSockError) {
                if let step = try step() { return step }
            } catch {
                // This address failed: the next one, as a TCP client tries them, or this failure if none is left.
                if endpoints.isEmpty { throw error }
                failure = error
                state = .nextAddress
            }
        }
    }

    /// One transition; nil to go on at once.
    private mutating func step() throws(VMSockError) -> Step? {
        switch state {
        case .nextAddress:
            guard !endpoints.isEmpty else { throw failure }
            let destination = endpoints.removeFirst()
            if options.effectiveTransport == .tcp { return try startTCP(destination, .disabledByPolicy, nil) }
            if options.effectiveTransport == .ivshmem { return try startIvshmem(destination) }
            let candidates = Registry.candidates(
                for: destination, isLocal: LocalAddresses.isLocal(destination), directory: options.effectiveDirectory)
            if candidates.isEmpty { return try fallBack(destination, VMSockError(code: ECONNREFUSED, "").because(.remote)) }
            let noListener = VMSockError(code: ECONNREFUSED, "").because(.noListener)
            state = .nextRegistration(Attempt(destination: destination, candidates: candidates, failure: noListener))
            return nil

        case .nextRegistration(var attempt):
            guard !attempt.candidates.isEmpty else { return try fallBack(attempt.destination, attempt.failure, using: attempt.portHeld) }
            // A source the caller chose is bound first: its failure must not cost a parked link.
            if options.sourceAddress != nil { try attempt.holdPort(from: options.sourceAddress) }
            if options.reusesLinks,
                let link = LinkPool.shared.take(attempt.address, capacity: options.ringSize, policy: options.peerPolicy)
            {
                try attempt.holdPort(from: options.sourceAddress)
                let reopened: EstablishedLink
                do throws(VMSockError) {
                    reopened = try Handshake.reopen(link, dialed: attempt.destination, source: attempt.local)
                } catch {
                    state = .nextRegistration(attempt)
                    return nil  // the link is unusable and freed; try the next, or a new link
                }
                let connection = try attempt.connection(on: reopened, reused: true)
                // While the listener takes the reopen: the port of this process's next connection (it reuses links).
                if options.sourceAddress == nil { TCPCalls.prepareSparePort(for: attempt.destination) }
                return .connected(connection)
            }
            state = .knocking(attempt, until: .after(milliseconds: options.handshakeTimeoutMs), pause: .milliseconds(1))
            return nil

        case .knocking(var attempt, let deadline, let pause):
            return try knocking(&attempt, deadline, pause)

        case .awaitingWelcome(let attempt, let hello, let control, let peer, let deadline):
            do throws(VMSockError) {
                guard let reply = try ControlSocket.receiveIfReady(control.raw) else {
                    if !deadline.hasPassed {
                        return .wait(PollInterest(descriptor: control.raw, events: Int16(POLLIN)), until: deadline, spinFirst: false)
                    }
                    throw VMSockError(code: ETIMEDOUT, "peer did not answer the handshake within \(options.handshakeTimeoutMs) ms")
                }
                let link = try Handshake.finishConnect(hello, reply: reply, control: control, peer: peer, address: attempt.address)
                return .connected(try attempt.connection(on: link, reused: false))
            } catch {
                return try fallBack(attempt.destination, Self.handshakeFailure(error), using: attempt.portHeld)
            }

        case .ivshmem(let request, let destination, let local, let held, let deadline):
            return try awaitingIvshmem(request, destination, local, held, deadline)

        case .tcp(let socket, let destination, let fallback, let detail, let deadline):
            if try !Sys.isReady(socket.raw, Int16(POLLOUT)) {
                if deadline.hasPassed { throw TCPCalls.timedOut(destination, options.connectTimeoutMs) }
                return .wait(PollInterest(descriptor: socket.raw, events: Int16(POLLOUT)), until: deadline, spinFirst: false)
            }
            try TCPCalls.finishConnect(socket.raw, destination)
            return .connected(.tcp(socket, peer: destination, fallback: fallback, detail: detail))
        }
    }

    // MARK: Shared memory

    /// Connecting the control socket to the registration, then checking its owner and sending the hello. Our half
    /// is made after we knock: the connect has woken the listener, and a wake-up costs more here than making a
    /// half, so the hello is usually there by the time the listener looks.
    private mutating func knocking(_ attempt: inout Attempt, _ deadline: Deadline, _ pause: Duration) throws(VMSockError) -> Step? {
        let control: Descriptor
        do throws(VMSockError) {
            guard let connected = try ControlSocket.connectNow(attempt.address) else {
                if deadline.hasPassed {
                    let full = VMSockError(
                        code: ETIMEDOUT, "\(attempt.address) did not accept within \(options.handshakeTimeoutMs) ms (its backlog is full)")
                    return try fallBack(attempt.destination, Self.controlConnectFailure(full), using: attempt.portHeld)
                }
                state = .knocking(attempt, until: deadline, pause: min(pause * 2, .milliseconds(50)))
                return .pause(pause)
            }
            control = connected
        } catch {
            if error.code == ECONNREFUSED {  // nobody registered under this name
                attempt.candidates.removeFirst()
                state = .nextRegistration(attempt)
                return nil
            }
            return try fallBack(attempt.destination, Self.controlConnectFailure(error), using: attempt.portHeld)
        }
        do throws(VMSockError) {
            let peer = try ControlSocket.peerCredentials(control.raw)
            guard options.peerPolicy.admits(peer) else {
                // A registration we do not trust may be a squatter; a trusted one may still follow.
                attempt.failure = VMSockError(
                    code: ECONNREFUSED, "the registration \(attempt.address) is owned by uid \(peer.uid) (pid \(peer.pid)), which this process does not trust"
                ).because(.untrustedOwner)
                attempt.candidates.removeFirst()
                state = .nextRegistration(attempt)
                return nil
            }
            try attempt.holdPort(from: options.sourceAddress)
            let hello = try Handshake.sendHello(
                control, dialed: attempt.destination, source: attempt.local, address: attempt.address,
                capacity: options.ringSize, reusable: options.reusesLinks)
            // While the listener answers: the port of this process's next connection, as its half was.
            if hello.preparesNext && options.sourceAddress == nil { TCPCalls.prepareSparePort(for: attempt.destination) }
            state = .awaitingWelcome(attempt, hello, control: control, peer: peer, until: deadline)
            return .wait(PollInterest(descriptor: control.raw, events: Int16(POLLIN)), until: deadline, spinFirst: true)
        } catch {
            return try fallBack(attempt.destination, Self.handshakeFailure(error), using: attempt.portHeld)
        }
    }

    // MARK: vmsockd's region

    /// Asks the peer of the region that listens on `destination` for a connection (under `auto`, after shared
    /// memory found no listener on this host). Its failure is TCP with the reason, or under `ivshmem` the error.
    private mutating func startIvshmem(_ destination: IPEndpoint) throws(VMSockError) -> Step? {
        var held: Descriptor? = nil
        do throws(VMSockError) {
            guard let node = try IvshmemNode.node(for: options) else {
                throw VMSockError(code: ECONNREFUSED, "this process is no peer of a vmsockd region (set VMSOCK_IVSHMEM)")
                    .because(.noListener)
            }
            if let failure = node.failure { throw failure }
            guard let listener = node.findListener(destination) else {
                throw VMSockError(code: ECONNREFUSED, "no peer of the region at \(node.path) listens on \(destination)")
                    .because(.noListener)
            }
            guard options.peerPolicy.admits(node.credentials(of: listener.id)) else {
                throw VMSockError(
                    code: ECONNREFUSED, "\(listener), which listens on \(destination), is uid \(node.credentials(of: listener.id).uid), which this process does not trust"
                ).because(.untrustedOwner)
            }
            var local = destination.with(port: 0)
            if let (socket, address) = try TCPCalls.holdPort(for: destination, source: options.sourceAddress) {
                (held, local) = (socket, address)
            }
            let request = try node.request(to: listener, dialed: destination, source: local)
            let deadline = Deadline.after(milliseconds: options.handshakeTimeoutMs)
            state = .ivshmem(request, to: destination, local: local, portHeld: held, until: deadline)
            return .wait(PollInterest(descriptor: request.bell.fd, events: Int16(POLLIN)), until: Self.tick(deadline), spinFirst: true)
        } catch {
            return try fallBack(destination, Self.handshakeFailure(error), using: held, triedRegion: true)
        }
    }

    private mutating func awaitingIvshmem(
        _ request: IvshmemRequest, _ destination: IPEndpoint, _ local: IPEndpoint, _ held: Descriptor?, _ deadline: Deadline
    ) throws(VMSockError) -> Step? {
        request.bell.drain()
        do throws(VMSockError) {
            guard let link = try request.node.check(request) else {
                if deadline.hasPassed {
                    throw VMSockError(code: ETIMEDOUT, "\(request.listener) did not answer within \(options.handshakeTimeoutMs) ms")
                }
                return .wait(PollInterest(descriptor: request.bell.fd, events: Int16(POLLIN)), until: Self.tick(deadline), spinFirst: false)
            }
            var connection = try Connection.sharedMemory(link, local: local, peer: destination, reused: false, parking: nil)
            connection.portHeld = held
            return .connected(connection)
        } catch {
            state = .nextAddress  // drops the request, which gives its slot up
            return try fallBack(destination, Self.handshakeFailure(error), using: held, triedRegion: true)
        }
    }

    /// A wait on a region request is bounded by the dispatcher's tick as well: its ring may be lost, and then the
    /// next look at the slot finds the answer.
    private static func tick(_ deadline: Deadline) -> Deadline {
        let tick = Deadline.after(milliseconds: IvshmemNode.tickMs)
        return tick.nanoseconds < deadline.nanoseconds ? tick : deadline
    }

    // MARK: TCP and fallback

    /// After the shared-memory attempt on `destination` failed with `error`: TCP with the reason, or under the
    /// `shm` policy, the error. A listener that broke, reset or timed out the handshake keeps its own code
    /// (EPROTO, ECONNRESET, ETIMEDOUT); nothing to connect to is ECONNREFUSED. The TCP connect goes out of the
    /// port held for the attempt, if any: the connection keeps that identity, and a process short of descriptors
    /// (a usual reason to fall back) needs no new one.
    private mutating func fallBack(
        _ destination: IPEndpoint, _ error: VMSockError, using held: Descriptor? = nil, triedRegion: Bool = false
    ) throws(VMSockError) -> Step? {
        let fallback = error.fallback ?? .handshakeFailed
        // This host has no shared-memory listener there: a peer of the region may have one (see `startIvshmem`).
        var detail = error.message.isEmpty ? nil : error.message
        if !triedRegion, options.effectiveTransport == .auto, fallback == .remote || fallback == .noListener {
            var regionListens = false
            do throws(VMSockError) {
                if let node = try IvshmemNode.node(for: options), node.failure == nil {
                    regionListens = node.findListener(destination) != nil
                }
            } catch {
                // A region is named but cannot be joined (vmsockd gone, the device held by another process): the
                // reason TCP is used must say so.
                detail = "the ivshmem region could not be joined: \(error.message)"
            }
            if regionListens { return try startIvshmem(destination) }
        }
        if options.effectiveTransport == .ivshmem {
            throw VMSockError(
                code: error.code,
                "no ivshmem connection to \(destination) (\(fallback)\(detail.map { ": \($0)" } ?? "")); the transport policy is ivshmem, so no TCP fallback")
        }
        if options.effectiveTransport == .shm {
            throw VMSockError(
                code: error.code,
                "no shared-memory connection to \(destination) (\(fallback)\(detail.map { ": \($0)" } ?? "")); the transport policy is shm, so no TCP fallback")
        }
        return try startTCP(destination, fallback, detail, using: held)
    }

    private mutating func startTCP(
        _ destination: IPEndpoint, _ fallback: FallbackReason, _ detail: String?, using held: Descriptor? = nil
    ) throws(VMSockError) -> Step? {
        var held = held
        if held == nil, let source = options.sourceAddress {
            held = try TCPCalls.holdPort(for: destination, source: source)?.socket
        }
        let (socket, inProgress) = try TCPCalls.startConnect(destination, using: held)
        guard inProgress else {
            try TCPCalls.setNoDelay(socket.raw)
            return .connected(.tcp(socket, peer: destination, fallback: fallback, detail: detail))
        }
        state = .tcp(socket, to: destination, fallback: fallback, detail: detail,
                     until: .after(milliseconds: options.connectTimeoutMs))
        return nil
    }

    /// A control connect that failed otherwise than with nobody there.
    private static func controlConnectFailure(_ error: VMSockError) -> VMSockError {
        error.because(error.code == EMFILE || error.code == ENFILE ? .outOfResources : .handshakeFailed)
    }

    /// A handshake failure, with its fallback reason.
    private static func handshakeFailure(_ error: VMSockError) -> VMSockError {
        if error.fallback != nil { return error }
        return error.because(error.isShortOfResources ? .outOfResources : .handshakeFailed)
    }
}
