import CVMSock
import Glibc

/// The TCP system calls: socket, connect (bounded), bind and listen, accept. Every descriptor is close-on-exec
/// and non-blocking; `TCPStream` does the waiting.
enum TCPCalls {
    static func makeSocket(_ family: IPEndpoint.Family) throws(VMSockError) -> Descriptor {
        let type = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue)
        return Descriptor(try Sys.check("socket(\(family == .v4 ? "AF_INET" : "AF_INET6"), SOCK_STREAM)") {
            socket(family == .v4 ? AF_INET : AF_INET6, type, 0)
        })
    }

    /// Connects to `endpoint`, waiting at most `timeoutMs` (-1: as long as the kernel tries).
    /// - Throws: ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH, ENETUNREACH, ... with the address in the message.
    static func connect(_ endpoint: IPEndpoint, timeoutMs: Int32) throws(VMSockError) -> Descriptor {
        let (socket, inProgress) = try startConnect(endpoint)
        if inProgress { try awaitConnected(socket.raw, endpoint, timeoutMs: timeoutMs) } else { setNoDelay(socket.raw) }
        return socket
    }

    /// Starts a non-blocking connect. `inProgress`: wait until the socket polls writable (POLLOUT), then call
    /// `finishConnect`; otherwise it is connected already.
    static func startConnect(_ endpoint: IPEndpoint) throws(VMSockError) -> (socket: Descriptor, inProgress: Bool) {
        let socket = try makeSocket(endpoint.family)
        let started = endpoint.withSockaddr { address, length in Glibc.connect(socket.raw, address, length) }
        if started != 0 {
            guard errno == EINPROGRESS || errno == EINTR else { throw connectError(endpoint, errno) }
            return (socket, true)
        }
        return (socket, false)
    }

    /// After the socket of a connect in progress polled writable: its outcome (SO_ERROR).
    static func finishConnect(_ fd: Int32, _ endpoint: IPEndpoint) throws(VMSockError) {
        var code: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        try Sys.check("getsockopt(SO_ERROR)") { getsockopt(fd, SOL_SOCKET, SO_ERROR, &code, &length) }
        if code != 0 { throw connectError(endpoint, code) }
        setNoDelay(fd)
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

    /// Binds with SO_REUSEADDR (as servers expect: a restarted server gets its port back despite TIME_WAIT) and
    /// listens. Port 0 picks a free port; the returned endpoint says which.
    static func listen(_ endpoint: IPEndpoint, backlog: Int32) throws(VMSockError) -> (Descriptor, IPEndpoint) {
        let socket = try makeSocket(endpoint.family)
        var one: Int32 = 1
        try Sys.check("setsockopt(SO_REUSEADDR)") {
            setsockopt(socket.raw, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        }
        let bound = endpoint.withSockaddr { address, length in bind(socket.raw, address, length) }
        if bound != 0 {
            let code = errno
            switch code {
            case EADDRINUSE: throw VMSockError(code: code, "\(endpoint) is already in use; pick another port or stop the other server")
            case EADDRNOTAVAIL: throw VMSockError(code: code, "\(endpoint.host) is not an address of this host")
            case EACCES: throw VMSockError(code: code, "port \(endpoint.port) needs privileges to bind")
            default: throw VMSockError.system("bind(\(endpoint))", errno: code)
            }
        }
        try Sys.check("listen(\(endpoint))") { Glibc.listen(socket.raw, backlog) }
        return (socket, IPEndpoint.of(socket.raw, peer: false) ?? endpoint)
    }

    /// One non-blocking accept: a connected socket (non-blocking, TCP_NODELAY), or nil when none is waiting.
    static func accept(_ fd: Int32) throws(VMSockError) -> Descriptor? {
        while true {
            let accepted = Sys.retryingEINTR { vms_accept4_cloexec_nonblock(fd) }
            if accepted >= 0 {
                setNoDelay(accepted)
                return Descriptor(accepted)
            }
            switch errno {
            case EAGAIN: return nil
            case ECONNABORTED, EPROTO, ENETDOWN, ENOPROTOOPT, EHOSTDOWN, ENONET, EHOSTUNREACH, EOPNOTSUPP, ENETUNREACH:
                continue  // the connection died before we took it (accept(2) says to retry these)
            default: throw VMSockError.system("accept(TCP)")
            }
        }
    }

    /// TCP_NODELAY: a small write goes out at once, as a vmsock write does.
    static func setNoDelay(_ fd: Int32) {
        var one: Int32 = 1
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }
}
