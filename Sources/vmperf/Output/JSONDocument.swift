import Foundation
import Histogram
import VMPerfSupport
import VMSock

/// The pieces of iperf3's `-J` document (key names and nesting as iperf3 3.12 writes them), plus a `vmsock`
/// object with what iperf3 has no key for.
enum JSONDocument {
    static let version = "vmperf 1.0 (vmsock; iperf3-compatible JSON)"

    static var systemInfo: String {
        var name = utsname()
        uname(&name)
        let field = { (value: Any) -> String in
            withUnsafeBytes(of: value) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        }
        return [field(name.sysname), field(name.nodename), field(name.release), field(name.version), field(name.machine)]
            .joined(separator: " ")
    }

    static func timestamp() -> JSON {
        let now = Date()
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        return .object([("time", .string(formatter.string(from: now))), ("timesecs", .int(Int(now.timeIntervalSince1970)))])
    }

    static func connected(_ connections: [Connection]) -> JSON {
        .array(connections.map { connection in
            .object([
                ("socket", .int(connection.index + 1)),
                ("local_host", .string(connection.local.host)), ("local_port", .int(connection.local.port)),
                ("remote_host", .string(connection.remote.host)), ("remote_port", .int(connection.remote.port)),
            ])
        })
    }

    static func testStart(_ parameters: TestParameters) -> JSON {
        .object([
            ("protocol", .string("TCP")), ("num_streams", .int(parameters.streams)),
            ("blksize", .int(parameters.blockSize)), ("omit", .int(parameters.omitSeconds)),
            ("duration", .int(parameters.bytes == 0 && parameters.blocks == 0 ? Int(parameters.duration.rounded(.up)) : 0)),
            ("bytes", .int(parameters.bytes)), ("blocks", .int(parameters.blocks)),
            ("reverse", .int(parameters.reverse ? 1 : 0)), ("bidir", .int(parameters.bidir ? 1 : 0)),
            ("tos", .int(0)), ("target_bitrate", .int(parameters.bitsPerSecond ?? 0)),
        ])
    }

    /// The whole document: iperf3's three parts, then -T's title and --extra-data where given (iperf3 puts them
    /// at the top too, on both sides).
    static func document(start: JSON, intervals: JSON, end: JSON, _ parameters: TestParameters) -> JSON {
        var members: [(String, JSON)] = [("start", start), ("intervals", intervals), ("end", end)]
        if let title = parameters.title { members.append(("title", .string(title))) }
        if let extraData = parameters.extraData { members.append(("extra_data", .string(extraData))) }
        return .object(members)
    }

    /// vmsock's own facts: the transport each connection uses and, when auto fell back to TCP, why.
    static func vmsock(_ connections: [Connection], parameters: TestParameters) -> JSON {
        let first = connections.first
        return .object([
            ("transport", .string(first?.transport ?? "none")),
            ("transport_description", .string(first?.transportDescription ?? "none")),
            ("fallback_reason", first?.fallbackReason.map { .string($0) } ?? .null),
            ("ring_size", first?.ringSize.map { .int($0) } ?? .null),
            ("peer_ring_size", first?.peerRingSize.map { .int($0) } ?? .null),
            ("spin_us", parameters.spinUs.map { .int($0) } ?? .null),
            ("mode", .string(parameters.mode.rawValue)),
            ("streams", .array(connections.map { connection in
                .object([("socket", .int(connection.index + 1)), ("transport", .string(connection.transportDescription))])
            })),
        ])
    }

    /// One stream-interval record (`intervals[].streams[]`, `end.streams[].sender`, ...).
    /// `socket` is nil for sums, which have none.
    static func span(_ span: StreamSpan, socket: Int?, includeOmitted: Bool = true, latency: Bool = false) -> JSON {
        var members: [(String, JSON)] = socket.map { [("socket", .int($0))] } ?? []
        members += [
            ("start", .double(span.start)), ("end", .double(span.end)),
            ("seconds", .double(span.seconds)), ("bytes", .int(span.bytes)),
            ("bits_per_second", .double(span.bytesPerSecond * 8)),
        ]
        if let retransmits = span.retransmits { members.append(("retransmits", .int(retransmits))) }  // senders only
        if let window = span.window { members.append(("snd_cwnd", .int(window))) }  // a sender's interval
        if latency { members.append(("round_trips", .int(span.roundTrips))) }
        if includeOmitted { members.append(("omitted", .bool(span.omitted))) }
        members.append(("sender", .bool(span.sender)))
        return .object(members)
    }

    /// A `sum` record: bytes added up, the longest time.
    static func sum(_ spans: [StreamSpan], sender: Bool, includeOmitted: Bool = true, latency: Bool = false) -> JSON {
        var total = spans.first ?? StreamSpan(index: 0, start: 0, end: 0, bytes: 0, roundTrips: 0, sender: sender)
        total.start = spans.map(\.start).min() ?? 0
        total.end = spans.map(\.end).max() ?? 0
        total.bytes = spans.reduce(0) { $0 + $1.bytes }
        total.roundTrips = spans.reduce(0) { $0 + $1.roundTrips }
        total.sender = sender
        total.retransmits = StreamSpan.summedRetransmits(spans)
        total.window = nil  // iperf3's sums have no snd_cwnd
        return span(total, socket: nil, includeOmitted: includeOmitted, latency: latency)
    }

    /// A side's sleeps and doorbell rings (`WaitStatistics`), or null where there are none (TCP).
    static func waits(_ waits: WaitStatistics?) -> JSON {
        guard let waits else { return .null }
        return .object([
            ("read_sleeps", .int(waits.readSleeps)), ("write_sleeps", .int(waits.writeSleeps)),
            ("data_rings", .int(waits.dataRings)), ("space_rings", .int(waits.spaceRings)),
        ])
    }

    static func cpu(local: CPUUsage, remote: CPUUsage) -> JSON {
        .object([
            ("host_total", .double(local.total)), ("host_user", .double(local.user)), ("host_system", .double(local.system)),
            ("remote_total", .double(remote.total)), ("remote_user", .double(remote.user)),
            ("remote_system", .double(remote.system)),
        ])
    }

    /// Round-trip statistics in microseconds, from the histogram.
    static func latency(_ histogram: Histogram<UInt64>, size: Int) -> JSON {
        let us = { (nanos: Double) -> JSON in .double(nanos / 1000) }
        return .object([
            ("round_trips", .int(Int(histogram.totalCount))), ("message_size", .int(size)), ("unit", .string("usec")),
            ("mean", us(histogram.mean)), ("stddev", us(histogram.stdDeviation)),
            ("min", us(Double(histogram.min))), ("max", us(Double(histogram.max))),
            ("percentiles", .object(HumanLines.percentiles.map { percentile in
                (percentileName(percentile), us(Double(histogram.valueAtPercentile(percentile))))
            })),
        ])
    }

    static func percentileName(_ percentile: Double) -> String {
        percentile == percentile.rounded() ? String(Int(percentile)) : String(percentile)
    }
}
