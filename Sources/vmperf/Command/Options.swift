import ArgumentParser
import Glibc
import VMPerfSupport
import VMSock

/// The command line: iperf3's flags (`-s`, `-c host`, `-p`, `-t`/`-n`/`-k`, `-l`, `-P`, `-R`, `--bidir`, `-b`, `-O`,
/// `-i`, `-f`, `-J`, `-T`, `--timestamps`, `-1`, `-V`, `-d`, `--logfile`, `--server-bitrate-limit`, `--idle-timeout`
/// and more) with iperf3's defaults, vmsock's own (`--transport`, `--ring-size`, `--spin-us`),
/// and the modes iperf3 does not have: `--latency`, `--compare`, `--paper` and `--connections`.
struct Options: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vmperf",
        abstract: "iperf3 for vmsock: throughput and latency over shared memory, TCP or a Unix socket.",
        discussion: """
            Start a server with `vmperf -s`, then measure with `vmperf -c HOST` (iperf3's flags). `vmperf --compare` \
            runs shared memory, TCP loopback and a Unix socket side by side with no server to start; `vmperf --paper` \
            reproduces Table 1 of the seed paper; `vmperf --connections N` measures what setting up a connection costs.
            """,
        version: JSONDocument.version + "\n" + JSONDocument.systemInfo)

    // MARK: Role
    @Flag(name: [.customShort("s"), .customLong("server")], help: "Run in server mode.")
    var server = false
    @Option(name: [.customShort("c"), .customLong("client")], help: "Run in client mode, connecting to <host>.")
    var client: String?
    @Flag(help: "Run the comparison: shared memory, TCP loopback and a Unix socket, in one run (starts its own server).")
    var compare = false
    @Option(help: "With --compare: also draw the table as an SVG bar chart into <file>.")
    var svg: String?
    @Flag(help: "Reproduce Table 1 of the seed paper (Raw, Sync, Sync1k, TCP ping-pong) on this machine.")
    var paper = false
    @Option(parsing: .unconditional,
            help: "Connect <n> times in each round (by default three: shared memory with a new link each, shared memory reopening the link, TCP) to a listener process it starts itself; print connections per second.")
    var connections: Int?
    @Option(help: "With --connections: which rounds to run, in order, comma-separated (new: a new link each; reused; tcp; default new,reused,tcp).")
    var connectionRounds: String?

    // MARK: What to measure
    @Flag(help: "Measure round trips of -l bytes (default 64) instead of throughput.")
    var latency = false
    @Option(name: [.customShort("p"), .customLong("port")], parsing: .unconditional, help: "Server port to listen on / connect to.")
    var port: Int = 5201
    @Option(name: [.customShort("B"), .customLong("bind")], help: "Server: listen on this address only (default: every IPv6 and IPv4 address); client: connect from it.")
    var bind: String?
    @Option(parsing: .unconditional, help: "Client: the port the first data stream connects from, the next one above for each other stream.")
    var cport: Int?
    @Flag(name: [.customShort("4"), .customLong("version4")], help: "Only use IPv4.")
    var version4 = false
    @Flag(name: [.customShort("6"), .customLong("version6")], help: "Only use IPv6 (a server's IPv6 socket accepts IPv4 clients too).")
    var version6 = false
    @Option(name: [.customShort("t"), .customLong("time")], parsing: .unconditional, help: "Time in seconds to transmit for (default 10; --compare: 2 per workload).")
    var time: Double?
    @Option(name: [.customShort("n"), .customLong("bytes")], parsing: .unconditional, help: "Number of bytes to transmit (instead of -t), e.g. 1G.")
    var bytes: ByteCount?
    @Option(name: [.customShort("k"), .customLong("blockcount")], parsing: .unconditional, help: "Number of blocks (writes; round trips with --latency) to transmit (instead of -t or -n).")
    var blockcount: ByteCount?
    @Option(name: [.customShort("l"), .customLong("length")], parsing: .unconditional, help: "Length of buffer to write (default 128 KiB; 64 with --latency).")
    var length: ByteCount?
    @Option(name: [.customShort("P"), .customLong("parallel")], parsing: .unconditional, help: "Number of parallel client streams to run.")
    var parallel: Int = 1
    @Flag(name: [.customShort("R"), .customLong("reverse")], help: "Run in reverse mode (server sends, client receives).")
    var reverse = false
    @Flag(help: "Run in bidirectional mode (client and server send and receive data).")
    var bidir = false
    @Option(name: [.customShort("b"), .customLong("bitrate")], parsing: .unconditional,
            help: "Target bitrate of each sending stream in bits/sec, #[KMGT] (powers of 1000; 0 for unlimited, the default); an optional /# sends that many blocks back to back between looks at the clock.")
    var bitrate: Bitrate?
    @Option(name: [.customShort("O"), .customLong("omit")], parsing: .unconditional,
            help: "Run N seconds first and leave them out of the figures (a warm-up; -t counts after it).")
    var omit: Int = 0
    @Option(name: .customLong("connect-timeout"), parsing: .unconditional,
            help: "Client: milliseconds to wait for each connection to the server (default 10000).")
    var connectTimeout: Int?
    @Option(name: .customLong("rcv-timeout"), parsing: .unconditional,
            help: "Milliseconds a receiving stream waits for data before the test ends with an error (default 120000).")
    var rcvTimeout: Int = 120_000
    @Option(name: .customLong("server-bitrate-limit"), parsing: .unconditional,
            help: ArgumentHelp("Server: the most bits/sec all of a test's streams may carry together, #[KMGT] (powers of 1000; 0 for no limit, the default), averaged over the last /# seconds (0.1 to 60, default 5): a client whose -b asks for more is refused, and a test that goes over it is ended.", valueName: "rate[/seconds]"))
    var serverBitrateLimit: ServerBitrateLimit?
    @Option(name: .customLong("idle-timeout"), parsing: .unconditional,
            help: "Server: after this many seconds without a client starting a test, start over (with -1: exit).")
    var idleTimeout: Int?
    @Flag(name: [.customShort("N"), .customLong("no-delay")],
          help: "TCP_NODELAY, which vmsock sets on every TCP connection anyway (a shared-memory write is never held back).")
    var noDelay = false

    // MARK: Output
    @Option(name: [.customShort("i"), .customLong("interval")], parsing: .unconditional, help: "Seconds between periodic reports (0 turns them off).")
    var interval: Double = 1
    @Option(name: [.customShort("f"), .customLong("format")], help: "Format to report rates in: k/m/g/t bits, K/M/G/T bytes, a/A adaptive bits/bytes (transfers are always adaptive bytes).")
    var format: RateFormat = .adaptiveBits
    @Flag(name: [.customShort("J"), .customLong("json")], help: "Output in JSON format (iperf3's structure).")
    var json = false
    @Flag(name: [.customShort("1"), .customLong("one-off")], help: "Server: handle one client connection, then exit.")
    var oneOff = false
    @Flag(name: [.customShort("D"), .customLong("daemon")], help: "Server: run in the background (output only to --logfile).")
    var daemon = false
    @Option(name: [.customShort("I"), .customLong("pidfile")], parsing: .unconditional, help: "Write the process's pid to this file, removed when it ends.")
    var pidfile: String?
    @Flag(name: [.customShort("V"), .customLong("verbose")], help: "More detailed output.")
    var verbose = false
    @Option(parsing: .unconditional, help: "Send output to a log file.")
    var logfile: String?
    @Option(name: [.customShort("T"), .customLong("title")], parsing: .unconditional, help: "Client: prefix every output line with this string.")
    var title: String?
    @Option(name: .customLong("timestamps"),
            help: ArgumentHelp("Begin every output line with the time (--timestamps, or --timestamps=FORMAT as strftime(3) takes it).", valueName: "format"))
    var timestamps: String?
    @Flag(name: .customShort("d"), help: "Print debugging output (as --debug).")
    var debugFlag = false
    @Option(name: .customLong("debug"), parsing: .unconditional,
            help: ArgumentHelp("Print debugging output to stderr (or --logfile): the control messages each way, a server's rate checks and idle restarts. iperf3's level (--debug=N) is taken, and any level prints all of it.", valueName: "level"))
    var debugLevel: Int?
    @Flag(name: .customShort("v"), help: "Print the version and the system, and exit (as --version).")
    var showVersion = false
    @Flag(help: "Write each line out as soon as it is made (vmperf always does; accepted as iperf3 takes it).")
    var forceflush = false
    @Option(name: .customLong("extra-data"), parsing: .unconditional, help: "Client: a string both sides put in their JSON (-J) as extra_data.")
    var extraData: String?
    @Flag(name: .customLong("get-server-output"), help: "Client: print what the server printed for the test (with -J: put it in the document).")
    var getServerOutput = false

    // MARK: vmsock
    @Option(help: "auto (shared memory when the server is a vmsock listener on this host, else TCP), shm, tcp, ivshmem (through the vmsockd region VMSOCK_IVSHMEM names), or unix (a Unix-domain socket, for comparison).")
    var transport: Choice = .auto
    @Option(name: [.customLong("ring-size"), .customShort("w"), .customLong("window")], parsing: .unconditional,
            help: "Bytes of each shared-memory ring (a power of two, 4 KiB to 64 MiB; default 4 MiB). A client's sizes the server's rings for its test too; a server's holds when the client gives none. -w/--window as in iperf3.")
    var ringSize: ByteCount?
    @Option(name: [.customShort("A"), .customLong("affinity")], parsing: .unconditional,
            help: "n[,m]: run this side's streams on CPU n, and the server's on CPU m (iperf3's -A).")
    var affinity: String?
    @Option(parsing: .unconditional, help: "Microseconds a blocked shared-memory call spins before it sleeps (default: VMSOCK_SPIN_US or 50).")
    var spinUs: Int?

    // MARK: --paper
    @Option(parsing: .unconditional, help: "--paper: runs per benchmark (the paper: 25).")
    var runs: Int = 25
    @Option(parsing: .unconditional, help: "--paper: round trips per run (the paper: 1000000).")
    var iterations: Int = 1_000_000

    /// The second process of `--paper`, started by the first: where to find the shared memory and what to run.
    @Option(help: .hidden) var paperPeer: String?
    /// A server started by `--compare`: ends when its standard input (a pipe from the comparison) closes.
    @Flag(help: .hidden) var exitOnStdinEof = false
    /// The listener process of `--connections`, started by it.
    @Flag(help: .hidden) var connectionsListener = false

    /// `--transport`: the library's four policies, and a Unix-domain socket.
    enum Choice: String, ExpressibleByArgument, CaseIterable {
        case auto, shm, tcp, ivshmem, unix
    }

    enum Role { case server, client(String), compare, paper, paperPeer(String), connections(Int), connectionsListener(Int) }

    var role: Role {
        if let paperPeer { return .paperPeer(paperPeer) }
        if let connections { return connectionsListener ? .connectionsListener(connections) : .connections(connections) }
        if server { return .server }
        if let client { return .client(client) }
        if compare { return .compare }
        return .paper
    }

    mutating func validate() throws {
        if showVersion { return }  // -v alone decides, as --version does
        let roles = [server, client != nil, compare, paper || paperPeer != nil, connections != nil].filter { $0 }.count
        guard roles == 1 else {
            throw ValidationError(roles == 0
                ? "parameter error - must either be a client (-c), server (-s), --compare, --paper or --connections"
                : "parameter error - choose one of -c, -s, --compare, --paper and --connections")
        }
        if svg != nil && !compare { throw ValidationError("--svg draws the --compare table: use it with --compare") }
        if let svg, svg.isEmpty { throw ValidationError("--svg needs a file name") }
        if let connections, !(1...1_000_000).contains(connections) {
            throw ValidationError("--connections \(connections) is out of range (1 to 1000000)")
        }
        if let connectionRounds {
            guard connections != nil else { throw ValidationError("--connection-rounds chooses the rounds of --connections: use it with --connections") }
            guard ConnectRate.rounds(named: connectionRounds) != nil else {
                throw ValidationError("--connection-rounds \(connectionRounds): want a comma-separated list of new, reused and tcp, each at most once")
            }
        }
        guard (1...65535).contains(port) else { throw ValidationError("port \(port) is out of range (1 to 65535)") }
        if let time, !(time > 0 && time <= 86_400) { throw ValidationError("test duration \(time) is out of range (0 to 86400 seconds)") }
        let ends = [time != nil, bytes != nil, blockcount != nil].filter { $0 }.count
        guard ends <= 1 else { throw ValidationError("only one test end condition (-t, -n, -k) may be specified") }
        if let bytes, bytes.value == 0 { throw ValidationError("-n must be at least 1 byte") }
        if let blockcount, blockcount.value == 0 { throw ValidationError("-k must be at least 1 block") }
        if let length, !(1...(128 << 20)).contains(length.value) {
            throw ValidationError("block size \(length.value) is out of range (1 byte to 128 MiB)")
        }
        guard (1...128).contains(parallel) else { throw ValidationError("number of parallel streams \(parallel) is out of range (1 to 128)") }
        guard interval == 0 || (interval >= 0.1 && interval <= 60) else {
            throw ValidationError("report interval \(interval) is out of range (0, or 0.1 to 60 seconds)")
        }
        guard !(reverse && bidir) else { throw ValidationError("cannot use -R and --bidir together") }
        guard (0...600).contains(omit) else { throw ValidationError("bogus value for --omit (\(omit): 0 to 600 seconds)") }
        if let connectTimeout, !(1...86_400_000).contains(connectTimeout) {
            throw ValidationError("--connect-timeout \(connectTimeout) is out of range (1 to 86400000 ms)")
        }
        guard (100...86_400_000).contains(rcvTimeout) else {
            throw ValidationError("--rcv-timeout \(rcvTimeout) is out of range (100 to 86400000 ms)")
        }
        if let idleTimeout, !(1...86_400).contains(idleTimeout) {
            throw ValidationError("--idle-timeout \(idleTimeout) is out of range (1 to 86400 seconds)")
        }
        if let timestamps, timestamps.isEmpty { throw ValidationError("--timestamps= needs a strftime(3) format") }
        guard !(version4 && version6) else { throw ValidationError("cannot use -4 and -6 together") }
        if let bind, bind.isEmpty { throw ValidationError("-B needs an address") }
        if let bind, client != nil, IPEndpoint(numericHost: bind, port: 0) == nil {
            throw ValidationError("-B \(bind) is not a numeric address (such as 127.0.0.1 or ::1): a client connects from it")
        }
        let streams = parallel * (bidir ? 2 : 1)  // --bidir: a connection each way per stream
        if let cport, !(1...65535).contains(cport) || cport + streams - 1 > 65535 {
            throw ValidationError("--cport \(cport) is out of range (1 to 65535, one port for each of the \(streams) connections)")
        }
        if let ringSize, !Self.validRing(ringSize.value) {
            throw ValidationError("ring size \(ringSize.value) is invalid (a power of two, 4096 to 67108864)")
        }
        if let spinUs, !(0...1_000_000).contains(spinUs) { throw ValidationError("--spin-us \(spinUs) is out of range (0 to 1000000)") }
        if let affinity {
            let parts = affinity.split(separator: ",", omittingEmptySubsequences: false)
            let online = sysconf(Int32(_SC_NPROCESSORS_ONLN))
            guard (1...2).contains(parts.count), parts.allSatisfy({ Int($0).map { $0 >= 0 && $0 < online } ?? false }) else {
                throw ValidationError("-A \(affinity) is invalid: want n or n,m with CPU numbers from 0 to \(online - 1)")
            }
        }
        guard (1...1000).contains(runs) else { throw ValidationError("--runs \(runs) is out of range (1 to 1000)") }
        guard (1...100_000_000).contains(iterations) else {
            throw ValidationError("--iterations \(iterations) is out of range (1 to 100000000)")
        }
        if latency && (reverse || bidir) { throw ValidationError("--latency measures round trips: -R and --bidir do not apply") }
        if latency && (bitrate?.bitsPerSecond ?? 0) > 0 {
            throw ValidationError("--latency makes one round trip at a time: -b paces a sending stream and does not apply")
        }
        if server {
            let clientOnly = [("-t", time != nil), ("-n", bytes != nil), ("-k", blockcount != nil), ("-l", length != nil),
                              ("-P", parallel != 1), ("-R", reverse), ("--bidir", bidir), ("--latency", latency),
                              ("-b", bitrate != nil), ("-O", omit != 0), ("-T", title != nil), ("--extra-data", extraData != nil),
                              ("--connect-timeout", connectTimeout != nil), ("--get-server-output", getServerOutput)]
            if let (flag, _) = clientOnly.first(where: \.1) {
                throw ValidationError("parameter error - some option you are trying to set is client only (\(flag))")
            }
        }
        if compare || paper || connections != nil {
            let clientOnly = [("-b", bitrate != nil), ("-O", omit != 0), ("--get-server-output", getServerOutput), ("-D", daemon)]
            if let (flag, _) = clientOnly.first(where: \.1) {
                throw ValidationError("\(flag) is for a test between a client (-c) and a server (-s), not for --compare, --paper or --connections")
            }
        }
        if server && cport != nil {
            throw ValidationError("parameter error - some option you are trying to set is client only (--cport)")
        }
        let serverOnly = [("-1", oneOff), ("-D", daemon), ("--server-bitrate-limit", serverBitrateLimit != nil),
                          ("--idle-timeout", idleTimeout != nil)]
        if let (flag, _) = serverOnly.first(where: \.1), !server {
            throw ValidationError("parameter error - some option you are trying to set is server only (\(flag))")
        }
        if let pidfile, pidfile.isEmpty { throw ValidationError("-I needs a file name") }
        if server && (transport == .shm || transport == .tcp || transport == .ivshmem) {
            throw ValidationError("--transport is for clients: a server accepts shared-memory, TCP and Unix-socket clients at once")
        }
    }

    /// The command line as getopt reads it for iperf3, in the words swift-argument-parser takes:
    /// - a value attached to a short option (`-P4`, `-l128K`) is split off. swift-argument-parser would take such
    ///   words itself for options declared `.customShort(_, allowingJoined: true)`, but then (1.8.2) its message
    ///   for a missing value drops the value's name (`Missing value for '-c'` instead of `Missing value for
    ///   '-c <client>'`), so vmperf keeps this split;
    /// - `--timestamps` without `=FORMAT` (an optional value, which swift-argument-parser has not) gets iperf3's
    ///   default format, and `--debug` without `=LEVEL` iperf3's default level (4); a word that is the value of
    ///   the option before it is left alone.
    static func splittingAttachedValues(_ arguments: [String]) -> [String] {
        var out: [String] = []
        var isValue = false  // the word is the value of the option before it
        for (index, word) in arguments.enumerated() {
            defer { isValue = !isValue && optionsTakingAValue.contains(word) }
            if word == "--" { return out + arguments[index...] }
            let chars = Array(word)
            if word == "--timestamps" && !isValue {
                out.append("--timestamps=" + Report.defaultTimestampFormat)
            } else if isValue {
                out.append(word)  // a value (a title of "--timestamps"), as it is
            } else if word == "--debug" {
                out.append("--debug=4")
            } else if chars.count > 2, chars[0] == "-", chars[1] != "-", "cptnklPifBbOTI".contains(chars[1]) {
                out += [String(chars[0...1]), String(chars[2...])]
            } else {
                out.append(word)
            }
        }
        return out
    }

    /// The options whose value is the next word (OptionsTests checks the list against --help).
    static let optionsTakingAValue: Set<String> = [
        "-c", "--client", "--svg", "--connections", "--connection-rounds", "-p", "--port", "-B", "--bind", "--cport",
        "-t", "--time", "-n", "--bytes", "-k", "--blockcount", "-l", "--length", "-P", "--parallel", "-b", "--bitrate",
        "-O", "--omit", "--connect-timeout", "--rcv-timeout", "--server-bitrate-limit", "--idle-timeout", "-i",
        "--interval", "-f", "--format", "-I", "--pidfile", "--logfile", "-T", "--title", "--extra-data", "--transport",
        "--ring-size", "-w", "--window", "-A", "--affinity", "--spin-us", "--runs", "--iterations", "--paper-peer",
    ]

    /// iperf3's flags that vmperf does not take, each with why and what to use instead: the first one on a command
    /// line that did not parse, as the message for it; nil when there is none.
    static func unsupportedIperf3Flag(_ arguments: [String]) -> String? {
        for word in arguments {
            if word == "--" { return nil }
            let name = word.hasPrefix("--") ? String(word.prefix { $0 != "=" }) : word.count >= 2 && word.hasPrefix("-") ? String(word.prefix(2)) : ""
            if let (_, why) = unsupported.first(where: { $0.flags.contains(name) }) { return "\(name) is not supported: \(why)" }
        }
        return nil
    }

    private static let ipHeader = "it sets a field of IP packets, which shared memory does not send; use iperf3 to measure TCP with it"
    private static let unsupported: [(flags: [String], why: String)] = [
        (["-u", "--udp", "--udp-counters-64bit"], "vmperf measures byte streams (shared memory, or TCP when the server is not a vmsock listener on this host); use iperf3 -u for UDP"),
        (["--sctp", "-X", "--xbind", "--nstreams"], "vmperf measures byte streams over shared memory or TCP; use iperf3 for SCTP"),
        (["-Z", "--zerocopy"], "over shared memory every block is already written straight into the ring and read in place; use iperf3 -Z for TCP's sendfile"),
        (["-F", "--file"], "vmperf sends its own pattern; copy a file with vmcat (vmcat HOST PORT < FILE)"),
        (["-C", "--congestion"], "shared memory has no congestion control; use iperf3 -C to choose TCP's"),
        (["-M", "--set-mss", "-S", "--tos", "--dscp", "-L", "--flowlabel", "--dont-fragment"], ipHeader),
        (["--fq-rate", "--pacing-timer"], "vmperf paces with -b, looking at the clock between blocks (-b RATE/N: every N blocks)"),
        (["--snd-timeout"], "it sets TCP_USER_TIMEOUT; a shared-memory connection ends at once when its peer's process goes"),
        (["--bind-dev"], "vmperf binds to an address (-B); shared memory does not go through a network device"),
        (["--repeating-payload"], "vmperf always sends a repeating pattern"),
        (["--username", "--rsa-public-key-path", "--rsa-private-key-path", "--authorized-users-path", "--time-skew-threshold"],
         "vmperf has no user authentication; a shared-memory listener takes only peers its peer policy allows (same user or root by default)"),
        (["--mptcp"], "vmperf measures shared memory or plain TCP; use iperf3 for MPTCP"),
    ]

    /// -d or --debug (at any level, as iperf3 3.12): where debugging lines go; off otherwise.
    func debugLog(_ report: Report) -> DebugLog {
        debugFlag || debugLevel != nil ? DebugLog(report) : .off
    }

    /// vmperf's rings: 4 MiB unless told. The library's default (256 KiB) holds only two 128 KiB blocks, so the
    /// writer waits for the reader block by block; with 2 MiB or more both run at once (README, vmperf).
    static let defaultRingSize = 4 << 20
    var effectiveRingSize: Int { ringSize?.value ?? Self.defaultRingSize }
    /// `--connections` measures set-up, not streaming: the library's default ring unless -w says otherwise.
    var connectionRingSize: Int { ringSize?.value ?? VMSocketOptions().ringSize }
    /// `--connection-rounds` as given, or all three.
    var connectionRoundNames: String { connectionRounds ?? ConnectRate.allRounds }
    /// The rounds it names (checked by `validate`), in its order.
    var connectionRoundList: [ConnectRate.Round] { ConnectRate.rounds(named: connectionRoundNames) ?? [] }

    /// `-A n[,m]`: this side's CPU and the server's.
    var cpus: (local: Int?, remote: Int?) {
        guard let affinity else { return (nil, nil) }
        let parts = affinity.split(separator: ",", omittingEmptySubsequences: false).map { Int($0) }
        return (parts.first ?? nil, parts.count > 1 ? parts[1] : nil)
    }

    /// The library's rule for a ring size (`VMSocketOptions.validateRingSize`), as a yes or no: vmperf words its
    /// own message, as iperf3 would.
    static func validRing(_ size: Int) -> Bool {
        do {
            try VMSocketOptions.validateRingSize(size)
            return true
        } catch {
            return false
        }
    }

    /// Where a client's connection `index` (-1: the control connection) leaves from: -B's address, and for a
    /// data stream --cport's port plus its index; nil for the route's address and a port the kernel picks.
    func source(forStream index: Int) -> IPEndpoint? {
        let port = index >= 0 ? cport.flatMap { UInt16(exactly: $0 + index) } ?? 0 : 0
        guard bind != nil || port != 0 else { return nil }
        // --cport alone: a wildcard, which chooses the port only (the library takes the destination's family).
        return IPEndpoint(numericHost: bind ?? "0.0.0.0", port: port)
    }

    /// -4 or -6: the one address family to use; nil for both.
    var addressFamily: IPEndpoint.Family? { version4 ? .v4 : version6 ? .v6 : nil }

    /// Block size: -l, or iperf3's default (128 KiB), or 64 bytes for round trips.
    var blockSize: Int { length?.value ?? (latency ? 64 : 128 << 10) }
    /// Seconds of a timed test (ignored when -n or -k is given).
    var duration: Double { time ?? (compare ? 2 : 10) }
}
