import VMSock

/// What one stream did in one reporting interval (or, in the summary, over the whole test).
struct StreamSpan {
    var index: Int
    var start: Double  // seconds since the test started
    var end: Double
    var bytes: Int
    var roundTrips: Int
    var sender: Bool
    /// Segments sent again (TCP), for a sending stream; nil when not known.
    var retransmits: Int? = nil
    /// What a sending stream may have in flight at the interval's end (TCP's congestion window, the ring's
    /// size); nil in the summary and when not known.
    var window: Int? = nil
    /// An interval of the warm-up (-O): printed "(omitted)", left out of the summary.
    var omitted = false

    var seconds: Double { end - start }

    /// The streams' retransmits added up, for a [SUM] line or record; nil when none is known.
    static func summedRetransmits(_ spans: [StreamSpan]) -> Int? {
        let known = spans.compactMap(\.retransmits)
        return known.isEmpty ? nil : known.reduce(0, +)
    }
    var bytesPerSecond: Double { seconds > 0 ? Double(bytes) / seconds : 0 }
}

/// The periodic samples: every `-i` seconds the timer reads each stream's counter and keeps the difference.
final class IntervalSampler: @unchecked Sendable {  // used on the loop thread, then read after the loop stopped
    private let counters: [StreamCounter]
    private let senders: [Bool]
    private let sending: [() -> (retransmits: Int?, window: Int?)]
    /// Where interval times count from: the test's start, then the warm-up's end.
    private var originNanos: Int64
    private var last: [(bytes: Int, trips: Int, retransmits: Int?)]
    private var lastTime = 0.0
    private var warmingUp: Bool
    private var countedIntervals = 0
    private(set) var intervals: [[StreamSpan]] = []
    /// Each sending stream's retransmits when the warm-up ended, which the summary leaves out (nil without one).
    private(set) var warmUpRetransmits: [Int?]?
    private let print: ([StreamSpan]) -> Void

    /// `sending` reads each stream's retransmission count so far and its window (see `Connection`); it is asked
    /// only for sending streams.
    init(
        counters: [StreamCounter], senders: [Bool], sending: [() -> (retransmits: Int?, window: Int?)], startNanos: Int64,
        warmingUp: Bool, print: @escaping ([StreamSpan]) -> Void
    ) {
        self.counters = counters
        self.senders = senders
        self.sending = sending
        originNanos = startNanos
        self.warmingUp = warmingUp
        self.print = print
        last = Array(repeating: (0, 0, 0), count: counters.count)
    }

    /// Takes a sample now. `final` is the last, partial interval at the end of the test: kept only if it is at
    /// least 10 ms long (a sliver would print an absurd rate), or if it is the only one after the warm-up (a test
    /// shorter than an interval still reports one, as iperf3 does).
    func sample(final: Bool = false) {
        let now = Double(MonotonicClock.nanoseconds() - originNanos) / 1e9
        if final && now - lastTime < 0.01 && countedIntervals > 0 { return }
        record(now)
    }

    /// Ends the warm-up (-O): its last, partial interval where intervals are reported (kept if at least 10 ms
    /// long), then, as iperf3 does, the figures and the interval times start again from zero. (Each sending
    /// pump counts its own bytes from where it sees `warmUp` finished, for -n and the summary.)
    func endWarmUp(_ warmUp: WarmUp, reportsIntervals: Bool) {
        let nanos = MonotonicClock.nanoseconds()
        let now = Double(nanos - originNanos) / 1e9
        if reportsIntervals && now - lastTime >= 0.01 { record(now) }
        // The counters first and the end right after, so that the pumps, which count from where they see the
        // end, send as little as can be between the two (the intervals and the summary then agree); the
        // retransmit counts (a TCP_INFO call each) after.
        for (index, counter) in counters.enumerated() {
            last[index].bytes = counter.bytes.load(ordering: .relaxed)
            last[index].trips = counter.roundTrips.load(ordering: .relaxed)
        }
        warmUp.finish(at: nanos)
        var retransmitCounts: [Int?] = []
        for index in counters.indices {
            let retransmits = senders[index] ? sending[index]().retransmits : nil
            last[index].retransmits = retransmits ?? last[index].retransmits
            retransmitCounts.append(retransmits)
        }
        warmUpRetransmits = retransmitCounts
        originNanos = nanos
        lastTime = 0
        warmingUp = false
    }

    private func record(_ now: Double) {
        var spans: [StreamSpan] = []
        for (index, counter) in counters.enumerated() {
            let bytes = counter.bytes.load(ordering: .relaxed)
            let trips = counter.roundTrips.load(ordering: .relaxed)
            let (retransmits, window) = senders[index] ? sending[index]() : (nil, nil)
            spans.append(StreamSpan(
                index: index, start: lastTime, end: now, bytes: bytes - last[index].bytes,
                roundTrips: trips - last[index].trips, sender: senders[index],
                retransmits: retransmits.map { $0 - (last[index].retransmits ?? 0) }, window: window, omitted: warmingUp))
            last[index] = (bytes, trips, retransmits ?? last[index].retransmits)
        }
        if !warmingUp { countedIntervals += 1 }
        lastTime = now
        intervals.append(spans)
        print(spans)
    }
}
