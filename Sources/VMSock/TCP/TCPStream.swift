import CVMSock
import Glibc
import Synchronization

/// The TCP engine behind `VMSocket`: a real, connected TCP socket with the same calls, errors and options as the
/// shared-memory engine.
///
/// The descriptor is always O_NONBLOCK; a blocking call waits in `poll`, so that timeouts (ETIMEDOUT) and a close
/// from another thread (EBADF) behave as they do over shared memory. The in-place calls have no ring to lend
/// here, so they go through a private buffer: same contract, one copy.
final class TCPStream: StreamEngine, @unchecked Sendable {  // reader state is touched by the one reading thread only
    let socket: GuardedDescriptor
    let settings = EngineSettings(spinNanos: nil)  // the kernel does the waiting
    var transport: Transport { .tcp }

    /// Bytes received for `readInPlace` and not consumed yet; later reads take them first.
    @exclusivity(unchecked) private var inbound = StagingBuffer()
    @exclusivity(unchecked) private var outbound = StagingBuffer()

    /// Takes over a connected, non-blocking TCP socket.
    init(_ descriptor: Descriptor) {
        socket = GuardedDescriptor(descriptor.release())
    }

    /// Bytes the kernel may buffer for sending (SO_SNDBUF): the counterpart of a ring's size.
    var sendCapacity: Int { option(SO_SNDBUF) }
    var receiveCapacity: Int { option(SO_RCVBUF) }
    var waitStatistics: WaitStatistics? { nil }
    var peerCredentials: PeerCredentials? { nil }  // TCP cannot know who is at the other end

    /// The socket itself, for both directions: TCP needs no announcement before a poll.
    var readInterest: PollInterest { PollInterest(descriptor: socket.raw, events: Int16(POLLIN)) }
    var writeInterest: PollInterest { PollInterest(descriptor: socket.raw, events: Int16(POLLOUT)) }
    func disarmReadable() {}
    func disarmWritable() {}

    /// Segments the kernel sent again (TCP_INFO's tcpi_total_retrans), or nil when it cannot say (or the
    /// socket is closed).
    var retransmissions: Int? { info.map { Int($0.tcpi_total_retrans) } }

    /// The congestion window in bytes (TCP_INFO's tcpi_snd_cwnd segments of tcpi_snd_mss), or nil as above.
    var congestionWindow: Int? { info.map { Int($0.tcpi_snd_cwnd) * Int($0.tcpi_snd_mss) } }

    private var info: tcp_info? {
        try? socket.use("socket") { fd throws(VMSockError) -> tcp_info in
            try Sys.getOption(fd, Int32(IPPROTO_TCP), TCP_INFO, tcp_info(), "getsockopt(TCP_INFO)")
        }
    }

    /// An integer socket option (SOL_SOCKET), or 0 when the socket is closed or the kernel cannot say.
    private func option(_ name: Int32) -> Int {
        let value = try? socket.use("socket") { fd throws(VMSockError) in
            try Sys.getOption(fd, SOL_SOCKET, name, Int32(0), "getsockopt(SOL_SOCKET, \(name))")
        }
        return Int(value ?? 0)
    }

    // MARK: Reading

    func read(into buffer: UnsafeMutableRawBufferPointer) throws(VMSockError) -> Int {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        if inbound.count > 0 { return inbound.take(into: buffer) }
        return try socket.use("socket") { fd throws(VMSockError) in
            try transfer(fd, reading: true) { Sys.receive(fd, base, buffer.count, 0) }
        }
    }

    func readv(_ vectors: UnsafeBufferPointer<iovec>) throws(VMSockError) -> Int {
        if inbound.count > 0, let first = vectors.first(where: { $0.iov_len > 0 }) {
            return inbound.take(into: UnsafeMutableRawBufferPointer(start: first.iov_base, count: first.iov_len))
        }
        guard let base = vectors.baseAddress else { return 0 }
        return try socket.use("socket") { fd throws(VMSockError) in
            try transfer(fd, reading: true) { Sys.readv(fd, base, Int32(vectors.count)) }
        }
    }

    func readInPlace(_ body: (UnsafeRawBufferPointer) throws -> Int) throws -> Int {
        if inbound.count == 0 {
            inbound.reserve(64 << 10)
            let space = inbound.freeSpace
            let received = try socket.use("socket") { fd throws(VMSockError) in
                try transfer(fd, reading: true) { Sys.receive(fd, space.baseAddress, space.count, 0) }
            }
            if received == 0 { return 0 }
            inbound.count = received
        }
        let view = inbound.readable
        let used = try body(view)
        guard used >= 0 && used <= view.count else {
            throw VMSockError.inPlaceOverrun("readInPlace", used: used, given: view.count)
        }
        inbound.consume(used)
        return used
    }

    // MARK: Writing

    func write(_ buffer: UnsafeRawBufferPointer) throws(VMSockError) -> Int {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        return try socket.use("socket") { fd throws(VMSockError) in
            try transfer(fd, reading: false) { Sys.send(fd, base, buffer.count, Int32(MSG_NOSIGNAL)) }
        }
    }

    func writev(_ vectors: UnsafeBufferPointer<iovec>) throws(VMSockError) -> Int {
        guard let base = vectors.baseAddress, vectors.contains(where: { $0.iov_len > 0 }) else { return 0 }
        return try socket.use("socket") { fd throws(VMSockError) in
            try transfer(fd, reading: false) {
                var message = msghdr()
                message.msg_iov = UnsafeMutablePointer(mutating: base)  // sendmsg only reads it
                message.msg_iovlen = vectors.count
                return Sys.sendMessage(fd, &message, Int32(MSG_NOSIGNAL))
            }
        }
    }

    /// Stages `body`'s bytes in a private buffer and sends them all before returning. Non-blocking, it throws
    /// EAGAIN up front when the socket has no room, and may then wait for the kernel to take the whole chunk.
    func writeInPlace(minimum: Int, _ body: (UnsafeMutableRawBufferPointer) throws -> Int) throws -> Int {
        if settings.nonBlocking.load(ordering: .relaxed) {
            let writable = try socket.use("socket") { fd throws(VMSockError) in try Sys.isReady(fd, Int16(POLLOUT)) }
            if !writable { throw VMSockError(code: EAGAIN, "no room to write yet (non-blocking socket)") }
        }
        outbound.reserve(max(64 << 10, minimum))
        let space = outbound.freeSpace
        let used = try body(space)
        guard used >= 0 && used <= space.count else {
            throw VMSockError.inPlaceOverrun("writeInPlace", used: used, given: space.count)
        }
        var sent = 0
        while sent < used {
            let chunk = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(space)[sent..<used])
            sent += try socket.use("socket") { fd throws(VMSockError) in
                try transfer(fd, reading: false, blocking: true) {
                    Sys.send(fd, chunk.baseAddress, chunk.count, Int32(MSG_NOSIGNAL))
                }
            }
        }
        return used
    }

    // MARK: Waiting

    /// Runs `call` (a recv or send on the non-blocking descriptor, EINTR retried by `Sys`), waiting in poll while
    /// it would block, unless the socket is non-blocking. Maps errors to what a blocking TCP socket would say.
    @inline(__always)
    private func transfer(
        _ fd: Int32, reading: Bool, blocking: Bool = false, _ call: () -> Int
    ) throws(VMSockError) -> Int {
        var deadline: Deadline? = nil
        while true {
            let result = call()
            if result >= 0 { return result }
            let code = errno
            guard code == EAGAIN else { throw failure(code, reading: reading) }
            if settings.nonBlocking.load(ordering: .relaxed) && !blocking {
                throw VMSockError(code: EAGAIN, reading ? "no data to read yet (non-blocking socket)" : "no room to write yet (non-blocking socket)")
            }
            let timeout = reading
                ? settings.readTimeout.load(ordering: .relaxed) : settings.writeTimeout.load(ordering: .relaxed)
            let end = deadline ?? .after(nanoseconds: timeout)
            deadline = end
            try wait(fd, events: reading ? POLLIN : POLLOUT, until: end, what: reading ? "read" : "write")
        }
    }

    private func wait(_ fd: Int32, events: Int32, until deadline: Deadline, what: String) throws(VMSockError) {
        if try !Sys.wait(fd, Int16(events), until: deadline) && deadline.hasPassed {
            throw VMSockError(code: ETIMEDOUT, "\(what) timed out")
        }
        if socket.isClosed { throw VMSockError(code: EBADF, "socket is closed") }
    }

    private func failure(_ code: Int32, reading: Bool) -> VMSockError {
        if socket.isClosed { return VMSockError(code: EBADF, "socket is closed") }
        switch code {
        case EPIPE: return VMSockError(code: EPIPE, "cannot write: the connection is shut down for writing or the peer is gone")
        case ECONNRESET: return VMSockError(code: ECONNRESET, "the peer reset the connection")
        case ETIMEDOUT: return VMSockError(code: ETIMEDOUT, "the connection timed out (the peer stopped answering)")
        default: return VMSockError.system(reading ? "recv" : "send", errno: code)
        }
    }

    // MARK: Readiness, shutdown, close

    /// TCP needs no announcement: poll the socket itself. True when bytes wait in the in-place buffer.
    func armReadable() throws(VMSockError) -> Bool {
        if socket.isClosed { throw VMSockError(code: EBADF, "socket is closed") }
        return inbound.count > 0
    }

    /// TCP needs no announcement: poll the socket for POLLOUT.
    func armWritable() throws(VMSockError) -> Bool {
        if socket.isClosed { throw VMSockError(code: EBADF, "socket is closed") }
        return false
    }

    func shutdown(read: Bool, write: Bool) throws(VMSockError) {
        let how = read && write ? SHUT_RDWR : read ? SHUT_RD : SHUT_WR
        try socket.use("socket") { fd throws(VMSockError) in
            try Sys.shutdown(fd, Int32(how), "shutdown")  // ENOTCONN (the peer reset the connection) is no failure
        }
    }

    func close() { socket.close() }

    deinit {
        inbound.free()
        outbound.free()
    }
}

/// A private byte buffer for the in-place calls: allocated on first use, kept for the socket's life.
struct StagingBuffer {
    private var storage = UnsafeMutableRawBufferPointer(start: nil, count: 0)
    private var start = 0
    /// Bytes held, from `start`.
    var count = 0

    mutating func reserve(_ size: Int) {
        guard storage.count < size else { return }
        free()
        storage = .allocate(byteCount: size, alignment: 64)
        start = 0
        count = 0
    }

    var freeSpace: UnsafeMutableRawBufferPointer { storage }
    var readable: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: storage[start..<start + count]) }

    mutating func consume(_ used: Int) {
        start += used
        count -= used
        if count == 0 { start = 0 }
    }

    mutating func take(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        let n = min(count, buffer.count)
        buffer.baseAddress!.copyMemory(from: storage.baseAddress! + start, byteCount: n)
        consume(n)
        return n
    }

    mutating func free() {
        storage.deallocate()
        storage = UnsafeMutableRawBufferPointer(start: nil, count: 0)
    }
}
