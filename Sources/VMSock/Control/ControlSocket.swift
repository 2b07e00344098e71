import CVMSock
import Glibc

/// Where a listener's control socket is bound: a name in the abstract Unix namespace (gone with its process,
/// nothing on disk), or a socket file in a directory (for registries shared across network namespaces).
struct ControlAddress: Sendable, Equatable, CustomStringConvertible {
    enum Kind: Sendable, Equatable { case abstract, path }
    let kind: Kind
    let name: String

    var description: String { kind == .abstract ? "@\(name)" : name }
}

/// The AF_UNIX SOCK_SEQPACKET control socket: the handshake travels over it, and afterwards it stays open as the
/// liveness channel (the peer's death closes it, which wakes anyone polling it).
enum ControlSocket {
    static func socketAddress(_ address: ControlAddress) throws(VMSockError) -> (sockaddr_un, socklen_t) {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let name = Array(address.name.utf8)
        let capacity = MemoryLayout.size(ofValue: addr.sun_path)
        guard !name.isEmpty, name.count < capacity - 1 else {
            throw VMSockError(code: ENAMETOOLONG, "\(address): name too long for a Unix socket (at most \(capacity - 2) bytes)")
        }
        // An abstract name starts with a NUL; a path ends with one (sockaddr_un() is zeroed).
        let offset = address.kind == .abstract ? 1 : 0
        withUnsafeMutableBytes(of: &addr.sun_path) { path in
            path.baseAddress!.advanced(by: offset).copyMemory(from: name, byteCount: name.count)
        }
        let length = MemoryLayout<sa_family_t>.size + offset + name.count + (1 - offset)
        return (addr, socklen_t(length))
    }

    static func makeSocket(nonBlocking: Bool = false) throws(VMSockError) -> Descriptor {
        let type = Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
            | (nonBlocking ? Int32(SOCK_NONBLOCK.rawValue) : 0)
        return try Sys.socket(AF_UNIX, type, "socket(AF_UNIX, SOCK_SEQPACKET)")
    }

    static func listen(_ address: ControlAddress, backlog: Int32) throws(VMSockError) -> Descriptor {
        let fd = try makeSocket()
        do {
            try withSocketAddress(address) { (addr, length) throws(VMSockError) in
                try Sys.bind(fd.raw, addr, length, "bind(\(address))")
            }
        } catch where error.code == EADDRINUSE {
            throw VMSockError(code: EADDRINUSE, "\(address) is already bound by another socket")
        }
        try Sys.listen(fd.raw, backlog: backlog, "listen(\(address))")
        return fd
    }

    /// Connects, waiting at most `timeoutMs` for room in the listener's backlog (a listener that does not accept
    /// would otherwise keep connect blocked for good).
    static func connect(_ address: ControlAddress, timeoutMs: Int32) throws(VMSockError) -> Descriptor {
        let fd = try makeSocket()
        let limit = timeval(tv_sec: Int(timeoutMs / 1000), tv_usec: Int(timeoutMs % 1000) * 1000)
        try Sys.setOption(fd.raw, SOL_SOCKET, SO_SNDTIMEO, limit, "setsockopt(SO_SNDTIMEO)")
        if try !connectCall(fd.raw, address) {
            throw VMSockError(code: ETIMEDOUT, "\(address) did not accept within \(timeoutMs) ms (its backlog is full)")
        }
        return fd
    }

    /// Connects without waiting: the socket, or nil when the listener's backlog is full (AF_UNIX connect does not
    /// complete later: try again). For the async connect.
    static func connectNow(_ address: ControlAddress) throws(VMSockError) -> Descriptor? {
        let fd = try makeSocket(nonBlocking: true)
        if try !connectCall(fd.raw, address) { return nil }
        // Blocking again, as `connect` leaves it: the connection's code expects that of its liveness socket. The
        // socket is ours and new, so O_NONBLOCK is its only status flag: one fcntl, without asking first.
        try Sys.clearStatusFlags(fd.raw)
        return fd
    }

    /// The connect call itself. Returns false when the listener's backlog is full (EAGAIN; a blocking socket says
    /// so once its send timeout passes); nobody listening is ECONNREFUSED.
    private static func connectCall(_ fd: Int32, _ address: ControlAddress) throws(VMSockError) -> Bool {
        do {
            return try withSocketAddress(address) { (addr, length) throws(VMSockError) in
                try Sys.connect(fd, addr, length, "connect(\(address))")
            } == .connected
        } catch where error.code == ECONNREFUSED || error.code == ENOENT {
            throw VMSockError(code: ECONNREFUSED, "nothing listens on \(address)")
        }
    }

    /// Calls `body` with `address` as a `sockaddr` and its length.
    private static func withSocketAddress<R>(
        _ address: ControlAddress, _ body: (UnsafePointer<sockaddr>, socklen_t) throws(VMSockError) -> R
    ) throws(VMSockError) -> R {
        var (addr, length) = try socketAddress(address)
        return try withUnsafePointer(to: &addr) { (pointer) throws(VMSockError) -> R in
            try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { (addr) throws(VMSockError) -> R in
                try body(addr, length)
            }
        }
    }

    static func peerCredentials(_ fd: Int32) throws(VMSockError) -> PeerCredentials {
        try Sys.peerCredentials(fd)
    }

    /// Sends one message, with `descriptors` attached by SCM_RIGHTS. Never raises SIGPIPE. `waits` false: fails
    /// with EAGAIN rather than wait for room (MSG_DONTWAIT), for a socket whose peer may never read.
    static func send(_ fd: Int32, _ bytes: [UInt8], descriptors: [Int32], waits: Bool = true) throws(VMSockError) {
        let controlLength = descriptors.isEmpty ? 0 : vms_cmsg_space(descriptors.count * MemoryLayout<Int32>.size)
        var control = [UInt8](repeating: 0, count: max(controlLength, 1))
        var payload = bytes
        let outcome = payload.withUnsafeMutableBytes { data in
            control.withUnsafeMutableBytes { control in
                var iov = iovec(iov_base: data.baseAddress, iov_len: data.count)
                return withUnsafeMutablePointer(to: &iov) { iovPointer in
                    var msg = msghdr()
                    msg.msg_iov = iovPointer
                    msg.msg_iovlen = 1
                    if !descriptors.isEmpty {
                        msg.msg_control = control.baseAddress
                        msg.msg_controllen = controlLength
                        let cmsg = vms_cmsg_firsthdr(&msg)!
                        cmsg.pointee.cmsg_level = SOL_SOCKET
                        cmsg.pointee.cmsg_type = Int32(SCM_RIGHTS)
                        cmsg.pointee.cmsg_len = vms_cmsg_len(descriptors.count * MemoryLayout<Int32>.size)
                        let slot = UnsafeMutableRawPointer(vms_cmsg_data(cmsg)!)
                        for (i, d) in descriptors.enumerated() {
                            slot.storeBytes(of: d, toByteOffset: i * MemoryLayout<Int32>.size, as: Int32.self)
                        }
                    }
                    return Result { () throws(VMSockError) in
                        try Sys.sendMessage(fd, &msg, Int32(MSG_NOSIGNAL) | (waits ? 0 : Int32(MSG_DONTWAIT)), "sendmsg(control)")
                    }
                }
            }
        }
        let sent: Int
        do {
            sent = try outcome.get()
        } catch where error.code == EPIPE || error.code == ECONNRESET {
            throw VMSockError(code: ECONNRESET, "peer closed the control socket during the handshake")
        }
        guard sent == bytes.count else { throw .protocolFault("short send of a handshake message") }
    }

    /// A received message and the descriptors that came with it (owned: closed unless the caller keeps them).
    struct Received {
        var bytes: [UInt8]
        var descriptors: [Descriptor]
        var truncated: Bool
    }

    /// Polls `fd` without sleeping until it is readable or `nanoseconds` pass, yielding the core between looks.
    static func spinUntilReadable(_ fd: Int32, nanoseconds: Int64) {
        guard nanoseconds > 0 else { return }
        let end = monotonicNanos() &+ nanoseconds
        while (try? Sys.isReady(fd, Int16(POLLIN))) == false && monotonicNanos() < end { Sys.yield() }
    }

    /// Receives one message, waiting at most `timeoutMs`. Room is left for more bytes and descriptors than any
    /// valid message has, so that an oversized or overfull message is seen as such (and its descriptors closed).
    static func receive(_ fd: Int32, timeoutMs: Int32) throws(VMSockError) -> Received {
        guard try Sys.wait(fd, Int16(POLLIN), until: .after(milliseconds: timeoutMs)) else {
            throw VMSockError(code: ETIMEDOUT, "peer did not answer the handshake within \(timeoutMs) ms")
        }
        return try receiveReadyOrQueued(fd)
    }

    /// Receives one message if one has arrived (or the peer hung up: an empty message); nil when nothing is there
    /// yet. Never waits.
    static func receiveIfReady(_ fd: Int32) throws(VMSockError) -> Received? {
        do throws(VMSockError) { return try receiveReadyOrQueued(fd) } catch where error.code == EAGAIN { return nil }
    }

    /// `receiveReady`, and once more after a reset: a peer that closed with our message unread resets the socket,
    /// and the reset is reported once, ahead of the messages it sent before closing (a reject saying why: a
    /// listener out of descriptors refuses that way before it reads our hello).
    private static func receiveReadyOrQueued(_ fd: Int32) throws(VMSockError) -> Received {
        do throws(VMSockError) { return try receiveReady(fd) } catch where error.code == ECONNRESET {
            if let queued = try? receiveReady(fd), !queued.bytes.isEmpty { return queued }
            throw error
        }
    }

    /// Receives one message that has arrived (the descriptor polled readable): never waits. A hang-up reads as an
    /// empty message; nothing there yet is EAGAIN.
    static func receiveReady(_ fd: Int32) throws(VMSockError) -> Received {
        let message: Sys.MessageWithDescriptors
        do {
            message = try Sys.receiveWithDescriptors(fd, byteCount: HandshakeMessage.size * 4, maxDescriptors: 16, "recvmsg(control)")
        } catch where error.code == ECONNRESET {
            throw VMSockError(code: ECONNRESET, "peer reset the control socket during the handshake")
        }
        let truncated = message.flags & (Int32(MSG_TRUNC) | Int32(MSG_CTRUNC)) != 0
        return Received(bytes: message.bytes, descriptors: message.descriptors, truncated: truncated)
    }
}
