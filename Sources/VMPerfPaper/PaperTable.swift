/// Table 1 of Youseff, Zagorodnov and Wolski, "Inter-OS Communication on Highly Parallel Multi-Core
/// Architectures": µs per round trip, the mean of 25 runs of 10^6 round trips and the sample standard deviation
/// of the 25 run means.
enum PaperTable {
    static let title = "Inter-OS Communication on Highly Parallel Multi-Core Architectures"
    static let authors = "Lamia Youseff, Dmitrii Zagorodnov, Rich Wolski"
    static let machine = "two-core 2.8 GHz Pentium D, 800 MHz bus, 2 MB L2, 1 GB DDR2-533; Linux 2.6.19, Xen 3.0.4"
    static let claim = "ping-pong in shared memory is at least 50x faster than a socket ping-pong"

    /// A mean and a standard deviation, in µs.
    struct Figure {
        let mean: Double
        let stddev: Double
    }

    /// The table's columns, as JSON keys: native Linux, then Xen with dom0 built without SMP, then with SMP.
    static let columns = [
        "native", "xen_dom0_nosmp_dom0_domU", "xen_dom0_nosmp_domU_domU",
        "xen_dom0_smp_dom0_dom0", "xen_dom0_smp_dom0_domU", "xen_dom0_smp_domU_domU",
    ]

    /// One row per benchmark, in the order of `columns`; nil for vmsock, which is ours.
    static func figures(_ task: PaperTask) -> [Figure]? {
        switch task {
        case .raw: row((0.49, 0.03), (0.36, 0.007), (0.36, 0.005), (0.36, 0.009), (0.35, 0.005), (0.39, 0.03))
        case .sync: row((1.4, 0.02), (0.8, 0.01), (0.8, 0.02), (0.8, 0.01), (0.78, 0.03), (0.8, 0.02))
        case .sync1k: row((3.4, 0.07), (3.3, 0.05), (3.3, 1.14), (2.8, 0.15), (3.1, 0.2), (2.9, 0.1))
        case .tcp: row((52.6, 0.4), (56.7, 0.2), (80.9, 0.3), (38.4, 0.3), (70.3, 0.4), (104.0, 0.5))
        case .vmsock, .quit: nil
        }
    }

    static func native(_ task: PaperTask) -> Figure? { figures(task)?.first }

    /// The fastest and the slowest of the five Xen columns.
    static func xenRange(_ task: PaperTask) -> (best: Figure, worst: Figure)? {
        guard let xen = figures(task)?.dropFirst() else { return nil }
        return (xen.min { $0.mean < $1.mean }!, xen.max { $0.mean < $1.mean }!)
    }

    private static func row(_ cells: (Double, Double)...) -> [Figure] {
        cells.map { Figure(mean: $0.0, stddev: $0.1) }
    }
}

/// The paper's statistics over a row's run figures: the mean, and the sample standard deviation (n - 1).
func meanAndDeviation(_ values: [Double]) -> (mean: Double, stddev: Double) {
    guard !values.isEmpty else { return (0, 0) }
    let mean = values.reduce(0, +) / Double(values.count)
    guard values.count > 1 else { return (mean, 0) }
    let squares = values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) }
    return (mean, (squares / Double(values.count - 1)).squareRoot())
}
