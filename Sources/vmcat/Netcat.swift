import Glibc
import VMSock

/// The two modes, with nc's -v reports: connect (or just check, -z) and listen (once, or -k: one client after
/// another). Failures come back as one line of text; the entry point prints it and exits 1.
enum Netcat {
    struct Failure: Error {
        let message: String
        /// -z reports a failed connect only with -v, as nc does.
        var quiet = false
    }

    static func run(_ options: Options) throws(Failure) {
        signal(SIGPIPE, SIG_IGN)  // a closed stdout must come back as EPIPE, not kill us
        if options.listen {
            try listen(options)
        } else {
            try connect(options)
        }
    }

    private static func connect(_ options: Options) throws(Failure) {
        let host = options.host ?? "localhost"
        // The loop first: a process short of descriptors then falls back to TCP on connect, instead of making a
        // shared-memory connection it cannot pump.
        let loop = options.scanOnly ? nil : try makeLoop()
        let socket: VMSocket
        do throws(VMSockError) {
            socket = try VMSocket.connect(host: host, port: options.port, options: options.socketOptions)
        } catch {
            throw Failure(
                message: "connect to \(host) port \(options.port) (\(policy(options))) failed: \(Session.describe(error))",
                quiet: options.scanOnly && !options.verbose)
        }
        defer { socket.close() }
        if options.verbose {
            StandardIO.report("Connection to \(host) \(options.port) port succeeded via \(socket.transportDescription)")
            if let detail = socket.fallbackDetail { StandardIO.report("  (why not shared memory: \(detail))") }
        }
        guard let loop else { return }
        try pump(socket, on: loop, options: options, stdin: Stdin(ignore: options.noStdin))
    }

    private static func listen(_ options: Options) throws(Failure) {
        let listener: VMListener
        let host = options.host ?? (options.family == .v6 ? "::" : "0.0.0.0")
        do throws(VMSockError) {
            listener = try VMListener(host: host, port: options.port, options: options.socketOptions, backlog: 16)
        } catch {
            throw Failure(message: "cannot listen on \(host) port \(options.port): \(Session.describe(error))")
        }
        if options.verbose {
            let shm = listener.registrations.isEmpty
                ? " (TCP only: \(listener.sharedMemoryUnavailableReason ?? "no registration"))" : ""
            StandardIO.report("Listening on \(listener.localAddress.host) \(listener.localAddress.port)\(shm)")
            if let reason = listener.ivshmemUnavailableReason { StandardIO.report("  (not in the ivshmem region: \(reason))") }
        }
        let stdin = Stdin(ignore: options.noStdin)
        let loop = options.scanOnly ? nil : try makeLoop()  // one for every client, made before any arrives
        repeat {
            let socket: VMSocket
            do throws(VMSockError) {
                socket = try listener.accept()
            } catch {
                guard options.keepListening, error.code == EMFILE || error.code == ENFILE else {
                    throw Failure(message: "accept: \(Session.describe(error))")
                }
                // -k out of descriptors: say so and look again shortly, as a server does, rather than spin or end.
                StandardIO.report("vmcat: accept: \(Session.describe(error)); retrying in 100 ms")
                usleep(100_000)
                continue
            }
            if !options.keepListening { listener.close() }  // nc stops listening once it has its one client
            if options.verbose {
                StandardIO.report(
                    "Connection received on \(socket.peerAddress.host) \(socket.peerAddress.port) via \(socket.transportDescription)")
            }
            defer { socket.close() }
            guard let loop else { continue }
            do throws(Failure) {
                try pump(socket, on: loop, options: options, stdin: stdin)
            } catch {
                if !options.keepListening { throw error }
                StandardIO.report("vmcat: \(error.message)")  // -k: report it and serve the next client
            }
        } while options.keepListening
    }

    private static func makeLoop() throws(Failure) -> EventLoop {
        do throws(VMSockError) {
            return try EventLoop()
        } catch {
            throw Failure(message: error.message)
        }
    }

    private static func pump(_ socket: VMSocket, on loop: EventLoop, options: Options, stdin: Stdin) throws(Failure) {
        let failure: String?
        do throws(VMSockError) {
            failure = try Session.run(socket, on: loop, options: options, stdin: stdin)
        } catch {
            throw Failure(message: error.message)
        }
        if let failure { throw Failure(message: failure) }
    }

    private static func policy(_ options: Options) -> String {
        switch options.transport ?? TransportPolicy.processDefault {
        case .auto: "tcp or shared memory"
        case .shm: "shared memory"
        case .ivshmem: "ivshmem"
        case .tcp: "tcp"
        }
    }
}
