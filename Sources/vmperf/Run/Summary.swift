import Foundation
import VMPerfSupport
import VMSock

/// The end of a test as one side reports it: each stream's sender and receiver figures (one from each side),
/// the sums, the processor use of both sides, and for --latency the round-trip statistics.
struct Summary {
    let parameters: TestParameters
    let side: TestRun.Side
    let local: TestRun.Outcome
    let remote: SideResults
    let format: RateFormat

    struct Pair {
        var index: Int
        var sender: StreamSpan
        var receiver: StreamSpan
        var localSends: Bool
        /// Each side's sleeps and rings, for shared memory.
        var senderWaits: WaitStatistics?
        var receiverWaits: WaitStatistics?
    }

    /// Sender and receiver figures per connection, whichever side measured them.
    var pairs: [Pair] {
        local.streams.map { mine in
            let theirs = remote.streams.first { $0.index == mine.index }
                ?? StreamResult(index: mine.index, sender: !mine.sender, bytes: 0, seconds: 0)
            var (sent, received) = mine.sender ? (mine, theirs) : (theirs, mine)
            // -O: what the receiver counted includes the sender's warm-up bytes, which the sender's count leaves out.
            received.bytes = max(0, received.bytes - (sent.warmUpBytes ?? 0))
            // A receiver that had all of it before its own side's warm-up ended (its timer runs on another clock,
            // and later: -R with a short -n) has no time of its own after it: the sender's stands.
            if received.seconds == 0 && sent.warmUpBytes != nil { received.seconds = sent.seconds }
            let span = { (result: StreamResult) in
                StreamSpan(
                    index: mine.index, start: 0, end: result.seconds, bytes: result.bytes, roundTrips: 0, sender: mine.sender,
                    retransmits: result.retransmits)
            }
            return Pair(
                index: mine.index, sender: span(sent), receiver: span(received), localSends: mine.sender,
                senderWaits: sent.waits, receiverWaits: received.waits)
        }
    }

    /// The summary lines. The separator comes first unless the last interval printed one already (-P > 1).
    func humanLines() -> [String] {
        var lines = (parameters.intervalsEndWithSeparator ? [] : [HumanLines.separator])
            + [HumanLines.header(roles: parameters.bidir, latency: false, columns: retransmitsShown ? .retransmits : .none)]
        // As the intervals: with --bidir, the streams this side sends on and their sums, then the others.
        for group in parameters.directionGroups(pairs, on: side, localSends: \.localSends) {
            for pair in group.items {
                var sender = pair.sender
                if !retransmitsShown { sender.retransmits = nil }
                lines.append(HumanLines.line(id: String(pair.index + 1), role: group.role, sender, format, tag: "sender"))
                lines.append(HumanLines.line(id: String(pair.index + 1), role: group.role, pair.receiver, format, tag: "receiver"))
            }
            guard parameters.streams > 1 else { continue }
            var total = Self.total(group.items.map(\.sender))
            if !retransmitsShown { total.retransmits = nil }
            lines.append(HumanLines.line(id: "SUM", role: group.role, total, format, tag: "sender"))
            lines.append(HumanLines.line(id: "SUM", role: group.role, Self.total(group.items.map(\.receiver)), format, tag: "receiver"))
        }
        return lines
    }

    /// iperf3's Retr in the summary (`showsSenderColumns`), where the senders' counts are known.
    private var retransmitsShown: Bool {
        parameters.showsSenderColumns(on: side) && pairs.contains { $0.sender.retransmits != nil }
    }

    /// With -V, over shared memory: how often each side slept and rang the other, per stream. A figure far below
    /// the usual one with many sleeps is the two sides waking each other instead of spinning.
    func waitLines() -> [String] {
        pairs.compactMap { pair in
            guard let sender = pair.senderWaits, let receiver = pair.receiverWaits else { return nil }
            let side = { (waits: WaitStatistics) in
                "slept \(waits.readSleeps + waits.writeSleeps) times, rang the other \(waits.dataRings + waits.spaceRings)"
            }
            return HumanLines.idTag(String(pair.index + 1)) + " waits: sender \(side(sender)); receiver \(side(receiver))"
        }
    }

    /// The streams' sum (iperf3's [SUM]): no window.
    static func total(_ spans: [StreamSpan]) -> StreamSpan {
        StreamSpan(
            index: 0, start: 0, end: spans.map(\.end).max() ?? 0, bytes: spans.reduce(0) { $0 + $1.bytes }, roundTrips: 0,
            sender: spans.first?.sender ?? false, retransmits: StreamSpan.summedRetransmits(spans))
    }

    func endJSON() -> JSON {
        let pairs = self.pairs
        var members: [(String, JSON)] = [
            ("streams", .array(pairs.map { pair in
                .object([
                    ("sender", JSONDocument.span(pair.sender, socket: pair.index + 1, includeOmitted: false)),
                    ("receiver", JSONDocument.span(pair.receiver, socket: pair.index + 1, includeOmitted: false)),
                ])
            })),
        ]
        // iperf3: sum_sent/sum_received cover the client-to-server direction (server-to-client with -R);
        // with --bidir the other direction gets the *_bidir_reverse keys.
        let forward = parameters.bidir ? pairs.filter { parameters.clientSends($0.index) } : pairs
        let sends = forward.first?.localSends ?? false
        members.append(("sum_sent", JSONDocument.sum(forward.map(\.sender), sender: sends, includeOmitted: false)))
        members.append(("sum_received", JSONDocument.sum(forward.map(\.receiver), sender: sends, includeOmitted: false)))
        if parameters.bidir {
            let reverse = pairs.filter { !parameters.clientSends($0.index) }
            members.append(("sum_sent_bidir_reverse", JSONDocument.sum(reverse.map(\.sender), sender: !sends, includeOmitted: false)))
            members.append(("sum_received_bidir_reverse", JSONDocument.sum(reverse.map(\.receiver), sender: !sends, includeOmitted: false)))
        }
        members.append(("cpu_utilization_percent", JSONDocument.cpu(local: local.cpu, remote: remote.cpu)))
        // vmsock's own: how much processor time the hypervisor took (each side read the whole machine's), and
        // over shared memory each stream's sleeps and rings.
        var vmsock: [(String, JSON)] = [
            ("steal_percent", .object([
                ("host", local.cpu.steal.map { .double($0) } ?? .null),
                ("remote", remote.cpu.steal.map { .double($0) } ?? .null),
            ])),
        ]
        if pairs.contains(where: { $0.senderWaits != nil }) {
            vmsock.append(("streams", .array(pairs.map { pair in
                .object([
                    ("socket", .int(pair.index + 1)),
                    ("sender_waits", JSONDocument.waits(pair.senderWaits)),
                    ("receiver_waits", JSONDocument.waits(pair.receiverWaits)),
                ])
            })))
        }
        members.append(("vmsock", .object(vmsock)))
        if let histogram = local.histogram {
            members.append(("latency", JSONDocument.latency(histogram, size: parameters.blockSize)))
        }
        return .object(members)
    }
}
