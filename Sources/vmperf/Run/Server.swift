import Foundation
import VMPerfSupport
import VMSock

/// `vmperf -s`: one vmsock listener (shared-memory and TCP clients through one accept) and a Unix socket beside
/// it, one test at a time; a client that comes during a test is told the server is busy, as iperf3 does.
struct Server {
    let options: Options
    let report: Report

    init(_ options: Options, _ report: Report) {
        self.options = options
        self.report = report
    }

    func run() throws {
        if options.exitOnStdinEof { Self.exitWhenStdinCloses() }
        var socketOptions = VMSocketOptions()
        socketOptions.ringSize = options.effectiveRingSize
        socketOptions.addressFamily = options.addressFamily
        let listener = try Self.listen(options, socketOptions)
        defer { listener.close() }
        listener.isNonBlocking = true
        let unix = try? UnixListener(port: options.port)
        let door = Door(listener: listener, unix: unix, port: options.port)
        if let reason = listener.sharedMemoryUnavailableReason { note("shared memory unavailable: \(reason); TCP only") }
        if let reason = listener.ivshmemUnavailableReason { note("not in the ivshmem region: \(reason)") }
        if unix == nil { note("no Unix socket @vmperf-\(options.port) (another server has it); shared memory and TCP only") }
        var test = 1
        while true {
            report.line("-----------------------------------------------------------")
            report.line("Server listening on \(options.port) (test #\(test))")
            report.line("-----------------------------------------------------------")
            do {
                if try !ServerTest(options: options, report: report, door: door).run() {
                    let seconds = options.idleTimeout ?? 0
                    options.debugLog(report)("no client started a test in \(seconds) s (--idle-timeout): " + (options.oneOff ? "exiting" : "starting over"))
                    if options.oneOff { return }
                }
            } catch {
                if options.oneOff { throw error }
                report.message("vmperf: error - \(error)\n")
            }
            if options.oneOff { return }
            test += 1
        }
    }

    /// As iperf3: on -B's address; else on every IPv6 address and, through the same socket, every IPv4 one (`::`),
    /// or on every IPv4 address (0.0.0.0) with -4 or where this host has no IPv6.
    private static func listen(_ options: Options, _ socketOptions: VMSocketOptions) throws -> VMListener {
        let port = UInt16(options.port)
        do {
            if let bind = options.bind { return try VMListener(host: bind, port: port, options: socketOptions) }
            if options.addressFamily == .v4 { return try VMListener(host: "0.0.0.0", port: port, options: socketOptions) }
            do {
                return try VMListener(host: "::", port: port, options: socketOptions)
            } catch where options.addressFamily == nil && [EAFNOSUPPORT, EADDRNOTAVAIL].contains(error.code) {
                return try VMListener(host: "0.0.0.0", port: port, options: socketOptions)
            }
        } catch {
            let on = options.bind.map { " on \($0)" } ?? ""
            throw Failure("unable to start listener for connections\(on) port \(options.port): \(error)")
        }
    }

    /// For a server started by `--compare`: its parent holds our standard input open, so end of file means the
    /// parent is gone (even killed with SIGKILL) and we go too, leaving nothing behind (the kernel closes our
    /// sockets and unmaps our rings). `_exit`, not `exit`: exit's handlers (LeakSanitizer's leak check among them)
    /// would run while the main thread is still serving.
    private static func exitWhenStdinCloses() {
        Thread {
            var byte: UInt8 = 0
            while read(0, &byte, 1) != 0 {}
            fflush(nil)
            _exit(0)
        }.start()
    }

    private func note(_ text: String) {
        if options.verbose || !report.json { report.message("vmperf: \(text)\n") }
    }
}

/// The server's two ways in: the next connection on either, with its greeting read.
struct Door {
    let listener: VMListener
    let unix: UnixListener?
    let port: Int

    /// Waits up to `timeout` seconds (nil: for ever) for a connection that greets properly, each within
    /// `greetingTimeout` seconds. Connections that do not (port scanners, nc, another program) are closed and
    /// skipped. Returns nil when the time ran out.
    func next(timeout: Double?, greetingTimeout: Double = 5) throws -> (Connection, Greeting)? {
        let deadline = timeout.map { MonotonicClock.nanoseconds() + Int64($0 * 1e9) }
        while true {
            var fds = [pollfd(fd: listener.pollDescriptor, events: Int16(POLLIN), revents: 0)]
            if let unix { fds.append(pollfd(fd: unix.fd, events: Int16(POLLIN), revents: 0)) }
            var wait: Int32 = -1
            if let deadline {
                let now = MonotonicClock.nanoseconds()
                wait = now >= deadline ? 0 : Int32((deadline - now) / 1_000_000) + 1
            }
            let ready = poll(&fds, nfds_t(fds.count), wait)
            if ready < 0 && errno != EINTR { throw Failure("poll on the listeners failed: \(errorText())") }
            if ready <= 0 {
                if let deadline, MonotonicClock.nanoseconds() >= deadline { return nil }  // polled at least once
                continue
            }
            var accepted: Connection? = nil
            if fds[0].revents != 0 {
                do {
                    accepted = Connection(index: -1, try listener.accept())
                } catch where error.code == EAGAIN {
                    // a handshake under way, or a connector that gave up: nothing to take yet
                } catch {
                    throw Failure("accept failed: \(error)")
                }
            } else if fds.count > 1, fds[1].revents != 0, let unix {
                accepted = Connection(index: -1, try unix.accept(), port: port)
            }
            guard let accepted else { continue }
            if let greeting = Self.greeting(of: accepted, within: greetingTimeout) { return (accepted, greeting) }
            accepted.close()
        }
    }

    /// The 48-byte greeting, read within `seconds`; nil when it is missing or wrong.
    private static func greeting(of connection: Connection, within seconds: Double) -> Greeting? {
        connection.stream.setReadTimeout(seconds)
        defer { connection.stream.setReadTimeout(nil) }
        var bytes = [UInt8](repeating: 0, count: Greeting.size)
        guard (try? bytes.withUnsafeMutableBytes({ try connection.stream.readExactly($0) })) == true else { return nil }
        return Greeting(bytes)
    }
}
