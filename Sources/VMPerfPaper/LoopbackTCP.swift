import Glibc
import VMPerfSupport
import VMSock

/// The TCP row's connection: plain Glibc sockets on 127.0.0.1 (the paper's baseline, so not the vmsock library).
enum LoopbackTCP {
    /// A listening socket on 127.0.0.1 and the port the kernel picked.
    static func listen() throws -> (fd: Int32, port: UInt16) {
        let fd = try check("socket", socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0))
        do {
            var address = loopback(port: 0)
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            try withUnsafeMutablePointer(to: &address) { pointer in
                try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { raw in
                    _ = try check("bind", bind(fd, raw, length))
                    _ = try check("listen", Glibc.listen(fd, 1))
                    _ = try check("getsockname", getsockname(fd, raw, &length))
                }
            }
            return (fd, UInt16(bigEndian: address.sin_port))
        } catch {
            _ = close(fd)
            throw error
        }
    }

    /// Accepts the peer's connection, looking every 100 ms whether the peer is still there (a blocking accept
    /// would wait forever for a peer that died before connecting).
    static func accept(_ listener: Int32, _ watch: inout Watchdog) throws -> Int32 {
        let deadline = MonotonicClock.nanoseconds() + Watchdog.patience * 1_000_000_000
        while true {
            var ready = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
            if poll(&ready, 1, 100) > 0 {
                let fd = Glibc.accept(listener, nil, nil)
                if fd >= 0 { return fd }
                if errno != EINTR && errno != ECONNABORTED { throw Failure("TCP: accept failed: \(String(cString: strerror(errno)))") }
            }
            try watch.checkPeer()
            if MonotonicClock.nanoseconds() > deadline { throw Stop.noProgress }
        }
    }

    static func connect(port: UInt16) throws -> Int32 {
        let fd = try check("socket", socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0))
        var address = loopback(port: port)
        let result = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard result == 0 else {
            let code = errno
            _ = close(fd)
            throw Failure("TCP: connect to 127.0.0.1:\(port) failed: \(String(cString: strerror(code)))")
        }
        return fd
    }

    /// TCP_NODELAY (each 4-byte send leaves at once, as the paper's ping-pong needs) and a receive timeout, so that
    /// a peer that stops answering fails the row instead of hanging it.
    static func configure(_ fd: Int32) throws {
        var on: Int32 = 1
        _ = try check("setsockopt(TCP_NODELAY)", setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &on, socklen_t(MemoryLayout<Int32>.size)))
        var timeout = timeval(tv_sec: Int(Watchdog.patience), tv_usec: 0)
        _ = try check("setsockopt(SO_RCVTIMEO)", setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size)))
    }

    private static func loopback(port: UInt16) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        return address
    }

    private static func check(_ call: String, _ result: Int32) throws -> Int32 {
        guard result >= 0 else { throw Failure("TCP: \(call) failed: \(String(cString: strerror(errno)))") }
        return result
    }
}
