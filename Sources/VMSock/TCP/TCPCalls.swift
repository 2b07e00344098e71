import CVMSock
import Glibc
import Synchronization

/// The TCP system calls: socket, connect (bounded), bind and listen, accept. Every descriptor is close-on-exec
/// and non-blocking; `TCPStream` does the waiting.
enum TCPCalls {
    static func makeSocket(_ family: IPEndpoint.Family) throws(VMSockError) -> Descriptor {
        let type = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue)
        return try Sys.socket(
            family == .v4 ? AF_INET : AF_INET6, type, "socket(\(family == .v4 ? "AF_INET" : "AF_INET6"), SOCK_STREAM)")
    }

    /// Connects to `endpoint`, waiting at most `timeoutMs` (-1: as long as the kernel tries).
    /// - Throws: ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH, ENETUNREACH, ... with the address in the message.
    static func connect(_ endpoint: IPEndpoint, timeoutMs: Int32) throws(VMSockError) -> Descriptor {
        let (socket, inProgress) = try startConnect(endpoint)
        if inProgress { try awaitConnected(socket.raw, endpoint, timeoutMs: timeoutMs) } else { try setNoDelay(socket.raw) }
        return socket
    }

    /// Starts a non-blocking connect. `inProgress`: wait until the socket polls writable (POLLOUT), then call
    /// `finishConnect`; otherwise it is connected already. `held`: a socket already bound to the port to connect
    /// from (see `reservePort`); without one, a new socket.
    static func startConnect(
        _ endpoint: IPEndpoint, using held: Descriptor? = nil
    ) throws(VMSockError) -> (socket: Descriptor, inProgress: Bool) {
        let socket: Descriptor
        if let held { socket = held } else { socket = try makeSocket(endpoint.family) }
        let progress: Sys.ConnectProgress
        do {
            progress = try endpoint.withSockaddr { (address, length) throws(VMSockError) in
                try Sys.connect(socket.raw, address, length, "connect(\(endpoint))")
            }
        } catch {
            throw connectError(endpoint, error.code)
        }
        switch progress {
        case .connected: return (socket, false)
        case .inProgress: return (socket, true)
        case .wouldBlock: throw connectError(endpoint, EAGAIN)  // no local port free
        }
    }

    /// After the socket of a connect in progress polled writable: its outcome (SO_ERROR).
    static func finishConnect(_ fd: Int32, _ endpoint: IPEndpoint) throws(VMSockError) {
        let code = try Sys.getOption(fd, SOL_SOCKET, SO_ERROR, Int32(0), "getsockopt(SO_ERROR)")
        if code != 0 { throw connectError(endpoint, code) }
        try setNoDelay(fd)
    }

    static func timedOut(_ endpoint: IPEndpoint, _ timeoutMs: Int32) -> VMSockError {
        VMSockError(code: ETIMEDOUT, "connecting to \(endpoint) timed out after \(timeoutMs) ms")
    }

    private static func awaitConnected(_ fd: Int32, _ endpoint: IPEndpoint, timeoutMs: Int32) throws(VMSockError) {
        let deadline = timeoutMs < 0 ? Int64.max : monotonicNanos() + Int64(timeoutMs) * 1_000_000
        while true {
            let left = deadline == .max ? -1 : Int32(clamping: max(0, (deadline - monotonicNanos()) / 1_000_000))
            var pfd = [pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)]
            if try Sys.poll(&pfd, timeoutMs: left) > 0 { break }
            if left == 0 { throw timedOut(endpoint, timeoutMs) }
        }
        try finishConnect(fd, endpoint)
    }

    private static func connectError(_ endpoint: IPEndpoint, _ code: Int32) -> VMSockError {
        switch code {
        case ECONNREFUSED: VMSockError(code: code, "connection to \(endpoint) refused: nothing listens there")
        case ETIMEDOUT: VMSockError(code: code, "connecting to \(endpoint) timed out")
        default: VMSockError.system("connect(\(endpoint))", errno: code)
        }
    }

    /// The port a connection to `destination` leaves from: `source` when the caller chose one (its failure is the
    /// connect's, as a bind before connect), else one `reservePort` holds (nil when it cannot).
    static func holdPort(
        for destination: IPEndpoint, source: IPEndpoint?
    ) throws(VMSockError) -> (socket: Descriptor, local: IPEndpoint)? {
        guard var source else { return reservePort(for: destination) }
        if source.isWildcard { source = .wildcard(destination.family, port: source.port) }  // a port, from any address
        guard source.family == destination.family else {
            throw VMSockError(
                code: EAFNOSUPPORT, "cannot connect from \(source) to \(destination): one is IPv4, the other IPv6")
        }
        let socket = try makeSocket(source.family)
        try source.withSockaddr { (address, length) throws(VMSockError) in
            try Sys.bind(socket.raw, address, length, "bind(\(source)) before connecting to \(destination)")
        }
        guard let bound = IPEndpoint.of(socket.raw, peer: false) else {
            throw VMSockError.system("getsockname after bind(\(source))")
        }
        // A wildcard source chooses the port only: the address is the one the connect leaves from.
        let address = source.isWildcard ? routedSource(to: destination) ?? Self.source(for: destination) : source
        return (socket, address.with(port: bound.port))
    }

    /// A TCP port held for a shared-memory connection to `destination`, so that the connection has an address a
    /// TCP programmer expects (a distinct, non-zero local port) that no TCP connection on the host can take while
    /// it is held: a socket bound to the address a TCP connect to `destination` would leave from, at a port the
    /// kernel picks. That address is the destination itself when it is an address of this host (the loopback
    /// address for a wildcard); otherwise (a peer of vmsockd's region on another machine: a guest dialing its host,
    /// or another guest) the one the routing table picks for it. connect(2) never picks a port a socket is bound
    /// to. Nil, and port 0 reported, when the kernel has none to give (or no descriptor is left): the connection
    /// works all the same.
    static func reservePort(for destination: IPEndpoint) -> (socket: Descriptor, local: IPEndpoint)? {
        let source = Self.source(for: destination)
        if let spare = takeSparePort(from: source) { return spare }
        if let held = bindAnyPort(source) { return held }
        guard !destination.isWildcard, let routed = routedSource(to: destination) else { return nil }
        return bindAnyPort(routed)
    }

    private static func source(for destination: IPEndpoint) -> IPEndpoint {
        destination.isWildcard ? IPEndpoint.loopback(destination.family, port: 0) : destination.with(port: 0)
    }

    /// A port held ahead for the next connection (three system calls off its way): `prepareSparePort` makes it
    /// once a connect has sent its reopen, or its hello when it makes spare halves, while the listener answers.
    /// One at a time, for the first source asked (a client that alternates between destinations binds as before
    /// for the others, and never churns it); a source that could not be bound is remembered (`held` nil) until
    /// the next connection from it, which binds its own (a failure may have been a passing shortage), or until
    /// another source asks. Only the process
    /// that bound it takes it: a forked child holds the same socket, and two connections must never report one
    /// port; the child's first spare replaces it.
    private struct SparePort {
        let source: IPEndpoint
        let held: (socket: Descriptor, local: IPEndpoint)?
        let owner: pid_t
    }

    private static let sparePort = Mutex<SparePort?>(nil)

    private static func takeSparePort(from source: IPEndpoint) -> (socket: Descriptor, local: IPEndpoint)? {
        let kept = sparePort.withLock { spare -> SparePort? in
            guard let kept = spare, kept.source == source else { return nil }
            spare = nil  // a failed try too: the next prepare tries again
            return kept
        }
        guard let kept, let held = kept.held else { return nil }
        return kept.owner == Sys.processID() ? held : nil  // a forked child's copy is dropped (and closed) here
    }

    /// Binds the port the next connection to `destination` takes, unless this process keeps a spare already (or
    /// a failed try from the same source). Call where the peer is busy anyway (a reopen or a hello just sent).
    static func prepareSparePort(for destination: IPEndpoint) {
        let source = Self.source(for: destination), owner = Sys.processID()
        func wanted(_ spare: SparePort?) -> Bool {
            guard let spare else { return true }
            return spare.owner != owner || (spare.held == nil && spare.source != source)
        }
        guard sparePort.withLock({ wanted($0) }) else { return }
        let made = SparePort(source: source, held: bindAnyPort(source), owner: owner)
        sparePort.withLock { if wanted($0) { $0 = made } }
    }

    /// Frees the spare port, if any.
    static func dropSparePort() { _ = sparePort.withLock { spare in defer { spare = nil }; return spare } }

    /// A TCP socket bound to `source` at a port the kernel picks, and that address; nil when it cannot be bound.
    private static func bindAnyPort(_ source: IPEndpoint) -> (socket: Descriptor, local: IPEndpoint)? {
        guard let socket = try? makeSocket(source.family) else { return nil }
        do {
            try source.withSockaddr { (address, length) throws(VMSockError) in
                try Sys.bind(socket.raw, address, length, "bind(\(source))")
            }
        } catch {
            return nil
        }
        guard let bound = IPEndpoint.of(socket.raw, peer: false), bound.port != 0 else { return nil }
        return (socket, source.with(port: bound.port))
    }

    /// The address a connection to `destination` leaves from, as the routing table says: a UDP socket connected
    /// to it (which sends nothing) names it. Nil when there is no route.
    private static func routedSource(to destination: IPEndpoint) -> IPEndpoint? {
        let type = Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        guard let probe = try? Sys.socket(destination.family == .v4 ? AF_INET : AF_INET6, type, "socket(SOCK_DGRAM)") else {
            return nil
        }
        do {
            _ = try destination.withSockaddr { (address, length) throws(VMSockError) in
                try Sys.connect(probe.raw, address, length, "connect(UDP \(destination))")
            }
        } catch {
            return nil
        }
        return IPEndpoint.of(probe.raw, peer: false)?.with(port: 0)
    }

    /// Binds with SO_REUSEADDR (as servers expect: a restarted server gets its port back despite TIME_WAIT) and
    /// listens. Port 0 picks a free port; the returned endpoint says which.
    static func listen(_ endpoint: IPEndpoint, backlog: Int32) throws(VMSockError) -> (Descriptor, IPEndpoint) {
        let socket = try makeSocket(endpoint.family)
        try Sys.setOption(socket.raw, SOL_SOCKET, SO_REUSEADDR, Int32(1), "setsockopt(SO_REUSEADDR)")
        if endpoint.family == .v6 {  // IPv4 too, whatever net.ipv6.bindv6only says: the registry counts on it
            try Sys.setOption(socket.raw, Int32(IPPROTO_IPV6), IPV6_V6ONLY, Int32(0), "setsockopt(IPV6_V6ONLY)")
        }
        do {
            try endpoint.withSockaddr { (address, length) throws(VMSockError) in
                try Sys.bind(socket.raw, address, length, "bind(\(endpoint))")
            }
        } catch {
            switch error.code {
            case EADDRINUSE: throw VMSockError(code: error.code, "\(endpoint) is already in use; pick another port or stop the other server")
            case EADDRNOTAVAIL: throw VMSockError(code: error.code, "\(endpoint.host) is not an address of this host")
            case EACCES: throw VMSockError(code: error.code, "port \(endpoint.port) needs privileges to bind")
            default: throw error
            }
        }
        try Sys.listen(socket.raw, backlog: backlog, "listen(\(endpoint))")
        return (socket, IPEndpoint.of(socket.raw, peer: false) ?? endpoint)
    }

    /// One non-blocking accept: a connected socket (non-blocking, TCP_NODELAY), or nil when none is waiting.
    static func accept(_ fd: Int32) throws(VMSockError) -> Descriptor? {
        guard let socket = try Sys.acceptTCP(fd, what: "accept(TCP)") else { return nil }
        try setNoDelay(socket.raw)
        return socket
    }

    /// TCP_NODELAY: a small write goes out at once, as a vmsock write does. On a TCP socket only a bug of ours
    /// (EBADF, ENOTSOCK) makes it fail; whatever state the connection is in, it does not.
    static func setNoDelay(_ fd: Int32) throws(VMSockError) {
        try Sys.setOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, Int32(1), "setsockopt(TCP_NODELAY)")
    }
}
