import Foundation
import VMPerfSupport
import VMSock

/// One test on the server: the client's parameters, its data connections, the run, the results.
struct ServerTest {
    let options: Options
    let report: Report
    let door: Door

    static let busy = "the server is busy running a test. try again later"

    /// Serves one client's test; false when no client came within --idle-timeout.
    func run() throws -> Bool {
        guard let (control, parameters, cookie) = try awaitClient() else { return false }
        defer { control.close() }
        let channel = ControlChannel(stream: control.stream, debug: debug, peer: "the client")
        let sendsOutput = parameters.getServerOutput == true
        if sendsOutput { report.beginCapture() }
        defer { if sendsOutput { _ = report.endCapture() } }
        report.line("Accepted connection from \(control.remote.host), port \(control.remote.port) (\(control.transportDescription))")
        var connections: [Connection] = []
        defer { for connection in connections { connection.close() } }
        try door.listener.setRingSize(parameters.ringSize ?? options.effectiveRingSize)
        connections = try awaitData(parameters, cookie: cookie)
        try channel.send(ServerReply(error: nil))
        for connection in connections {
            report.line(HumanLines.idTag(String(connection.index + 1)) + String(format: " local %@ port %d connected to %@ port %d",
                               connection.local.host, connection.local.port, connection.remote.host, connection.remote.port)
                        + " via \(connection.transportDescription)")
        }
        let intervals = IntervalReport(parameters: parameters, side: .server, report: report, format: options.format)
        report.line(intervals.header(connections))
        let run = TestRun(parameters, side: .server, connections: connections, cpu: parameters.serverCPU ?? options.cpus.local,
                          receiveTimeout: Double(options.rcvTimeout) / 1000, control: control.stream,
                          rateLimit: options.serverBitrateLimit.flatMap { $0.bitsPerSecond > 0 ? $0 : nil }, debug: debug)
        let outcome: TestRun.Outcome
        do {
            outcome = try runTurningAwayOthers(run, intervals)
        } catch let exceeded as ServerLimitExceeded {
            try? channel.send(ServerReply(error: exceeded.description))
            throw exceeded
        }
        let remote = try channel.receive(SideResults.self, timeout: 60, what: "the client's results").validated()
        try channel.send(SideResults(cpu: outcome.cpu, streams: outcome.streams))
        let summary = Summary(parameters: parameters, side: .server, local: outcome, remote: remote, format: options.format)
        if report.json {
            report.document(JSONDocument.document(
                start: .object([
                    ("connected", JSONDocument.connected(connections)),
                    ("version", .string(JSONDocument.version)),
                    ("system_info", .string(JSONDocument.systemInfo)),
                    ("timestamp", JSONDocument.timestamp()),
                    ("accepted_connection", .object([("host", .string(control.remote.host)), ("port", .int(control.remote.port))])),
                    ("cookie", .string(String(decoding: cookie, as: UTF8.self))),
                    ("target_bitrate", .int(parameters.bitsPerSecond ?? 0)),
                    ("test_start", JSONDocument.testStart(parameters)),
                    ("vmsock", JSONDocument.vmsock(connections, parameters: parameters)),
                ]),
                intervals: intervals.json(outcome.intervals), end: summary.endJSON(), parameters))
        } else if parameters.mode == .throughput {
            for line in summary.humanLines() { report.line(line) }
        }
        if sendsOutput { try channel.send(ServerOutput.fitting(report.endCapture(), isJSON: report.json)) }
        return true
    }

    private var debug: DebugLog { options.debugLog(report) }

    /// The next client's control connection and its parameters (checked; a bad set is answered and refused), or
    /// nil when none came within --idle-timeout.
    private func awaitClient() throws -> (Connection, TestParameters, [UInt8])? {
        let deadline = options.idleTimeout.map { MonotonicClock.nanoseconds() + Int64($0) * 1_000_000_000 }
        while true {
            let left = deadline.map { Double($0 - MonotonicClock.nanoseconds()) / 1e9 }
            if let left, left <= 0 { return nil }
            // A connection that says nothing (a probe) holds the wait for its greeting: at most until the deadline.
            guard let (control, greeting) = try door.next(timeout: left, greetingTimeout: min(5, max(0.1, left ?? 5))) else { continue }
            guard greeting.kind == .control else {
                control.close()  // a data connection of no test: a late one from a test that ended
                continue
            }
            let channel = ControlChannel(stream: control.stream, debug: debug, peer: "the client")
            let parameters: TestParameters
            do {
                parameters = try channel.receive(TestParameters.self, timeout: 10, what: "the test parameters").validated()
            } catch {
                try? channel.send(ServerReply(error: "bad test parameters: \(error)"))
                control.close()
                throw Failure("refused a client: \(error)")
            }
            let refusal = overLimit(parameters)
            do {
                try channel.send(ServerReply(error: refusal, features: TestParameters.Feature.allCases.map(\.rawValue)))
            } catch {
                control.close()
                throw Failure("lost a client while answering it: \(error)")
            }
            guard let refusal else { return (control, parameters, greeting.cookie) }
            control.close()
            throw Failure("refused a client: \(refusal)")
        }
    }

    /// iperf3's check of a client's -b against --server-bitrate-limit: every sending stream at its target
    /// (both ways with --bidir) must fit. A test without -b is checked while it runs.
    private func overLimit(_ parameters: TestParameters) -> String? {
        guard let limit = options.serverBitrateLimit, limit.bitsPerSecond > 0 else { return nil }
        let asked = Double(parameters.bitsPerSecond ?? 0) * Double(parameters.connections)
        guard asked > Double(limit.bitsPerSecond) else { return nil }
        return "total required bandwidth is larger than server limit (the client asks for \(parameters.connections) "
            + "x \(parameters.bitsPerSecond ?? 0) bits/sec; the server's --server-bitrate-limit is \(limit.bitsPerSecond))"
    }

    /// The test's data connections, within 10 seconds. Strangers are closed; other clients are told we are busy.
    private func awaitData(_ parameters: TestParameters, cookie: [UInt8]) throws -> [Connection] {
        var slots = [Connection?](repeating: nil, count: parameters.connections)
        let deadline = Date().addingTimeInterval(10)
        while slots.contains(where: { $0 == nil }) {
            let left = deadline.timeIntervalSinceNow
            guard left > 0, let (connection, greeting) = try door.next(timeout: left) else {
                for case let connection? in slots { connection.close() }
                throw Failure("the client opened \(slots.compactMap { $0 }.count) of \(parameters.connections) data connections within 10 s")
            }
            if greeting.kind == .control {
                turnAway(connection)
            } else if greeting.cookie == cookie, greeting.index < slots.count, slots[greeting.index] == nil {
                var data = connection
                data.index = greeting.index
                slots[greeting.index] = data
            } else {
                connection.close()
            }
        }
        return slots.map { $0! }
    }

    /// Runs the test on a thread of its own, and meanwhile answers any other client with "busy".
    private func runTurningAwayOthers(_ run: TestRun, _ intervals: IntervalReport) throws -> TestRun.Outcome {
        let work = TestThreadWork(run)
        let thread = Thread {
            work.execute(printInterval: intervals.print)
            work.finished.signal()
        }
        thread.start()
        while work.finished.wait(timeout: .now() + .milliseconds(100)) == .timedOut {
            if let (connection, greeting) = try? door.next(timeout: 0) {
                if greeting.kind == .control { turnAway(connection) } else { connection.close() }
            }
        }
        return try work.result!.get()
    }

    /// Tells another client we are busy. Its parameters are read first (for up to a second): a client still
    /// sending them would otherwise meet a closed connection (EPIPE, or a TCP reset that loses our answer).
    private func turnAway(_ connection: Connection) {
        let channel = ControlChannel(stream: connection.stream, debug: debug, peer: "the client")
        _ = try? channel.receive(TestParameters.self, timeout: 1, what: "the test parameters")
        try? channel.send(ServerReply(error: Self.busy))
        connection.close()
    }
}

/// The test thread's run and, once it signalled, its result. The thread lets go of the run before it signals, so
/// the run and its connections are freed by the thread that called, never by a test thread that may still be
/// finishing while the process exits: LeakSanitizer, checking at exit, once caught one of those connections half
/// released and reported it as a leak.
final class TestThreadWork: @unchecked Sendable {  // `run` is handed over once; `result` is written before the signal
    private var run: TestRun?
    private(set) var result: Result<TestRun.Outcome, Error>?
    let finished = DispatchSemaphore(value: 0)

    init(_ run: TestRun) { self.run = run }

    func execute(printInterval: @escaping ([StreamSpan]) -> Void) {
        let run = self.run!
        self.run = nil
        result = Result { try run.run(printInterval: printInterval) }
    }
}
