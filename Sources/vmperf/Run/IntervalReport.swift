import VMPerfSupport

extension TestParameters {
    /// Whether the interval lines end with a separator (they do with [SUM] lines), so the summary needs none.
    var intervalsEndWithSeparator: Bool { streams > 1 && interval > 0 }

    /// Whether `side`'s throughput lines have iperf3's sender columns (Retr, and Cwnd in the intervals): a
    /// client's always (its receiving lines leave them blank, as iperf3's -R does), a server's when it sends.
    func showsSenderColumns(on side: TestRun.Side) -> Bool {
        mode == .throughput && (side == .client || bidir || reverse)
    }
}

/// Interval lines as the test runs (human output), and the `intervals` array of the JSON document.
struct IntervalReport {
    let parameters: TestParameters
    let side: TestRun.Side
    let report: Report
    let format: RateFormat

    private var latency: Bool { parameters.mode == .latency }

    /// The header over the interval lines (`showsSenderColumns`).
    func header(_ connections: [Connection]) -> String {
        let columns: HumanLines.Columns = !parameters.showsSenderColumns(on: side) ? .none
            : connections.contains { $0.congestionWindow != nil } ? .retransmitsAndWindow : .retransmits
        return HumanLines.header(roles: parameters.bidir, latency: latency, columns: columns)
    }

    /// Prints one interval: a line per stream and, when there are several, a [SUM] line; with --bidir, iperf3's
    /// order: the streams this side sends on and their sum, then the ones it receives on and theirs.
    /// A warm-up interval's lines end "(omitted)" (-O), where iperf3 puts it.
    func print(_ spans: [StreamSpan]) {
        guard !report.json else { return }
        let tag = spans.first?.omitted == true ? HumanLines.omitted : nil
        for group in parameters.directionGroups(spans, on: side, localSends: \.sender) {
            for span in group.items {
                report.line(latency
                    ? HumanLines.latencyLine(id: String(span.index + 1), span, tag: tag)
                    : HumanLines.line(id: String(span.index + 1), role: group.role, span, format, tag: tag))
            }
            guard parameters.streams > 1 else { continue }
            var total = Summary.total(group.items)
            total.start = spans.first?.start ?? 0
            total.roundTrips = group.items.reduce(0) { $0 + $1.roundTrips }
            report.line(latency
                ? HumanLines.latencyLine(id: "SUM", total, streams: group.items.count, tag: tag)
                : HumanLines.line(id: "SUM", role: group.role, total, format, tag: tag))
        }
        if parameters.intervalsEndWithSeparator { report.line(HumanLines.separator) }
    }

    func json(_ intervals: [[StreamSpan]]) -> JSON {
        .array(intervals.map { spans in
            let forward = parameters.bidir ? spans.filter { parameters.clientSends($0.index) } : spans
            var members: [(String, JSON)] = [
                ("streams", .array(spans.map { JSONDocument.span($0, socket: $0.index + 1, latency: latency) })),
                ("sum", JSONDocument.sum(forward, sender: forward.first?.sender ?? false, latency: latency)),
            ]
            if parameters.bidir {
                let reverse = spans.filter { !parameters.clientSends($0.index) }
                members.append(("sum_bidir_reverse", JSONDocument.sum(reverse, sender: reverse.first?.sender ?? false)))
            }
            return .object(members)
        })
    }
}
