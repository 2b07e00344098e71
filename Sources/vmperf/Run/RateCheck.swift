import Foundation

/// `--server-bitrate-limit` on the server: the bytes of every stream of the test added up (both directions, as
/// iperf3 counts them), taken about every 100 ms while the test runs, and averaged over the limit's window.
struct RateCheck {
    let limit: ServerBitrateLimit
    /// (when, total bytes), oldest first: the window's and the one just before it.
    private var samples: [(nanos: Int64, bytes: Int)]

    init(_ limit: ServerBitrateLimit, startNanos: Int64) {
        self.limit = limit
        samples = [(startNanos, 0)]
    }

    /// Takes the total at `nanos`; returns the average over the last window in bits per second, or nil while
    /// the test is younger than one window.
    mutating func observe(nanos: Int64, bytes: Int) -> Double? {
        samples.append((nanos, bytes))
        let windowStart = nanos - Int64(limit.seconds * 1e9)
        while samples.count > 1 && samples[1].nanos <= windowStart { samples.removeFirst() }
        guard let first = samples.first, first.nanos <= windowStart, nanos > first.nanos else { return nil }
        return Double(bytes - first.bytes) * 8 / (Double(nanos - first.nanos) / 1e9)
    }

    /// iperf3's words, and the figures.
    static func exceeded(_ average: Double, _ limit: ServerBitrateLimit) -> String {
        "total required bandwidth is larger than server limit (" + String(format: "%.0f", average) + " bits/sec over the last "
            + "\(Compare.format(limit.seconds)) s; the server's --server-bitrate-limit is \(limit.bitsPerSecond))"
    }
}

/// The server ended a test that went over its --server-bitrate-limit; the client is told why.
struct ServerLimitExceeded: Error, CustomStringConvertible {
    let description: String

    init(_ description: String) { self.description = description }
}
