import CVMSock
import Glibc

// Sockets: making, binding, connecting and accepting them, their options, shutdown, the control socket's messages,
// and the data path's sends and receives. See `Sys` in Syscalls.swift for the rules every call here follows.

extension Sys {
    // MARK: Making and connecting sockets

    /// socket(2) of `domain` and `type` (with its SOCK_CLOEXEC and SOCK_NONBLOCK bits), protocol 0.
    static func socket(
        _ domain: Int32, _ type: Int32, _ what: @autoclosure () -> String
    ) throws(VMSockError) -> Descriptor {
        Descriptor(try check(what()) { Glibc.socket(domain, type, 0) })
    }

    /// socketpair(2) in AF_UNIX: the two connected ends.
    static func socketPair(
        _ type: Int32, _ what: @autoclosure () -> String
    ) throws(VMSockError) -> (Descriptor, Descriptor) {
        var ends: [Int32] = [-1, -1]
        try check(what()) { socketpair(AF_UNIX, type, 0, &ends) }
        return (Descriptor(ends[0]), Descriptor(ends[1]))
    }

    /// bind(2). Callers put the errnos they expect (EADDRINUSE, ...) in their own words.
    static func bind(
        _ fd: Int32, _ address: UnsafePointer<sockaddr>, _ length: socklen_t, _ what: @autoclosure () -> String
    ) throws(VMSockError) {
        try check(what()) { Glibc.bind(fd, address, length) }
    }

    /// listen(2).
    static func listen(_ fd: Int32, backlog: Int32, _ what: @autoclosure () -> String) throws(VMSockError) {
        try check(what()) { Glibc.listen(fd, backlog) }
    }

    /// How a connect that did not fail went on.
    enum ConnectProgress: Equatable {
        /// Connected.
        case connected
        /// EINPROGRESS (or EALREADY): a non-blocking TCP connect under way. Poll for POLLOUT, then read SO_ERROR.
        case inProgress
        /// EAGAIN: an AF_UNIX listener's backlog is full (a blocking socket says so once its send timeout passes;
        /// AF_UNIX connect does not complete later: try again). For TCP: no local port is free.
        case wouldBlock
    }

    /// connect(2). EINTR is retried: Linux leaves an AF_UNIX socket unconnected after a signal, so the retry
    /// starts over; a non-blocking TCP connect never sleeps and so never sees one (were it to, the retry would
    /// say EALREADY or EISCONN, read here as under way and connected).
    /// - Throws: every other errno, saying `what` failed; callers put the ones they expect (ECONNREFUSED, ...) in
    ///   their own words.
    static func connect(
        _ fd: Int32, _ address: UnsafePointer<sockaddr>, _ length: socklen_t, _ what: @autoclosure () -> String
    ) throws(VMSockError) -> ConnectProgress {
        if retryingEINTR({ Glibc.connect(fd, address, length) }) == 0 { return .connected }
        switch errno {
        case EINPROGRESS, EALREADY: return .inProgress
        case EISCONN: return .connected
        case EAGAIN: return .wouldBlock
        case let code: throw VMSockError.system(what(), errno: code)
        }
    }

    /// accept4(SOCK_CLOEXEC) without waiting, on a non-blocking Unix listening socket: the connection, or nil when
    /// none is waiting (EAGAIN) or it died before we took it (ECONNABORTED).
    static func acceptUnix(_ fd: Int32, what: @autoclosure () -> String) throws(VMSockError) -> Descriptor? {
        let accepted = retryingEINTR { vms_accept4_cloexec(fd) }
        if accepted >= 0 { return Descriptor(accepted) }
        let code = errno
        if code == EAGAIN || code == ECONNABORTED { return nil }
        throw VMSockError.system(what(), errno: code)
    }

    /// accept4(SOCK_CLOEXEC | SOCK_NONBLOCK) without waiting, on a non-blocking Unix listening socket: the
    /// connection, or nil when none is waiting (EAGAIN) or it died before we took it (ECONNABORTED). EMFILE and
    /// ENFILE are thrown: the caller must stop polling the listener until a descriptor is free, or it spins.
    static func acceptUnixNonBlocking(_ fd: Int32, what: @autoclosure () -> String) throws(VMSockError) -> Descriptor? {
        let accepted = retryingEINTR { vms_accept4_cloexec_nonblock(fd) }
        if accepted >= 0 { return Descriptor(accepted) }
        let code = errno
        if code == EAGAIN || code == ECONNABORTED { return nil }
        throw VMSockError.system(what(), errno: code)
    }

    /// accept4(SOCK_CLOEXEC | SOCK_NONBLOCK) without waiting, on a non-blocking TCP listening socket: the
    /// connection, or nil when none is waiting (EAGAIN). A connection that died before we took it (ECONNABORTED,
    /// and the network errors accept(2) says to treat like EAGAIN: EPROTO, ENETDOWN, ...) is passed over for the
    /// next one.
    static func acceptTCP(_ fd: Int32, what: @autoclosure () -> String) throws(VMSockError) -> Descriptor? {
        while true {
            let accepted = retryingEINTR { vms_accept4_cloexec_nonblock(fd) }
            if accepted >= 0 { return Descriptor(accepted) }
            switch errno {
            case EAGAIN: return nil
            case ECONNABORTED, EPROTO, ENETDOWN, ENOPROTOOPT, EHOSTDOWN, ENONET, EHOSTUNREACH, EOPNOTSUPP, ENETUNREACH:
                continue
            case let code: throw VMSockError.system(what(), errno: code)
            }
        }
    }

    // MARK: Options and shutdown

    /// getsockopt(2) of a fixed-size option (an Int32, a tcp_info: a plain C value), read over `initial`.
    static func getOption<T>(
        _ fd: Int32, _ level: Int32, _ name: Int32, _ initial: T, _ what: @autoclosure () -> String
    ) throws(VMSockError) -> T {
        var value = initial
        var length = socklen_t(MemoryLayout<T>.size)
        try check(what()) {
            withUnsafeMutableBytes(of: &value) { getsockopt(fd, level, name, $0.baseAddress, &length) }
        }
        return value
    }

    /// setsockopt(2) of a fixed-size option (an Int32, a timeval: a plain C value).
    static func setOption<T>(
        _ fd: Int32, _ level: Int32, _ name: Int32, _ value: T, _ what: @autoclosure () -> String
    ) throws(VMSockError) {
        try check(what()) {
            withUnsafeBytes(of: value) { setsockopt(fd, level, name, $0.baseAddress, socklen_t($0.count)) }
        }
    }

    /// SO_PEERCRED of a connected AF_UNIX socket: who is at the other end (vms_peer_credentials; EPROTO for an
    /// answer of the wrong size).
    static func peerCredentials(_ fd: Int32) throws(VMSockError) -> PeerCredentials {
        var pid: pid_t = 0
        var uid: uid_t = 0
        var gid: gid_t = 0
        try check("getsockopt(SO_PEERCRED)") { vms_peer_credentials(fd, &pid, &uid, &gid) }
        return PeerCredentials(pid: pid, uid: uid, gid: gid)
    }

    /// shutdown(2) of one direction or both (`how`: SHUT_RD, SHUT_WR, SHUT_RDWR). ENOTCONN is no failure: the peer
    /// already reset the connection, and there is nothing left to shut down.
    static func shutdown(_ fd: Int32, _ how: Int32, _ what: @autoclosure () -> String) throws(VMSockError) {
        if Glibc.shutdown(fd, how) != 0 && errno != ENOTCONN { throw VMSockError.system(what()) }
    }

    /// shutdown(SHUT_RDWR), to wake whoever waits on a socket. Its failure is ignored: a socket already shut down
    /// or reset (ENOTCONN), or a descriptor that is no socket (ENOTSOCK), has nobody left to wake.
    static func shutdown(_ fd: Int32) { _ = Glibc.shutdown(fd, Int32(SHUT_RDWR)) }

    // MARK: Control messages

    /// sendmsg(2) of a control message (SCM_RIGHTS attached): the bytes sent.
    static func sendMessage(
        _ fd: Int32, _ message: UnsafePointer<msghdr>, _ flags: Int32, _ what: @autoclosure () -> String
    ) throws(VMSockError) -> Int {
        try check(what()) { sendmsg(fd, message, flags) }
    }

    /// recvmsg(2) of a control message: the bytes received, 0 when the peer hung up.
    static func receiveMessage(
        _ fd: Int32, _ message: UnsafeMutablePointer<msghdr>, _ flags: Int32, _ what: @autoclosure () -> String
    ) throws(VMSockError) -> Int {
        try check(what()) { recvmsg(fd, message, flags) }
    }

    /// A message received with the descriptors that came with it; the descriptors are ours (closed when dropped).
    struct MessageWithDescriptors {
        /// Empty when the peer hung up.
        var bytes: [UInt8]
        var descriptors: [Descriptor]
        /// recvmsg's msg_flags: MSG_TRUNC, MSG_CTRUNC (more bytes or descriptors came than there was room for, or
        /// we could not take the descriptors in).
        var flags: Int32
    }

    /// One recvmsg(MSG_DONTWAIT | MSG_CMSG_CLOEXEC) of up to `byteCount` bytes and `maxDescriptors` descriptors
    /// (SCM_RIGHTS). Never waits: nothing there yet is EAGAIN.
    static func receiveWithDescriptors(
        _ fd: Int32, byteCount: Int, maxDescriptors: Int, _ what: @autoclosure () -> String
    ) throws(VMSockError) -> MessageWithDescriptors {
        let controlLength = vms_cmsg_space(maxDescriptors * MemoryLayout<Int32>.size)
        var control = [UInt8](repeating: 0, count: controlLength)
        var data = [UInt8](repeating: 0, count: byteCount)
        var msg = msghdr()
        let outcome = data.withUnsafeMutableBytes { data in
            control.withUnsafeMutableBytes { control in
                var iov = iovec(iov_base: data.baseAddress, iov_len: data.count)
                return withUnsafeMutablePointer(to: &iov) { iovPointer in
                    msg.msg_iov = iovPointer
                    msg.msg_iovlen = 1
                    msg.msg_control = control.baseAddress
                    msg.msg_controllen = controlLength
                    return Result { () throws(VMSockError) in
                        try receiveMessage(fd, &msg, Int32(MSG_CMSG_CLOEXEC) | Int32(MSG_DONTWAIT), what())
                    }
                }
            }
        }
        let count = try outcome.get()
        var descriptors: [Descriptor] = []
        control.withUnsafeMutableBytes { control in
            msg.msg_control = control.baseAddress
            var cmsg = vms_cmsg_firsthdr(&msg)
            while let header = cmsg {
                if header.pointee.cmsg_level == SOL_SOCKET && header.pointee.cmsg_type == Int32(SCM_RIGHTS) {
                    let length = Int(header.pointee.cmsg_len) - vms_cmsg_len(0)
                    let slot = UnsafeRawPointer(vms_cmsg_data(header)!)
                    for i in 0..<max(0, length / MemoryLayout<Int32>.size) {
                        descriptors.append(Descriptor(slot.loadUnaligned(fromByteOffset: i * 4, as: Int32.self)))
                    }
                }
                cmsg = vms_cmsg_nxthdr(&msg, header)
            }
        }
        return MessageWithDescriptors(bytes: Array(data.prefix(count)), descriptors: descriptors, flags: msg.msg_flags)
    }

    // MARK: The data path
    // Raw results (-1 with errno set), EINTR retried, inlined into the caller: see `Sys`.

    /// recv(2): the bytes received, 0 at end of stream, -1 with errno set.
    @inline(__always)
    static func receive(_ fd: Int32, _ base: UnsafeMutableRawPointer?, _ count: Int, _ flags: Int32) -> Int {
        retryingEINTR { recv(fd, base, count, flags) }
    }

    /// readv(2): the bytes read into `vectors`, 0 at end of stream, -1 with errno set.
    @inline(__always)
    static func readv(_ fd: Int32, _ vectors: UnsafePointer<iovec>, _ count: Int32) -> Int {
        retryingEINTR { Glibc.readv(fd, vectors, count) }
    }

    /// send(2): the bytes sent, -1 with errno set.
    @inline(__always)
    static func send(_ fd: Int32, _ base: UnsafeRawPointer?, _ count: Int, _ flags: Int32) -> Int {
        retryingEINTR { Glibc.send(fd, base, count, flags) }
    }

    /// sendmsg(2) of the vectors in `message`: the bytes sent, -1 with errno set.
    @inline(__always)
    static func sendMessage(_ fd: Int32, _ message: UnsafePointer<msghdr>, _ flags: Int32) -> Int {
        retryingEINTR { sendmsg(fd, message, flags) }
    }

    /// send(2) of one byte to wake a sleeper on the other end (a doorbell ring), never blocking (MSG_DONTWAIT, which
    /// no file flag can override) nor raising SIGPIPE. Its failure is ignored: a full buffer (EAGAIN) holds rings
    /// already, which wake the sleeper as this one would; a receiver gone (EPIPE, ECONNRESET) has nobody to wake.
    @inline(__always)
    static func sendWakeUp(_ fd: Int32) {
        var byte: UInt8 = 1
        _ = send(fd, &byte, 1, Int32(MSG_DONTWAIT) | Int32(MSG_NOSIGNAL))
    }
}
