import Glibc
import VMSock

/// What vmcat knows about its stdin across connections (with -k, later clients find it at end of file).
final class Stdin {
    /// epoll can watch it (pipe, terminal, socket); false for a regular file or /dev/null, which are read directly.
    let pollable: Bool
    var ended: Bool

    init(ignore: Bool) {
        let pollable = StandardIO.isPollable(0)
        self.pollable = pollable ?? false
        ended = ignore || pollable == nil
        if !ended { StandardIO.growPipe(0) }
        StandardIO.growPipe(1)
    }
}

/// One connection pumped both ways on one libevent loop thread: stdin to the socket, the socket to stdout.
///
/// The socket is non-blocking and watched through the loop (arm, then poll); stdin is watched when epoll can
/// watch it, and otherwise read whenever the socket has room (its write watch drives it). stdout is written
/// blocking, as nc does.
///
/// No copy that is not needed: stdin is read straight into the socket's outgoing ring (`writeInPlace`), and
/// stdout is written straight out of the incoming ring (`readInPlace`). Over shared memory a byte is copied once
/// by the kernel into the ring and once out of it, as between two pipes; over TCP the socket stages it in a private
/// buffer, as a read into our own buffer would.
///
/// Ending, as OpenBSD nc does: end of file on stdin shuts down our writing only with -N (or -q); -q N ends the
/// session N seconds after it; the peer's end of stream ends the session once stdout has it all; -w ends an idle
/// session. Exit status 0, or 1 with a one-line message for a failed read or write.
final class Session: @unchecked Sendable {  // used on its loop thread only (start is posted there once)
    /// Reads or writes per callback before the loop polls again, so one busy direction cannot starve the other.
    private static let roundsPerCallback = 16

    private let socket: VMSocket
    private let loop: EventLoop
    private let options: Options
    private let stdin: Stdin
    private var sending = true
    private var readWatch: ReadinessWatch?
    private var writeWatch: ReadinessWatch?
    private var stdinWatch: ReadinessWatch?
    private var timers: [LoopTimer] = []
    private var lastActivity = ContinuousClock.now
    private(set) var failure: String?

    init(socket: VMSocket, loop: EventLoop, options: Options, stdin: Stdin) {
        self.socket = socket
        self.loop = loop
        self.options = options
        self.stdin = stdin
    }

    /// Pumps until the session ends, on `loop` (which may serve one session after another). Returns nil, or the
    /// error message.
    static func run(_ socket: VMSocket, on loop: EventLoop, options: Options, stdin: Stdin) throws(VMSockError) -> String? {
        let session = Session(socket: socket, loop: loop, options: options, stdin: stdin)
        loop.execute { session.start() }
        try loop.run()
        return session.failure
    }

    private func start() {
        socket.isNonBlocking = true
        do throws(VMSockError) {
            readWatch = try loop.watch(socket, for: .read) { [unowned self] in receive() }
            writeWatch = try loop.watch(socket, for: .write, enabled: false) { [unowned self] in send() }
            if stdin.ended {
                stdinEnded()
            } else if stdin.pollable {
                stdinWatch = try loop.watch(descriptor: 0, for: .read) { [unowned self] in readStdin() }
            } else {
                writeWatch?.enable()  // a file: read it whenever the socket has room
            }
            if let timeout = options.timeout { try watchIdle(Duration.milliseconds(Int64(timeout * 1000))) }
        } catch {
            finish(failure: error.message)
        }
    }

    // MARK: The socket to stdout

    private func receive() {
        for _ in 0..<Self.roundsPerCallback {
            let count: Int
            do {
                count = try socket.readInPlace { bytes in
                    try StandardIO.writeAll(1, bytes)
                    return bytes.count
                }
            } catch let error as VMSockError {
                if error.code == EAGAIN { return }
                return finish(failure: "read from the peer: \(Self.describe(error))")
            } catch let error as SystemError {
                // Whoever read our stdout went away: nothing more to do (nc ends quietly too).
                return finish(failure: error.code == EPIPE ? nil : error.description)
            } catch {
                return finish(failure: "\(error)")
            }
            if count == 0 { return finish() }  // the peer's end of stream: everything is on stdout
            lastActivity = .now
        }
    }

    // MARK: stdin to the socket

    /// stdin is readable (a watched pipe or terminal): one read, which does not block, into the socket's ring.
    /// A terminal gives one line per read, sent as soon as it is typed.
    private func readStdin() {
        guard let moved = moveFromStdin() else { return }
        if !moved {  // the ring is full: wait for room, and read no more of stdin meanwhile
            stdinWatch?.disable()
            writeWatch?.enable()
        }
    }

    /// The socket has room. For a watched stdin, go back to waiting for it (reading it now could block); for a
    /// file, read it into the ring until the ring is full or a round's worth has moved.
    private func send() {
        if stdin.pollable || stdin.ended {
            writeWatch?.disable()
            stdinWatch?.enable()
            return
        }
        for _ in 0..<Self.roundsPerCallback {
            guard let moved = moveFromStdin() else { return }
            if !moved { break }  // full: the write watch calls again when there is room
        }
        writeWatch?.enable()  // (a round's worth moved: the loop polls the other direction, then calls again)
    }

    /// One read from stdin straight into free space of the socket's ring. True when bytes moved, false when the
    /// ring had no room (nothing was read), nil when nothing more is to be done now: stdin had nothing, ended,
    /// or the session ended.
    private func moveFromStdin() -> Bool? {
        var ended = false
        do {
            try socket.writeInPlace { space in
                guard let count = try StandardIO.read(0, into: space) else { return 0 }  // nothing there yet
                ended = count == 0
                return count
            }
        } catch let error as VMSockError {
            if error.code == EAGAIN { return false }
            if error.code == EPIPE {  // the peer reads no more: stop sending, as nc does; its end still ends us
                stopSending()
                return nil
            }
            finish(failure: "write to the peer: \(Self.describe(error))")
            return nil
        } catch let error as SystemError {
            finish(failure: error.description)
            return nil
        } catch {
            finish(failure: "\(error)")
            return nil
        }
        if ended {
            stdinEnded()
            return nil
        }
        lastActivity = .now
        return true
    }

    /// End of file on stdin (or -d): shut down our writing with -N, and with -q N quit N seconds later.
    private func stdinEnded() {
        stdin.ended = true
        stopSending()
        guard sending else { return }
        sending = false
        if options.shutdownOnEOF {
            do throws(VMSockError) { try socket.shutdown(.write) } catch {
                if error.code != EPIPE { return finish(failure: "shutdown: \(Self.describe(error))") }
            }
        }
        if let quit = options.quitAfterEOF, quit >= 0 {
            if quit == 0 { return finish() }
            do throws(VMSockError) {
                timers.append(try loop.schedule(after: .milliseconds(Int64(quit * 1000))) { [unowned self] in finish() })
            } catch {
                finish(failure: error.message)
            }
        }
    }

    /// Reads no more of stdin and sends nothing more on this connection.
    private func stopSending() {
        stdinWatch?.cancel()
        stdinWatch = nil
        writeWatch?.cancel()
        writeWatch = nil
    }

    // MARK: Timers and the end

    /// -w: ends the session (status 0, as nc) after `limit` with no byte either way.
    private func watchIdle(_ limit: Duration) throws(VMSockError) {
        let check = min(limit, .milliseconds(250))
        timers.append(try loop.schedule(after: check, repeating: true) { [unowned self] in
            if ContinuousClock.now - lastActivity >= limit { finish() }
        })
    }

    private func finish(failure: String? = nil) {
        if self.failure == nil { self.failure = failure }
        for watch in [readWatch, writeWatch, stdinWatch] { watch?.cancel() }
        (readWatch, writeWatch, stdinWatch) = (nil, nil, nil)
        for timer in timers { timer.cancel() }
        timers = []
        loop.stop()
    }

    /// An error from the socket in nc's words: "Connection reset by peer", "Broken pipe", plus our detail.
    static func describe(_ error: VMSockError) -> String {
        let text = String(cString: strerror(error.code))
        return error.message.lowercased().contains(text.lowercased()) ? error.message : "\(text) (\(error.message))"
    }
}
