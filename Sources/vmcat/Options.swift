import VMSock

/// What the command line asked for, parsed the way OpenBSD nc's getopt does it: short flags that combine (`-lk`,
/// `-Nv`), option values attached or separate (`-w5`, `-w 5`, `-q-1`, `-q -1`), operands anywhere, `--` ends the
/// options. Two long options of our own: `--transport auto|shm|tcp|ivshmem` and `--ring-size BYTES` (also `--x=value`).
///
/// A small getopt of its own rather than swift-argument-parser. ArgumentParser does take attached values
/// (`.customShort("w", allowingJoined: true)`: `-w5`) and values that look like options (`parsing: .unconditional`:
/// `-q -1`), but with 1.8.2 it parts from getopt where nc users and scripts notice: a value attached after a group
/// of flags (`-lp7000`) is an unknown option to it; a value-taking letter inside a group takes the next word
/// (`-lpk 7000` is -l -k -p 7000 to it, -l -p k and an operand to getopt); and its messages are its own
/// ("Unknown option '-x'", "Missing value for '-w'") where nc prints getopt's ("invalid option -- 'x'",
/// "option requires an argument -- 'w'"), which only matching its English text could translate back.
/// `VMCatTests` pins what this parser accepts and what it rejects, with the messages.
struct Options: Equatable {
    var listen = false           // -l
    var keepListening = false    // -k
    var shutdownOnEOF = false    // -N (and -q)
    var quitAfterEOF: Double? = nil  // -q secs; nil or negative: wait for the peer
    var timeout: Double? = nil   // -w secs: connect and idle time
    var scanOnly = false         // -z
    var noStdin = false          // -d
    var family: IPEndpoint.Family? = nil  // -4 / -6
    var verbose = false          // -v
    var help = false             // -h
    var sourcePort: UInt16? = nil  // -p (with -l: the port to listen on)
    var sourceAddress: String? = nil  // -s (with -l: the address to listen on)
    var transport: TransportPolicy? = nil
    var ringSize: Int? = nil
    var host: String? = nil
    var port: UInt16 = 0

    /// A command line nc would reject: the message, printed as `vmcat: <message>` with the usage hint.
    struct UsageError: Error, Equatable {
        let message: String
    }

    static let usage = """
        usage: vmcat [-46dhklNvz] [-p port] [-q seconds] [-s sourceaddr] [-w timeout]
        \t     [--transport auto|shm|tcp|ivshmem] [--ring-size bytes] [destination] [port]
        """

    static let help = usage + """

        \tCommand Summary:
        \t\t-4		Use IPv4
        \t\t-6		Use IPv6
        \t\t-d		Detach from stdin
        \t\t-h		This help text
        \t\t-k		Keep inbound sockets open for multiple connects
        \t\t-l		Listen mode, for inbound connects
        \t\t-N		Shutdown the network socket after EOF on stdin
        \t\t-p port		Specify local port (with -l: the port to listen on)
        \t\t-s sourceaddr	Local source address (with -l: the address to listen on)
        \t\t-q secs		quit after EOF on stdin and delay of secs (implies -N; negative: wait forever)
        \t\t-v		Verbose: say what happened, and which transport carries the bytes
        \t\t-w timeout	Timeout for connects and final net reads (idle time)
        \t\t-z		Zero-I/O mode [used for scanning]
        \t\t--transport P	auto (default: shared memory when the peer is a vmsock listener on this host,
        \t\t\t\telse TCP), shm (shared memory or fail), tcp (TCP only),
        \t\t\t\tivshmem (the vmsockd region VMSOCK_IVSHMEM names, or fail)
        \t\t--ring-size N	bytes of our shared-memory ring (power of two, 4096 to 67108864; 4194304)
        """

    /// Parses the arguments after the program name.
    static func parse(_ arguments: [String]) throws(UsageError) -> Options {
        var options = Options()
        var operands: [String] = []
        var index = 0
        // The value of an option: the rest of this word, or the next word (whatever it looks like, as getopt does).
        func value(_ rest: Substring, _ name: String) throws(UsageError) -> String {
            if !rest.isEmpty { return String(rest) }
            index += 1
            guard index < arguments.count else { throw UsageError(message: "option requires an argument -- '\(name)'") }
            return arguments[index]
        }
        while index < arguments.count {
            let word = arguments[index]
            if word == "--" {
                operands += arguments[(index + 1)...]
                break
            }
            if word.hasPrefix("--") {
                let body = word.dropFirst(2)
                let name = String(body.prefix { $0 != "=" })
                let attached = body.contains("=") ? body.drop { $0 != "=" }.dropFirst() : ""
                switch name {
                case "transport":
                    let text = try value(attached, name)
                    guard let policy = TransportPolicy(rawValue: text.lowercased()) else {
                        throw UsageError(message: "invalid transport: \(text) (use auto, shm, tcp or ivshmem)")
                    }
                    options.transport = policy
                case "ring-size":
                    let text = try value(attached, name)
                    guard let size = Int(text), (try? VMSocketOptions.validateRingSize(size)) != nil else {
                        throw UsageError(message: "invalid ring size: \(text) (a power of two, 4096 to 67108864)")
                    }
                    options.ringSize = size
                case "help": options.help = true
                default: throw UsageError(message: "unrecognized option '--\(name)'")
                }
            } else if word.hasPrefix("-") && word.count > 1 {
                var rest = word.dropFirst()
                while let flag = rest.first {
                    rest = rest.dropFirst()
                    switch flag {
                    case "4": options.family = .v4
                    case "6": options.family = .v6
                    case "d": options.noStdin = true
                    case "h": options.help = true
                    case "k": options.keepListening = true
                    case "l": options.listen = true
                    case "N": options.shutdownOnEOF = true
                    case "v": options.verbose = true
                    case "z": options.scanOnly = true
                    case "p":
                        options.sourcePort = try port(try value(rest, "p"))
                        rest = ""
                    case "s":
                        options.sourceAddress = try value(rest, "s")
                        rest = ""
                    case "q":
                        let text = try value(rest, "q")
                        guard let seconds = Double(text), seconds.isFinite else {
                            throw UsageError(message: "quit timeout \(text) is invalid")
                        }
                        guard seconds <= Self.maximumSeconds else {
                            throw UsageError(message: "quit timeout \(text) is too large (at most \(Int(Self.maximumSeconds)))")
                        }
                        options.quitAfterEOF = seconds
                        options.shutdownOnEOF = true
                        rest = ""
                    case "w":
                        let text = try value(rest, "w")
                        guard let seconds = Double(text), seconds.isFinite, seconds > 0 else {
                            throw UsageError(message: "timeout \(text) is invalid")
                        }
                        guard seconds <= Self.maximumSeconds else {
                            throw UsageError(message: "timeout \(text) is too large (at most \(Int(Self.maximumSeconds)))")
                        }
                        options.timeout = seconds
                        rest = ""
                    default:
                        throw UsageError(message: "invalid option -- '\(flag)'")
                    }
                }
            } else {
                operands.append(word)
            }
            index += 1
        }
        if options.help { return options }
        try options.take(operands)
        return options
    }

    /// Destination and port, checked the way nc checks them.
    private mutating func take(_ operands: [String]) throws(UsageError) {
        if listen {
            switch (operands.count, sourcePort) {
            case (0, let p?): port = p
            case (1, nil): port = try Self.port(operands[0])
            case (1, let p?): (host, port) = (operands[0], p)
            case (2, nil): (host, port) = (operands[0], try Self.port(operands[1]))
            case (0, nil): throw UsageError(message: "missing port number")
            default: throw UsageError(message: "cannot use -p and a port together with -l")
            }
            if let sourceAddress {
                if host != nil { throw UsageError(message: "cannot use -s and an address together with -l") }
                host = sourceAddress
            }
        } else {
            if keepListening { throw UsageError(message: "must use -l with -k") }
            switch operands.count {
            case 0: throw UsageError(message: "missing destination and port")
            case 1: throw UsageError(message: "missing port number")
            case 2: (host, port) = (operands[0], try Self.port(operands[1]))
            default: throw UsageError(message: "too many arguments: \(operands[2...].joined(separator: " "))")
            }
            if port == 0 { throw UsageError(message: "port number invalid: 0") }
            if let sourceAddress, IPEndpoint(numericHost: sourceAddress, port: 0) == nil {
                throw UsageError(message: "source address \(sourceAddress) is not a numeric address (such as 127.0.0.1 or ::1)")
            }
        }
    }

    /// Where a connection leaves from (-s, -p): nil for the route's address and a port the kernel picks.
    var source: IPEndpoint? {
        guard !listen, sourceAddress != nil || sourcePort != nil else { return nil }
        // -p alone: a wildcard, which chooses the port only (the library takes the destination's family).
        return IPEndpoint(numericHost: sourceAddress ?? "0.0.0.0", port: sourcePort ?? 0)
    }

    private static func port(_ text: String) throws(UsageError) -> UInt16 {
        guard let value = Int(text), value >= 0 else { throw UsageError(message: "port number invalid: \(text)") }
        guard value <= 65535 else { throw UsageError(message: "port number too large: \(text)") }
        return UInt16(value)
    }

    /// The longest -w or -q, as nc's (INT_MAX / 1000 seconds: its milliseconds fit an int). Beyond it the
    /// milliseconds vmcat schedules would not fit an Int64 either, and converting them trapped: `-w 1e300` crashed
    /// (found by Fuzz/vmcat-options.swift).
    static let maximumSeconds = Double(Int32.max / 1000)

    /// The ring vmcat writes into when `--ring-size` does not say: 4 MiB, as vmperf's. A bulk transfer then waits
    /// for the reader once per 4 MiB instead of once per 256 KiB (the library's default), and every wait is a
    /// sleep and a wake-up on each side: 1 GiB from a file took 472 ms through 256 KiB rings and 237 ms through
    /// 4 MiB ones (tools/bench-vmcat.sh).
    static let defaultRingSize = 4 << 20

    /// The socket options these flags ask for.
    var socketOptions: VMSocketOptions {
        var socket = VMSocketOptions()
        socket.transport = transport
        socket.ringSize = ringSize ?? Self.defaultRingSize
        socket.addressFamily = family ?? (sourceAddress != nil ? source?.family : nil)
        socket.sourceAddress = source
        if let timeout {
            socket.connectTimeout = .milliseconds(Int64(timeout * 1000))
            socket.handshakeTimeout = .milliseconds(Int64(timeout * 1000))
        }
        return socket
    }
}
