import Foundation
import Histogram

/// iperf3's human-readable layout: `[  1]   0.00-1.00   sec  3.22 GBytes  27.7 Gbits/sec`, `[SUM]` lines when
/// there are several streams, and sender/receiver lines in the summary. A sending stream's lines add iperf3's
/// Retr (segments sent again) and, in the intervals, Cwnd (what it may have in flight: TCP's congestion window,
/// or the ring's size).
enum HumanLines {
    static let separator = "- - - - - - - - - - - - - - - - - - - - - - - - -"
    /// The tag of a warm-up interval's lines (-O).
    static let omitted = "(omitted)"

    /// The sender's columns a header names: none, Retr (the summary), or Retr and Cwnd (the intervals).
    enum Columns { case none, retransmits, retransmitsAndWindow }

    static func header(roles: Bool, latency: Bool, columns: Columns = .none) -> String {
        let id = roles ? "[ ID][Role]" : "[ ID]"
        if latency { return "\(id) Interval           Round trips  Mean round trip" }
        let sender = switch columns {
        case .none: ""
        case .retransmits: "         Retr"
        case .retransmitsAndWindow: "         Retr  Cwnd"
        }
        return "\(id) Interval           Transfer     Bitrate" + sender
    }

    /// "[  1]", "[ 12]", "[SUM]".
    static func idTag(_ id: String) -> String {
        "[" + String(repeating: " ", count: max(0, 3 - id.count)) + id + "]"
    }

    /// `id` is the stream's number or "SUM"; `role` the --bidir tag (TX-C, RX-C, TX-S, RX-S).
    static func line(id: String, role: String?, _ span: StreamSpan, _ format: RateFormat, tag: String? = nil) -> String {
        let idText = idTag(id)
        let roleText = role.map { "[\($0)]" } ?? ""
        let interval = String(format: "%6.2f-%-6.2f sec", span.start, span.end)
        let transfer = Units.transfer(Double(span.bytes))
        let rate = Units.rate(span.bytesPerSecond, format)
        let tail: String
        if let retransmits = span.retransmits {  // a sending stream's
            let window = span.window.map { "   " + Units.transfer(Double($0)) + "       " } ?? "             "
            tail = String(format: "  %3d", retransmits) + window + (tag ?? "")
        } else {
            tail = tag.map { "                  \($0)" } ?? ""
        }
        return "\(idText)\(roleText) \(interval)  \(transfer)  \(rate)\(tail)"
    }

    /// A latency interval: round trips and their mean. Each stream makes its round trips back to back, so the
    /// mean is the time the `streams` spent over the count.
    static func latencyLine(id: String, _ span: StreamSpan, streams: Int = 1, tag: String? = nil) -> String {
        let idText = idTag(id)
        let interval = String(format: "%6.2f-%-6.2f sec", span.start, span.end)
        let mean = span.roundTrips > 0 ? span.seconds * Double(streams) / Double(span.roundTrips) * 1e6 : 0
        return "\(idText) \(interval)  \(String(format: "%11d", span.roundTrips))  \(String(format: "%9.3f", mean)) usec"
            + (tag.map { "  " + $0 } ?? "")
    }

    static let percentiles: [Double] = [25, 50, 75, 90, 99, 99.9, 99.99, 99.999]

    /// sockperf's summary, for round trips (sockperf itself prints half of them, as one-way latency).
    static func latencySummary(_ histogram: Histogram<UInt64>, transport: String, size: Int, seconds: Double) -> [String] {
        let us = { (nanos: Double) in nanos / 1000 }
        var lines = [
            "vmperf: \(histogram.totalCount) round trips of \(size) bytes over \(transport) in \(String(format: "%.2f", seconds)) s; round-trip times in usec:",
            String(format: "vmperf: ====> avg-rtt=%.3f (std-dev=%.3f)", us(histogram.mean), us(histogram.stdDeviation)),
            String(format: "vmperf: ---> <MAX> observation = %8.3f", us(Double(histogram.max))),
        ]
        for percentile in percentiles.reversed() {
            let value = us(Double(histogram.valueAtPercentile(percentile)))
            lines.append(String(format: "vmperf: ---> percentile %6.3f = %8.3f", percentile, value))
        }
        lines.append(String(format: "vmperf: ---> <MIN> observation = %8.3f", us(Double(histogram.min))))
        return lines
    }
}
