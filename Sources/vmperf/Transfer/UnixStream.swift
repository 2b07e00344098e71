import CVMSock
import Glibc
import VMPerfSupport

/// A Unix-domain stream socket in the abstract namespace (nothing in the file system to clean up): the
/// comparison's third transport. The server listens on `@vmperf-<port>` beside its vmsock listener.
final class UnixStream: ByteStream {
    private(set) var fd: Int32

    init(fd: Int32) { self.fd = fd }

    deinit { close() }

    /// The abstract address for a vmperf server's port.
    static func address(port: Int) -> (sockaddr_un, socklen_t) {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let name = Array("vmperf-\(port)".utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { path in
            path[0] = 0  // abstract namespace
            for (index, byte) in name.enumerated() { path[index + 1] = byte }
        }
        let length = MemoryLayout<sa_family_t>.size + 1 + name.count
        return (address, socklen_t(length))
    }

    static func connect(port: Int) throws -> UnixStream {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Failure("unable to make a Unix socket: \(errorText())") }
        var (address, length) = address(port: port)
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, length) }
        }
        guard result == 0 else {
            let text = errorText()
            Glibc.close(fd)
            throw Failure("unable to connect to the server's Unix socket @vmperf-\(port): \(text) (is `vmperf -s -p \(port)` running on this host?)")
        }
        return UnixStream(fd: fd)
    }

    @inline(__always)
    func send(block: UnsafeRawBufferPointer) throws { try writeAll(block) }

    @inline(__always)
    func receive(scratch: UnsafeMutableRawBufferPointer) throws -> Int {
        while true {
            let n = recv(fd, scratch.baseAddress, scratch.count, 0)
            if n >= 0 { return n }
            if errno == EAGAIN { throw ReadTimedOut() }  // SO_RCVTIMEO
            if errno != EINTR { throw Failure("Unix socket read failed: \(errorText())") }
        }
    }

    func readExactly(_ buffer: UnsafeMutableRawBufferPointer) throws -> Bool {
        try readExactly(buffer) { try receive(scratch: $0) }
    }

    @inline(__always)
    func writeAll(_ buffer: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < buffer.count {
            let n = Glibc.send(fd, buffer.baseAddress! + done, buffer.count - done, Int32(MSG_NOSIGNAL))
            if n < 0 {
                if errno == EINTR { continue }
                throw Failure("Unix socket write failed: \(errorText())")
            }
            done += n
        }
    }

    func shutdownWrite() throws {
        guard Glibc.shutdown(fd, Int32(SHUT_WR)) == 0 else { throw Failure("Unix socket shutdown failed: \(errorText())") }
    }

    /// Wakes a blocked call from another thread (close alone would not, and would free the number for reuse).
    func abort() {
        if fd >= 0 { Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
    }

    func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }

    func hasInput() -> Bool {
        var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&entry, 1, 0) > 0
    }

    func setReadTimeout(_ seconds: Double?) {
        let s = seconds ?? 0
        var value = timeval(tv_sec: Int(s), tv_usec: Int((s - s.rounded(.down)) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &value, socklen_t(MemoryLayout<timeval>.size))
    }
}

/// The listening half, for the server.
final class UnixListener {
    let fd: Int32

    init(port: Int) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Failure("unable to make a Unix socket: \(errorText())") }
        var (address, length) = UnixStream.address(port: port)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard bound == 0, listen(fd, 128) == 0 else {
            let text = errorText()
            Glibc.close(fd)
            throw Failure("unable to listen on the Unix socket @vmperf-\(port): \(text) (is another vmperf server on port \(port)?)")
        }
    }

    deinit { Glibc.close(fd) }

    func accept() throws -> UnixStream {
        let client = vms_accept4_cloexec(fd)
        guard client >= 0 else { throw Failure("accept on the Unix socket failed: \(errorText())") }
        return UnixStream(fd: client)
    }
}
