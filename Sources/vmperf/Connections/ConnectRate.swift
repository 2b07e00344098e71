import Foundation
import VMPerfSupport
import VMSock

/// `vmperf --connections N`: what setting up a connection costs, shared memory against TCP. This process connects
/// N times in each round (`--connection-rounds`; by default three) to a listener in another process
/// (`ConnectionsListener`), which accepts both kinds through one accept(); every connection sends one byte each
/// way (so both ends have finished setting up) and is closed. One line per round: connections per second and the
/// time of one.
struct ConnectRate {
    let options: Options
    let report: Report
    let count: Int

    init(_ options: Options, count: Int, _ report: Report) {
        self.options = options
        self.count = count
        self.report = report
    }

    /// One round: the policy its connections use, and whether they may reopen a link the previous connection
    /// left (`VMSocketOptions.reusesLinks`).
    struct Round {
        let policy: TransportPolicy
        let reusesLinks: Bool
    }

    /// By their names in `--connection-rounds`: shared memory making a new link for every connection, shared memory
    /// reopening the link the previous connection left (the default), and TCP.
    static let rounds: KeyValuePairs<String, Round> = [
        "new": Round(policy: .shm, reusesLinks: false), "reused": Round(policy: .shm, reusesLinks: true),
        "tcp": Round(policy: .tcp, reusesLinks: true),
    ]

    /// All three, as `--connection-rounds` names them: what `--connections` runs unless told.
    static let allRounds = "new,reused,tcp"

    /// The rounds `names` (comma-separated) choose, in that order; nil for an unknown, empty or repeated name.
    static func rounds(named names: String) -> [Round]? {
        let words = names.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        guard Set(words).count == words.count else { return nil }
        let chosen = words.compactMap { name in rounds.first { $0.key == name }?.value }
        return chosen.count == words.count ? chosen : nil
    }

    /// What one round measured.
    struct Figure {
        let round: Round
        /// What the connections used ("shared memory", "TCP").
        let transport: String
        let seconds: Double
        /// Connections that reopened a parked link (`TransportStatistics.sharedMemoryReused`).
        let reused: Int
    }

    func run() throws {
        let listener = try ConnectionsListener(count: count, ringSize: options.connectionRingSize, rounds: options.connectionRoundNames)
        defer { listener.stop() }
        report.line("vmperf --connections: \(count) connections per round to a listener process on port \(listener.port); "
                    + "rings of \(options.connectionRingSize >> 10) KiB")
        var figures: [Figure] = []
        for round in options.connectionRoundList {
            let figure = try measure(round, port: listener.port)
            figures.append(figure)
            report.line(line(figure))
        }
        VMSocket.closeIdleLinks()
        try listener.finish()
        if report.json { report.document(json(figures)) }
    }

    private func measure(_ round: Round, port: UInt16) throws -> Figure {
        var socketOptions = VMSocketOptions(transport: round.policy)
        socketOptions.ringSize = options.connectionRingSize
        socketOptions.reusesLinks = round.reusesLinks
        let reusedBefore = TransportStatistics.current.sharedMemoryReused
        let start = MonotonicClock.nanoseconds()
        var transport = ""
        for index in 0..<count {
            do {
                let socket = try VMSocket.connect(host: "127.0.0.1", port: port, options: socketOptions)
                defer { socket.close() }
                try socket.writeAll([1])
                guard try socket.read(upTo: 1).count == 1 else { throw Failure("the listener closed without answering") }
                transport = socket.transport.description
            } catch {
                throw Failure("connection \(index + 1) of \(count) over \(round.policy.rawValue): \(error)")
            }
        }
        let seconds = Double(MonotonicClock.nanoseconds() - start) / 1e9
        return Figure(round: round, transport: transport, seconds: seconds,
                      reused: TransportStatistics.current.sharedMemoryReused - reusedBefore)
    }

    /// "connections per second over shared memory, 1998 on reused links: 34226 (29.2 µs each; ...)".
    private func line(_ figure: Figure) -> String {
        let how = figure.round.policy == .tcp ? "" : figure.round.reusesLinks ? ", \(figure.reused) on reused links" : ", a new link each"
        return String(format: "connections per second over %@%@: %.0f (%.1f µs each; connect, 1 byte each way, close; %d connections)",
                      figure.transport, how, Double(count) / figure.seconds, figure.seconds / Double(count) * 1e6, count)
    }

    private func json(_ figures: [Figure]) -> JSON {
        .object([
            ("connections", .object([
                ("version", .string(JSONDocument.version)),
                ("system_info", .string(JSONDocument.systemInfo)),
                ("timestamp", JSONDocument.timestamp()),
                ("connections_per_round", .int(count)),
                ("ring_size", .int(options.connectionRingSize)),
                ("exchange", .string("connect, 1 byte each way, close")),
                ("rounds", .array(figures.map { figure in
                    .object([
                        ("policy", .string(figure.round.policy.rawValue)),
                        ("reuses_links", .bool(figure.round.reusesLinks)),
                        ("transport", .string(figure.transport)),
                        ("connections", .int(count)),
                        ("reused", .int(figure.reused)),
                        ("seconds", .double(figure.seconds)),
                        ("connections_per_second", .double(Double(count) / figure.seconds)),
                        ("usec_per_connection", .double(figure.seconds / Double(count) * 1e6)),
                    ])
                })),
            ])),
        ])
    }
}
