import Foundation
import VMPerfSupport
import VMSock

/// `vmperf -c host`: connects, asks the server for a test, runs its side of it, and reports both sides.
struct Client {
    let options: Options
    let host: String
    let report: Report

    init(_ options: Options, host: String, _ report: Report) {
        self.options = options
        self.host = host
        self.report = report
    }

    var parameters: TestParameters {
        TestParameters(
            mode: options.latency ? .latency : .throughput, streams: options.parallel, blockSize: options.blockSize,
            duration: options.duration, bytes: options.bytes?.value ?? 0, blocks: options.blockcount?.value ?? 0,
            reverse: options.reverse, bidir: options.bidir, interval: options.interval, spinUs: options.spinUs,
            serverCPU: options.cpus.remote, ringSize: options.ringSize?.value, omit: options.omit,
            bitsPerSecond: options.bitrate?.bitsPerSecond, burst: options.bitrate?.burst, title: options.title,
            extraData: options.extraData, getServerOutput: options.getServerOutput ? true : nil)
    }

    var socketOptions: VMSocketOptions {
        var socket = VMSocketOptions()
        switch options.transport {
        case .auto: socket.transport = .auto
        case .shm: socket.transport = .shm
        case .ivshmem: socket.transport = .ivshmem
        case .tcp, .unix: socket.transport = .tcp
        }
        socket.ringSize = options.effectiveRingSize
        socket.addressFamily = options.addressFamily ?? options.bind.flatMap { IPEndpoint(numericHost: $0, port: 0)?.family }
        socket.connectTimeout = .milliseconds(options.connectTimeout ?? 10_000)
        return socket
    }

    /// What a finished test gave this side: its own figures, the server's, and the connections it ran over.
    struct Measurement {
        var parameters: TestParameters
        var connections: [Connection]
        var cookie: [UInt8]
        var outcome: TestRun.Outcome
        var remote: SideResults
        /// What the server printed, with --get-server-output.
        var serverOutput: ServerOutput?
    }

    func run() throws {
        let measured = try measure()
        print(measured)
    }

    /// Runs one test against the server and returns both sides' figures. Prints only progress lines.
    func measure() throws -> Measurement {
        let parameters = self.parameters
        let cookie = Greeting.newCookie()
        report.line("Connecting to host \(host), port \(options.port)")
        let control = try dial(Greeting(kind: .control, index: 0, cookie: cookie), index: -1)
        defer { control.close() }
        let channel = ControlChannel(stream: control.stream, debug: options.debugLog(report), peer: "the server")
        do {
            try channel.send(parameters)
        } catch {
            // A server that refuses may have answered and hung up before we finished sending: its answer says why.
            if let reply = try? channel.receive(ServerReply.self, timeout: 2, what: "the server's answer"), let refusal = reply.error {
                throw Failure("the server refused the test: \(ControlChannel.oneLine(refusal))")
            }
            throw error
        }
        try expectAnswer(channel)
        var connections: [Connection] = []
        defer { for connection in connections { connection.close() } }
        for index in 0..<parameters.connections {
            let connection = try dial(Greeting(kind: .data, index: index, cookie: cookie), index: index)
            connections.append(connection)
            report.line(HumanLines.idTag(String(index + 1)) + String(format: " local %@ port %d connected to %@ port %d",
                               connection.local.host, connection.local.port, connection.remote.host, connection.remote.port)
                        + " via \(connection.transportDescription)")
        }
        try expectGo(channel, what: "the server's go", timeout: 15)
        if parameters.reverse { report.line("Reverse mode, remote host \(host) is sending") }
        if options.verbose {
            let end = parameters.bytes > 0 ? "\(parameters.bytes) bytes to send" : parameters.blocks > 0
                ? "\(parameters.blocks) blocks to send" : "\(Compare.format(parameters.duration)) second test"
            report.line("Starting Test: protocol: TCP, \(parameters.streams) streams, \(parameters.blockSize) byte blocks, "
                        + "omitting \(parameters.omitSeconds) seconds, \(end), tos 0; transport: \(connections.first?.transportDescription ?? "-")"
                        + (connections.first?.ringSize.map { ", ring \($0) bytes" } ?? ""))
        }
        if parameters.mode == .latency {
            report.line("Round trips of \(parameters.blockSize) bytes, \(parameters.streams) stream(s)")
        }
        let intervals = IntervalReport(parameters: parameters, side: .client, report: report, format: options.format)
        report.line(intervals.header(connections))
        let run = TestRun(parameters, side: .client, connections: connections, cpu: options.cpus.local,
                          receiveTimeout: Double(options.rcvTimeout) / 1000, control: control.stream)
        let outcome: TestRun.Outcome
        do {
            outcome = try run.run(printInterval: intervals.print)
        } catch {
            // A server that ended the test (over its --server-bitrate-limit) says why on the control connection.
            if let reply = try? channel.receive(ServerReply.self, timeout: 2, what: "the server's reason"), let reason = reply.error {
                throw Failure("the server ended the test: \(ControlChannel.oneLine(reason))")
            }
            throw error
        }
        try channel.send(SideResults(cpu: outcome.cpu, streams: outcome.streams))
        let remote = try channel.receive(SideResults.self, timeout: 60, what: "the server's results").validated()
        var serverOutput: ServerOutput?
        if options.getServerOutput {
            do {
                serverOutput = try channel.receive(ServerOutput.self, timeout: 60, what: "the server's output")
            } catch {
                // The test itself is measured: the figures are still printed.
                report.message("vmperf: warning - no server output (--get-server-output): \(error)\n")
            }
        }
        return Measurement(
            parameters: parameters, connections: connections, cookie: cookie, outcome: outcome, remote: remote,
            serverOutput: serverOutput)
    }

    /// The summary (human) or the whole document (-J).
    private func print(_ measured: Measurement) {
        let (parameters, connections, outcome, remote) = (measured.parameters, measured.connections, measured.outcome, measured.remote)
        let summary = Summary(parameters: parameters, side: .client, local: outcome, remote: remote, format: options.format)
        let intervals = IntervalReport(parameters: parameters, side: .client, report: report, format: options.format)
        if report.json {
            var document = JSONDocument.document(
                start: start(parameters, connections, cookie: measured.cookie), intervals: intervals.json(outcome.intervals),
                end: summary.endJSON(), parameters)
            if let output = measured.serverOutput, case .object(var members) = document {
                members.append(output.documentMember)
                document = .object(members)
            }
            report.document(document)
            return
        }
        if let histogram = outcome.histogram {
            if !parameters.intervalsEndWithSeparator { report.line(HumanLines.separator) }
            let seconds = outcome.streams.map(\.seconds).max() ?? 0
            for line in HumanLines.latencySummary(histogram, transport: connections[0].transportDescription,
                                                  size: parameters.blockSize, seconds: seconds) {
                report.line(line)
            }
        } else {
            for line in summary.humanLines() { report.line(line) }
        }
        if options.verbose {
            report.line(String(format: "CPU Utilization: local/sender %.1f%% (%.1f%%u/%.1f%%s), remote/receiver %.1f%% (%.1f%%u/%.1f%%s)",
                               outcome.cpu.total, outcome.cpu.user, outcome.cpu.system,
                               remote.cpu.total, remote.cpu.user, remote.cpu.system))
            if let steal = outcome.cpu.steal {
                report.line(String(format: "CPU time taken by the hypervisor (steal), whole machine: %.1f%%", steal))
            }
            for line in summary.waitLines() { report.line(line) }
        }
        report.line()
        if let output = measured.serverOutput {
            // As iperf3 prints it: the server's own lines as they are, without this side's title or times.
            report.verbatim("Server output:\n" + output.printable + (output.text.hasSuffix("\n") ? "" : "\n") + "\n")
            report.line()
        }
        report.line("vmperf Done.")
    }

    /// The server's first answer. No answer, or one that is not vmperf's, most likely means another program
    /// listens there (an iperf3 server, say). The wait is longer than a vmperf server gives a connection ahead
    /// of ours that says nothing (it serves one at a time).
    private func expectAnswer(_ channel: ControlChannel) throws {
        let reply: ServerReply
        do {
            reply = try channel.receive(ServerReply.self, timeout: 15, what: "the server's answer")
        } catch {
            throw Failure("\(error); is \(host) port \(options.port) a vmperf server (vmperf -s)? An iperf3 server "
                          + "does not speak vmperf's protocol")
        }
        if let error = reply.error { throw Failure("the server refused the test: \(ControlChannel.oneLine(error))") }
        if let flag = Self.unhonoured(parameters, by: reply) {
            throw Failure("the server at \(host) port \(options.port) is an older vmperf that does not take \(flag): update it, or leave \(flag) out")
        }
    }

    /// The first flag the parameters ask for that the server's answer does not say it honours.
    static func unhonoured(_ parameters: TestParameters, by reply: ServerReply) -> String? {
        let honoured = Set(reply.features ?? [])
        return parameters.requestedFeatures.first { !honoured.contains($0.feature.rawValue) }?.flag
    }

    private func expectGo(_ channel: ControlChannel, what: String, timeout: Double) throws {
        let reply = try channel.receive(ServerReply.self, timeout: timeout, what: what)
        if let error = reply.error { throw Failure("the server refused the test: \(ControlChannel.oneLine(error))") }
    }

    /// Opens one connection and introduces it.
    private func dial(_ greeting: Greeting, index: Int) throws -> Connection {
        let connection: Connection
        do {
            if options.transport == .unix {
                connection = Connection(index: index, try UnixStream.connect(port: options.port), port: options.port)
            } else {
                var socketOptions = self.socketOptions
                socketOptions.sourceAddress = options.source(forStream: index)
                connection = Connection(
                    index: index, try VMSocket.connect(host: host, port: UInt16(options.port), options: socketOptions))
            }
        } catch {
            throw Failure("unable to connect to server \(host) port \(options.port): \(error)")
        }
        try greeting.bytes.withUnsafeBytes { try connection.stream.writeAll($0) }
        return connection
    }

    private func start(_ parameters: TestParameters, _ connections: [Connection], cookie: [UInt8]) -> JSON {
        .object([
            ("connected", JSONDocument.connected(connections)),
            ("version", .string(JSONDocument.version)),
            ("system_info", .string(JSONDocument.systemInfo)),
            ("timestamp", JSONDocument.timestamp()),
            ("connecting_to", .object([("host", .string(host)), ("port", .int(options.port))])),
            ("cookie", .string(String(decoding: cookie, as: UTF8.self))),
            ("target_bitrate", .int(parameters.bitsPerSecond ?? 0)),
            ("test_start", JSONDocument.testStart(parameters)),
            ("vmsock", JSONDocument.vmsock(connections, parameters: parameters)),
        ])
    }
}
