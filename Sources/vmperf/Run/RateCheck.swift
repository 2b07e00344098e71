import Foundation

/// `--server-bitrate-limit` on the server: the bytes of every stream of the test added up (both directions, as
/// iperf3 counts them), taken about every 100 ms while the test runs, and averaged over the limit's window.
struct RateCheck {
    let limit: ServerBitrateLimit
    /// Bytes the streams may be ahead of a paced rate at any moment (each sending a burst of blocks at once),
    /// left out before the average is compared; 0 for a test that is not paced.
    let slack: Int
    /// (when, total bytes), oldest first: the window's and the one just before it.
    private var samples: [(nanos: Int64, bytes: Int)]

    init(_ limit: ServerBitrateLimit, slack: Int, startNanos: Int64) {
        self.limit = limit
        self.slack = slack
        samples = [(startNanos, 0)]
    }

    struct Reading {
        /// Bits per second over the last window; before one has passed, what moved so far spread over a whole
        /// window (the least the first window's average can come to, so a test shorter than it is checked too).
        var average: Double
        var windowHasPassed: Bool
        /// The average, less the slack, is above the limit.
        var isOver: Bool
    }

    /// Takes the total at `nanos`.
    mutating func observe(nanos: Int64, bytes: Int) -> Reading {
        samples.append((nanos, bytes))
        let window = Int64(limit.seconds * 1e9)
        while samples.count > 1 && samples[1].nanos <= nanos - window { samples.removeFirst() }
        let first = samples[0]
        let passed = first.nanos <= nanos - window
        let seconds = Double(passed ? nanos - first.nanos : window) / 1e9
        let moved = bytes - first.bytes
        return Reading(
            average: Double(moved) * 8 / seconds, windowHasPassed: passed,
            isOver: Double(max(0, moved - slack)) * 8 / seconds > Double(limit.bitsPerSecond))
    }

    /// iperf3's words, and the figures.
    static func exceeded(_ average: Double, _ limit: ServerBitrateLimit) -> String {
        "total required bandwidth is larger than server limit (" + String(format: "%.0f", average) + " bits/sec over "
            + "\(Compare.format(limit.seconds)) s; the server's --server-bitrate-limit is \(limit.bitsPerSecond))"
    }
}

/// The server ended a test that went over its --server-bitrate-limit; the client is told why.
struct ServerLimitExceeded: Error, CustomStringConvertible {
    let description: String

    init(_ description: String) { self.description = description }
}
