import Foundation
import VMPerfSupport

/// One row measured here: the run figures (µs per round trip) and the paper's statistics over them.
struct PaperRow {
    let task: PaperTask
    let runs: [Double]
    let mean: Double
    let stddev: Double

    init(_ task: PaperTask, runs: [Double]) {
        self.task = task
        self.runs = runs
        (mean, stddev) = meanAndDeviation(runs)
    }

    /// What one round trip is, in a few words.
    var what: String {
        switch task {
        case .raw: "one shared turn word, busy-waiting (paper Fig. 2a)"
        case .sync: "P/V semaphores on Lamport's bakery lock around a shared integer (paper Fig. 2b)"
        case .sync1k: "Sync passing 1000 bytes each turn (copied into the shared page and out of it)"
        case .tcp: "a 4-byte integer over TCP loopback, blocking send/recv, TCP_NODELAY"
        case .vmsock, .quit: "ours: a 4-byte integer through VMSocket over shared memory (blocking read/write)"
        }
    }
}

/// What `--paper` prints: a table beside the paper's figures, or (-J) one JSON document.
struct PaperReport {
    let machine: Machine
    let runs: Int
    let iterations: Int
    let warmup: Int
    /// The parent's and the peer's CPU; empty when the two run unpinned.
    let cpus: [Int]
    /// Why the two run unpinned.
    let pinningNote: String?
    var rows: [PaperRow] = []

    // MARK: Human output

    var header: [String] {
        let pinning = cpus.count == 2
            ? "pinned: this process on CPU \(cpus[0]), the peer on CPU \(cpus[1])"
            : "NOT pinned (\(pinningNote ?? "unknown reason"))"
        return [
            "vmperf --paper: Table 1 of \(PaperTable.authors), \"\(PaperTable.title)\"",
            "This machine: \(machine.cpuModel), \(machine.onlineCPUs) CPUs online; \(machine.systemInfo)",
            "The paper's: \(PaperTable.machine)",
            "Two processes sharing one page of memory (a memfd), \(pinning).",
            "\(runs) runs of \(iterations) round trips per row, after \(warmup) to warm up.",
            "µs per round trip: mean (sample standard deviation of the \(runs) run figures), as in the paper.",
            "",
            Self.columns("row", "this machine", "paper: native", "paper: Xen best", "Xen worst"),
        ]
    }

    func line(_ row: PaperRow) -> String {
        let ours = Self.format(row.mean, row.stddev)
        guard let native = PaperTable.native(row.task), let xen = PaperTable.xenRange(row.task) else {
            return Self.columns(row.task.name + "*", ours, "-", "-", "-")
        }
        return Self.columns(row.task.name, ours, Self.format(native), Self.format(xen.best), Self.format(xen.worst))
    }

    var footer: [String] {
        var lines = ["", "* ours, not the paper's: the same 4-byte ping-pong through VMSocket (vmsock's shared-memory rings)."]
        lines += rows.map { "\($0.task.name): \($0.what)." }
        if let ratio = tcpOverRaw {
            let here = String(format: ratio < 10 ? "%.2f" : "%.0f", ratio)
            let ratios = String(format: "TCP / Raw: \(here)x here, %.0fx in the paper (native Linux).", Self.paperTCPOverRaw)
            lines.append(ratios + " The paper: \"\(PaperTable.claim)\".")
        }
        return lines
    }

    // MARK: JSON

    var document: JSON {
        .object([
            ("paper", .object([
                ("title", .string(PaperTable.title)),
                ("authors", .string(PaperTable.authors)),
                ("table", .string("Table 1")),
                ("machine", .string(PaperTable.machine)),
                ("units", .string("microseconds per round trip; mean and sample standard deviation of the run figures")),
                ("claim", .string(PaperTable.claim)),
            ])),
            ("system_info", .string(machine.systemInfo)),
            ("cpu_model", .string(machine.cpuModel)),
            ("online_cpus", .int(machine.onlineCPUs)),
            ("runs", .int(runs)),
            ("iterations", .int(iterations)),
            ("warmup_iterations", .int(warmup)),
            ("pinned", .bool(cpus.count == 2)),
            ("cpus", .array(cpus.map { .int($0) })),
            ("pinning_note", pinningNote.map { .string($0) } ?? .null),
            ("rows", .array(rows.map(Self.json))),
            ("tcp_over_raw", tcpOverRaw.map { .double($0) } ?? .null),
            ("paper_tcp_over_raw", .double(Self.paperTCPOverRaw)),
        ])
    }

    private static func json(_ row: PaperRow) -> JSON {
        let paper: JSON = PaperTable.figures(row.task).map { figures in
            .object(zip(PaperTable.columns, figures).map { ($0, figure($1.mean, $1.stddev)) })
        } ?? .null
        return .object([
            ("name", .string(row.task.name)),
            ("ours", .bool(row.task == .vmsock)),
            ("what", .string(row.what)),
            ("mean_us", .double(row.mean)),
            ("stddev_us", .double(row.stddev)),
            ("runs_us", .array(row.runs.map { .double($0) })),
            ("paper", paper),
        ])
    }

    private static func figure(_ mean: Double, _ stddev: Double) -> JSON {
        .object([("mean_us", .double(mean)), ("stddev_us", .double(stddev))])
    }

    // MARK: Figures

    var tcpOverRaw: Double? {
        guard let tcp = rows.first(where: { $0.task == .tcp }), let raw = rows.first(where: { $0.task == .raw }),
              raw.mean > 0 else { return nil }
        return tcp.mean / raw.mean
    }

    static var paperTCPOverRaw: Double { PaperTable.native(.tcp)!.mean / PaperTable.native(.raw)!.mean }

    /// "0.123 (0.004)": as many decimals as three significant digits of the mean need, the same for the deviation.
    private static func format(_ mean: Double, _ stddev: Double) -> String {
        let decimals = mean < 1 ? 3 : mean < 10 ? 2 : 1
        return String(format: "%.\(decimals)f (%.\(decimals)f)", mean, stddev)
    }

    /// The paper's figures as printed there.
    private static func format(_ figure: PaperTable.Figure) -> String {
        String(format: "%g (%g)", figure.mean, figure.stddev)
    }

    private static func columns(_ name: String, _ ours: String, _ native: String, _ best: String, _ worst: String) -> String {
        name.padding(toLength: 10, withPad: " ", startingAt: 0) + ours.padding(toLength: 20, withPad: " ", startingAt: 0)
            + native.padding(toLength: 16, withPad: " ", startingAt: 0) + best.padding(toLength: 17, withPad: " ", startingAt: 0)
            + worst
    }
}
