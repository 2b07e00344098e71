import Foundation
import Histogram
import VMPerfSupport
import VMSock

/// `vmperf --compare`: the same workloads over shared memory, TCP loopback and a Unix socket (and vmsockd's region
/// when `VMSOCK_IVSHMEM` names one), one after another in one run, against a server process it starts itself; a
/// table of the figures and their ratio to TCP.
struct Compare {
    let options: Options
    let report: Report

    init(_ options: Options, _ report: Report) {
        self.options = options
        self.report = report
    }

    /// Every transport a comparison can show, in the order of the table's columns.
    static let allTransports: [Options.Choice] = [.shm, .ivshmem, .tcp, .unix]

    /// What this run compares: the region too when the environment names one (the server, our child, inherits it).
    static var transports: [Options.Choice] {
        let region = getenv("VMSOCK_IVSHMEM").map { String(cString: $0) } ?? ""
        return allTransports.filter { $0 != .ivshmem || !region.isEmpty }
    }
    static let writeSizes = [64, 1 << 10, 64 << 10, 128 << 10]
    static let messageSize = 64

    struct Row {
        var workload: String
        var blockSize: Int
        var latency: Bool
        var figures: [Options.Choice: Figure] = [:]
    }

    struct Figure {
        var transport: String
        var bytesPerSecond: Double = 0
        var histogram: Histogram<UInt64>?
        /// Sleeps and doorbell rings of each side, over shared memory: a figure far below the usual one with many
        /// of them was spent waking up.
        var senderWaits: WaitStatistics?
        var receiverWaits: WaitStatistics?
        /// Percent of the machine's processor time the hypervisor took meanwhile (`CPUUsage.steal`).
        var steal: Double?
    }

    func run() throws {
        if let path = options.svg { try CompareChart.checkWritable(path) }
        let server = try CompareServer(options: options)
        defer { server.stop() }
        report.line("vmperf --compare: \(Self.format(options.duration)) s per workload; a server process on port \(server.port), "
                    + "this process the client; rings of \(options.effectiveRingSize >> 10) KiB; " + placement)
        var rows = Self.writeSizes.map { Row(workload: "\(Self.sizeName($0)) writes", blockSize: $0, latency: false) }
        rows.append(Row(workload: "\(Self.messageSize) B round trip", blockSize: Self.messageSize, latency: true))
        for transport in Self.transports {
            for index in rows.indices {
                report.line("  \(rows[index].workload) over \(transport.rawValue)...")
                rows[index].figures[transport] = try measure(rows[index], over: transport, port: server.port)
            }
        }
        if report.json {
            report.document(CompareTable(rows: rows, seconds: options.duration).json())
        } else {
            for line in CompareTable(rows: rows, seconds: options.duration).lines() { report.line(line) }
        }
        if let path = options.svg { try CompareChart(rows: rows).write(to: path) }
    }

    /// Where the streams run: -A if given; else, with two CPUs or more, the client's on CPU 0 and the server's on
    /// CPU 1, since two busy threads the scheduler puts on one core (it does, now and then) halve a figure.
    private var affinity: String? {
        if let given = options.affinity { return given }
        return sysconf(Int32(_SC_NPROCESSORS_ONLN)) >= 2 ? "0,1" : nil
    }

    private var placement: String {
        guard let affinity else { return "one CPU: streams not pinned" }
        let cpus = affinity.split(separator: ",")
        return "client streams on CPU \(cpus[0])" + (cpus.count > 1 ? ", server streams on CPU \(cpus[1])" : "")
    }

    /// One workload over one transport, as a client of our server, with nothing printed.
    private func measure(_ row: Row, over transport: Options.Choice, port: Int) throws -> Figure {
        var client = options
        client.compare = false
        client.client = "127.0.0.1"
        client.port = port
        client.transport = transport
        client.length = ByteCount(row.blockSize)
        client.latency = row.latency
        client.interval = 0
        client.parallel = 1
        client.time = options.duration
        client.affinity = affinity
        let quiet = try Report(logfile: nil, json: true)
        let measured: Client.Measurement
        do {
            measured = try Client(client, host: "127.0.0.1", quiet).measure()
        } catch {
            throw Failure("\(row.workload) over \(transport.rawValue): \(error)")
        }
        var figure = Figure(transport: measured.connections.first?.transportDescription ?? transport.rawValue)
        let received = measured.remote.streams.filter { !$0.sender } + measured.outcome.streams.filter { !$0.sender }
        let bytes = received.reduce(0) { $0 + $1.bytes }
        let seconds = received.map(\.seconds).max() ?? 0
        figure.bytesPerSecond = seconds > 0 ? Double(bytes) / seconds : 0
        figure.histogram = measured.outcome.histogram
        let streams = measured.outcome.streams + measured.remote.streams
        figure.senderWaits = streams.first { $0.sender }?.waits
        figure.receiverWaits = streams.first { !$0.sender }?.waits
        figure.steal = measured.outcome.cpu.steal
        return figure
    }

    static func sizeName(_ size: Int) -> String {
        size >= 1 << 10 ? "\(size >> 10) KiB" : "\(size) B"
    }

    static func format(_ seconds: Double) -> String {
        seconds == seconds.rounded() ? String(Int(seconds)) : String(seconds)
    }
}
