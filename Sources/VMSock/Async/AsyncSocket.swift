import Glibc
import Synchronization

/// A `VMSocket` with async reads and writes: a task that would block awaits instead, and an event loop's thread
/// wakes it when the socket is ready.
///
/// Where the work happens: reads and writes run on the calling task, as non-blocking calls on the socket; the
/// loop thread only waits. So a read or write that finds data (or room) makes no system call and never touches
/// the loop; one that must wait arms the socket (announce, re-check), then sleeps until the loop sees the doorbell.
///
/// Concurrency: one task may read while another writes. A second read (or write) while one is in progress throws
/// EBUSY instead of corrupting the stream. The wrapped socket is put in non-blocking mode; do not use its blocking
/// calls meanwhile.
///
/// Cancellation: a read or write in a cancelled task throws ECANCELED promptly, whether it was waiting or not yet
/// started. The socket stays open and usable: a cancelled `read` consumed nothing; a cancelled `write` wrote
/// nothing; a cancelled `writeAll` may have written a prefix (its error says how much), so the peer's view of the
/// stream is cut mid-message: usually you close the socket then.
public final class AsyncSocket: Sendable {
    public let socket: VMSocket
    public let loop: EventLoop
    private let readWaiter: ReadinessWaiter
    private let writeWaiter: ReadinessWaiter
    private let reading = Atomic<Bool>(false)
    private let writing = Atomic<Bool>(false)

    /// Binds `socket` to `loop` for waiting, and makes it non-blocking. Any thread.
    public init(_ socket: VMSocket, on loop: EventLoop) throws(VMSockError) {
        self.socket = socket
        self.loop = loop
        socket.isNonBlocking = true
        readWaiter = try ReadinessWaiter(loop: loop, interest: socket.readInterest)
        writeWaiter = try ReadinessWaiter(loop: loop, interest: socket.writeInterest)
    }

    // MARK: Reading

    /// Reads up to `buffer.count` bytes, waiting until at least one is readable.
    /// - Returns: the number read; 0 at end of stream.
    /// - Throws: ECANCELED (nothing consumed), EBUSY (another read is in progress), and the socket's own errors
    ///   (EPROTO, EBADF, ...).
    public func read(into buffer: UnsafeMutableRawBufferPointer) async throws(VMSockError) -> Int {
        try await readSome { () throws(VMSockError) in try socket.read(into: buffer) }
    }

    /// Reads up to `maximum` bytes into a new array; an empty array means end of stream.
    public func read(upTo maximum: Int) async throws(VMSockError) -> [UInt8] {
        guard maximum > 0 else { throw VMSockError(code: EINVAL, "read(upTo:) needs a positive byte count") }
        var bytes = [UInt8](repeating: 0, count: maximum)
        let count = try await readSome { () throws(VMSockError) in
            try bytes.withUnsafeMutableBytes { buffer in
                Result { () throws(VMSockError) in try socket.read(into: buffer) }
            }.get()
        }
        bytes.removeSubrange(count...)
        return bytes
    }

    /// The read loop: try, arm, wait, until `attempt` reads (or fails otherwise than with EAGAIN).
    private func readSome(_ attempt: () throws(VMSockError) -> Int) async throws(VMSockError) -> Int {
        try begin(reading, "read")
        defer { reading.store(false, ordering: .releasing) }
        while true {
            if Task.isCancelled {
                socket.disarmReadable()  // we stop waiting: the peer need not ring for us any more
                throw VMSockError(code: ECANCELED, "read cancelled; nothing was consumed")
            }
            if let count = try Self.unlessEAGAIN(attempt) { return count }
            if try socket.armReadable() { continue }
            await readWaiter.wait()
        }
    }

    /// The incoming bytes as an async sequence of chunks of at most `maximumSize` bytes, ending at end of stream.
    /// Iterating is reading: do not read otherwise meanwhile. Cancelling the iterating task throws ECANCELED.
    public func chunks(maximumSize: Int = 64 << 10) -> IncomingChunks {
        IncomingChunks(socket: self, maximumSize: maximumSize)
    }

    // MARK: Writing

    /// Writes as many bytes as fit, waiting until at least one does.
    /// - Returns: the number written, from 1 to `buffer.count` (0 only for an empty buffer).
    /// - Throws: ECANCELED (nothing written), EBUSY (another write is in progress), EPIPE, EBADF, EPROTO.
    public func write(_ buffer: UnsafeRawBufferPointer) async throws(VMSockError) -> Int {
        try begin(writing, "write")
        defer { writing.store(false, ordering: .releasing) }
        guard buffer.count > 0 else { return 0 }
        return try await writeSome("write cancelled; nothing was written") { () throws(VMSockError) in
            try socket.write(buffer)
        }
    }

    /// Writes every byte, waiting as needed.
    /// - Throws: ECANCELED with the count already written in its message, EBUSY, EPIPE, EBADF, EPROTO.
    public func writeAll(_ buffer: UnsafeRawBufferPointer) async throws(VMSockError) {
        try begin(writing, "write")
        defer { writing.store(false, ordering: .releasing) }
        var done = 0
        while done < buffer.count {
            done += try await writeSome("write cancelled after \(done) of \(buffer.count) bytes") {
                () throws(VMSockError) in try socket.write(UnsafeRawBufferPointer(rebasing: buffer[done...]))
            }
        }
    }

    public func writeAll(_ bytes: [UInt8]) async throws(VMSockError) {
        try begin(writing, "write")
        defer { writing.store(false, ordering: .releasing) }
        var done = 0
        while done < bytes.count {
            done += try await writeSome("write cancelled after \(done) of \(bytes.count) bytes") {
                () throws(VMSockError) in
                try bytes.withUnsafeBytes { buffer in
                    Result { () throws(VMSockError) in
                        try socket.write(UnsafeRawBufferPointer(rebasing: buffer[done...]))
                    }
                }.get()
            }
        }
    }

    /// The write loop: try, arm, wait, until `attempt` writes (or fails otherwise than with EAGAIN).
    private func writeSome(_ cancelled: @autoclosure () -> String, _ attempt: () throws(VMSockError) -> Int)
        async throws(VMSockError) -> Int
    {
        while true {
            if Task.isCancelled {
                socket.disarmWritable()  // we stop waiting: the peer need not ring for us any more
                throw VMSockError(code: ECANCELED, cancelled())
            }
            if let count = try Self.unlessEAGAIN(attempt) { return count }
            if try socket.armWritable() { continue }
            await writeWaiter.wait()
        }
    }

    // MARK: Shutdown and close

    /// As `VMSocket.shutdown`. A task waiting to read (after `.read`) or write (after `.write`) wakes and sees it.
    public func shutdown(_ direction: VMSocket.ShutdownDirection) throws(VMSockError) {
        try socket.shutdown(direction)
    }

    /// Closes the socket; tasks waiting on it wake and fail with EBADF. Idempotent.
    public func close() { socket.close() }

    // MARK: Helpers

    private func begin(_ flag: borrowing Atomic<Bool>, _ what: String) throws(VMSockError) {
        if flag.exchange(true, ordering: .acquiring) {
            throw VMSockError(code: EBUSY, "another \(what) is already in progress on this socket")
        }
    }

    /// Runs a non-blocking call; nil when it said EAGAIN.
    @inline(__always)
    private static func unlessEAGAIN(_ call: () throws(VMSockError) -> Int) throws(VMSockError) -> Int? {
        do throws(VMSockError) { return try call() } catch {
            if error.code == EAGAIN { return nil }
            throw error
        }
    }
}

/// The incoming bytes of an `AsyncSocket`, chunk by chunk, until end of stream. Made by `AsyncSocket.chunks`.
public struct IncomingChunks: AsyncSequence, Sendable {
    public typealias Element = [UInt8]
    public typealias Failure = VMSockError

    let socket: AsyncSocket
    let maximumSize: Int

    public func makeAsyncIterator() -> Iterator { Iterator(socket: socket, maximumSize: maximumSize) }

    public struct Iterator: AsyncIteratorProtocol {
        let socket: AsyncSocket
        let maximumSize: Int
        var finished = false

        /// The next chunk; nil at end of stream. Throws ECANCELED when the task is cancelled, or a socket error.
        public mutating func next() async throws(VMSockError) -> [UInt8]? {
            guard !finished else { return nil }
            let chunk = try await socket.read(upTo: maximumSize)
            if chunk.isEmpty { finished = true }
            return chunk.isEmpty ? nil : chunk
        }
    }
}
