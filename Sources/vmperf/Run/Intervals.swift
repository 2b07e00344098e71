/// What one stream did in one reporting interval (or, in the summary, over the whole test).
struct StreamSpan {
    var index: Int
    var start: Double  // seconds since the test started
    var end: Double
    var bytes: Int
    var roundTrips: Int
    var sender: Bool

    var seconds: Double { end - start }
    var bytesPerSecond: Double { seconds > 0 ? Double(bytes) / seconds : 0 }
}

/// The periodic samples: every `-i` seconds the timer reads each stream's counter and keeps the difference.
final class IntervalSampler: @unchecked Sendable {  // used on the loop thread, then read after the loop stopped
    private let counters: [StreamCounter]
    private let senders: [Bool]
    private let startNanos: UInt64
    private var last: [(bytes: Int, trips: Int)]
    private var lastTime = 0.0
    private(set) var intervals: [[StreamSpan]] = []
    private let print: ([StreamSpan]) -> Void

    init(counters: [StreamCounter], senders: [Bool], startNanos: UInt64, print: @escaping ([StreamSpan]) -> Void) {
        self.counters = counters
        self.senders = senders
        self.startNanos = startNanos
        self.print = print
        last = Array(repeating: (0, 0), count: counters.count)
    }

    /// Takes a sample now. `final` is the last, partial interval at the end of the test: kept only if it is at
    /// least 10 ms long (a sliver would print an absurd rate).
    func sample(final: Bool = false) {
        let now = Double(monotonicNanos() &- startNanos) / 1e9
        if final && now - lastTime < 0.01 { return }
        var spans: [StreamSpan] = []
        for (index, counter) in counters.enumerated() {
            let bytes = counter.bytes.load(ordering: .relaxed)
            let trips = counter.roundTrips.load(ordering: .relaxed)
            spans.append(StreamSpan(
                index: index, start: lastTime, end: now, bytes: bytes - last[index].bytes,
                roundTrips: trips - last[index].trips, sender: senders[index]))
            last[index] = (bytes, trips)
        }
        lastTime = now
        intervals.append(spans)
        print(spans)
    }
}
