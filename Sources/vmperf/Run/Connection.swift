import VMSock

/// One connection of a test, with what the report says about it.
struct Connection {
    enum Carrier {
        case socket(VMSocket)
        case unix(UnixStream)
    }

    /// The stream's number in its test (from 0); -1 for a control connection.
    var index: Int
    let carrier: Carrier
    let local: Endpoint
    let remote: Endpoint

    struct Endpoint {
        var host: String
        var port: Int

        init(host: String, port: Int) {
            self.host = host
            self.port = port
        }

        /// As iperf3 prints it: an IPv4 peer of a dual-stack listener as IPv4 (127.0.0.1, not ::ffff:127.0.0.1).
        init(_ address: IPEndpoint) {
            let shown = address.mappedIPv4 ?? address
            self.init(host: shown.host, port: Int(shown.port))
        }
    }

    init(index: Int, _ socket: VMSocket) {
        self.index = index
        carrier = .socket(socket)
        local = Endpoint(socket.localAddress)
        remote = Endpoint(socket.peerAddress)
    }

    init(index: Int, _ unix: UnixStream, port: Int) {
        self.index = index
        carrier = .unix(unix)
        local = Endpoint(host: "@vmperf-\(port)", port: 0)
        remote = Endpoint(host: "@vmperf-\(port)", port: 0)
    }

    var stream: any ByteStream {
        switch carrier {
        case .socket(let socket): socket
        case .unix(let unix): unix
        }
    }

    /// "shared memory", "TCP", "Unix socket".
    var transport: String {
        switch carrier {
        case .socket(let socket): socket.transport == .tcp ? "TCP" : socket.transport.description
        case .unix: "Unix socket"
        }
    }

    /// The transport and, for TCP chosen in auto mode, why: "TCP (no shared-memory listener)".
    var transportDescription: String {
        switch carrier {
        case .socket(let socket): socket.transportDescription
        case .unix: "Unix socket"
        }
    }

    var fallbackReason: String? {
        if case .socket(let socket) = carrier { return socket.fallbackReason?.rawValue }
        return nil
    }

    /// Bytes of the ring this side writes, for shared memory.
    var ringSize: Int? {
        if case .socket(let socket) = carrier, socket.transport != .tcp { return socket.ringSize }
        return nil
    }

    /// Segments sent again so far, as iperf3's `retransmits`: the kernel's count over TCP, 0 where nothing is
    /// ever sent twice (shared memory, a Unix socket); nil when the kernel does not say.
    var retransmissions: Int? {
        switch carrier {
        case .socket(let socket): socket.retransmissions
        case .unix: 0
        }
    }

    /// What the stream may have in flight, as iperf3's Cwnd: TCP's congestion window, or the ring's size; nil
    /// for a Unix socket, which has none.
    var congestionWindow: Int? {
        if case .socket(let socket) = carrier { return socket.congestionWindow }
        return nil
    }

    /// Sleeps and doorbell rings so far, for shared memory.
    var waitStatistics: WaitStatistics? {
        if case .socket(let socket) = carrier { return socket.waitStatistics }
        return nil
    }

    /// Bytes of the ring the other side writes, for shared memory.
    var peerRingSize: Int? {
        if case .socket(let socket) = carrier, socket.transport != .tcp { return socket.peerRingSize }
        return nil
    }

    func setSpin(_ microseconds: Int?) {
        if let microseconds, case .socket(let socket) = carrier { socket.spinMicroseconds = microseconds }
    }

    /// Wakes any call blocked on this connection, from another thread (a failed stream stops the others).
    func abort() {
        switch carrier {
        case .socket(let socket): socket.close()
        case .unix(let unix): unix.abort()
        }
    }

    func close() {
        switch carrier {
        case .socket(let socket): socket.close()
        case .unix(let unix): unix.close()
        }
    }
}
