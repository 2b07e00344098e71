import Foundation
import VMPerfSupport

/// The comparison's table: a row per workload, a column per transport, each figure with its ratio to TCP
/// (how many times the throughput; how many times lower the round trip).
struct CompareTable {
    let rows: [Compare.Row]
    let seconds: Double

    static let names: [Options.Choice: String] = [
        .shm: "shared memory", .ivshmem: "ivshmem region", .tcp: "TCP loopback", .unix: "Unix socket",
    ]

    /// A column per transport measured (the region's only when the run had one).
    private var columns: [(Options.Choice, String)] {
        Compare.allTransports.filter { choice in rows.contains { $0.figures[choice] != nil } }.map { ($0, Self.names[$0]!) }
    }

    func lines() -> [String] {
        let pad = { (text: String, width: Int) in text.padding(toLength: max(width, text.count), withPad: " ", startingAt: 0) }
        var lines = [
            "",
            pad("workload", 22) + columns.map { pad($0.1, 24) }.joined(),
        ]
        for row in rows {
            if row.latency {
                for (label, pick) in Self.latencyStatistics {
                    lines.append(pad("\(row.workload), \(label)", 22) + columns.map { column in
                        pad(latencyCell(row, column.0, pick), 24)
                    }.joined())
                }
            } else {
                lines.append(pad(row.workload, 22) + columns.map { pad(throughputCell(row, $0.0), 24) }.joined())
            }
        }
        lines.append("")
        lines.append("Throughput in GB/s (10^9 bytes per second, as the receiver counted them), round trips in usec;")
        lines.append("in parentheses: times TCP's throughput, times lower than TCP's round trip. Transports used:")
        for (choice, _) in columns {
            lines.append("  \(choice.rawValue): \(rows.first?.figures[choice]?.transport ?? "-")")
        }
        return lines + stealWarnings()
    }

    /// Steal at or above this share of the machine's time is worth a warning beside the table.
    static let notableSteal = 2.0

    /// One line per shared-memory figure measured while the hypervisor took a notable share of the CPUs. Its two
    /// threads spin and never leave their CPUs idle, so steal there is the host's own load, and the figure says
    /// more about the host than about the transport. (The kernel transports' threads sleep, and a VM whose CPU
    /// went idle waits to get it back: some steal is part of what those figures measure.)
    private func stealWarnings() -> [String] {
        var warnings: [String] = []
        for row in rows {
            guard let steal = row.figures[.shm]?.steal, steal >= Self.notableSteal else { continue }
            warnings.append(String(format: "  %@: %.0f%%", row.workload, steal))
        }
        guard !warnings.isEmpty else { return [] }
        return ["", "The hypervisor took CPU time from this VM (steal, % of all CPUs) during these shared-memory runs:"]
            + warnings + ["Those figures measure the host's load as much as the transport; rerun them."]
    }

    static let latencyStatistics: [(String, @Sendable (Compare.Figure) -> Double)] = [
        ("mean", { $0.histogram.map { $0.mean } ?? 0 }),
        ("p50", { $0.histogram.map { Double($0.valueAtPercentile(50)) } ?? 0 }),
        ("p99", { $0.histogram.map { Double($0.valueAtPercentile(99)) } ?? 0 }),
    ]

    private func throughputCell(_ row: Compare.Row, _ transport: Options.Choice) -> String {
        guard let figure = row.figures[transport] else { return "-" }
        let value = figure.bytesPerSecond / 1e9
        let tcp = row.figures[.tcp]?.bytesPerSecond ?? 0
        return String(format: "%.3g GB/s (%.1fx)", value, tcp > 0 ? figure.bytesPerSecond / tcp : 0)
    }

    private func latencyCell(_ row: Compare.Row, _ transport: Options.Choice, _ pick: (Compare.Figure) -> Double) -> String {
        guard let figure = row.figures[transport] else { return "-" }
        let value = pick(figure)
        let tcp = row.figures[.tcp].map(pick) ?? 0
        return String(format: "%.3g usec (%.1fx)", value / 1000, value > 0 ? tcp / value : 0)
    }

    /// What iperf3 has no key for: the hypervisor's steal meanwhile, and over shared memory each side's sleeps
    /// and rings (`JSONDocument.waits`).
    private static func vmsockFacts(_ figure: Compare.Figure) -> [(String, JSON)] {
        var facts: [(String, JSON)] = [("steal_percent", figure.steal.map { .double($0) } ?? .null)]
        if figure.senderWaits != nil || figure.receiverWaits != nil {
            facts += [("sender_waits", JSONDocument.waits(figure.senderWaits)), ("receiver_waits", JSONDocument.waits(figure.receiverWaits))]
        }
        return facts
    }

    func json() -> JSON {
        var throughput: [JSON] = []
        var latency: JSON = .null
        for row in rows {
            let tcp = row.figures[.tcp]
            var results: [(String, JSON)] = []
            for (choice, _) in columns {
                guard let figure = row.figures[choice] else { continue }
                if row.latency, let histogram = figure.histogram {
                    var stats = JSONDocument.latency(histogram, size: row.blockSize)
                    let ratio = (tcp?.histogram?.mean ?? 0) / max(histogram.mean, 1e-9)
                    if case .object(var members) = stats {
                        members.append(("transport", .string(figure.transport)))
                        members.append(("tcp_over_this_mean", .double(ratio)))
                        members += Self.vmsockFacts(figure)
                        stats = .object(members)
                    }
                    results.append((choice.rawValue, stats))
                } else {
                    results.append((choice.rawValue, .object([
                        ("transport", .string(figure.transport)),
                        ("bytes_per_second", .double(figure.bytesPerSecond)),
                        ("bits_per_second", .double(figure.bytesPerSecond * 8)),
                        ("ratio_to_tcp", .double((tcp?.bytesPerSecond ?? 0) > 0 ? figure.bytesPerSecond / tcp!.bytesPerSecond : 0)),
                    ] + Self.vmsockFacts(figure))))
                }
            }
            if row.latency {
                latency = .object([("message_size", .int(row.blockSize)), ("results", .object(results))])
            } else {
                throughput.append(.object([("block_size", .int(row.blockSize)), ("results", .object(results))]))
            }
        }
        return .object([
            ("compare", .object([
                ("version", .string(JSONDocument.version)),
                ("system_info", .string(JSONDocument.systemInfo)),
                ("timestamp", JSONDocument.timestamp()),
                ("seconds_per_workload", .double(seconds)),
                ("throughput", .array(throughput)),
                ("latency", latency),
            ])),
        ])
    }
}
