import CVMSock
import Glibc
import VMPerfSupport

/// `vmperf --paper`: Table 1 of "Inter-OS Communication on Highly Parallel Multi-Core Architectures" on this
/// machine. A program of its own inside vmperf, which only parses the command line and calls `run` (or, in the
/// second process, `runPeer`).
///
/// Two processes, this one and a copy of it started with `--paper-peer`, share one page of memory and ping-pong
/// through it (Raw, Sync, Sync1k), then over TCP loopback, then through vmsock. Each row: a warm-up, then
/// `runs` runs of `iterations` round trips, each run timed by this process; the row's figure is the mean of
/// the runs' µs per round trip and their sample standard deviation, as in the paper.
public struct PaperBenchmark {
    /// The option the second process is started with: `/proc/self/exe --paper-peer fd=N`. The executable that
    /// calls `run` must hand this option's value to `runPeer`.
    public static let peerOption = "--paper-peer"

    let runs: Int
    let iterations: Int
    let report: Report

    /// - Parameters:
    ///   - runs: timed runs per row (the paper: 25).
    ///   - iterations: round trips per run (the paper: 1,000,000).
    ///   - report: where the table goes, line by line as the rows are measured, or the JSON document at the end.
    public init(runs: Int, iterations: Int, report: Report) {
        self.runs = runs
        self.iterations = iterations
        self.report = report
    }

    /// Round trips before a row's timed runs: caches, branch predictors and the peer's first turns settle.
    var warmup: Int { min(iterations, 10_000) }

    /// Measures the table and reports it. Throws `Failure` (one line for the user) when the peer cannot be
    /// started, dies, gives up or stops making progress, or a connection fails.
    public func run() throws {
        let machine = Machine.current()
        // The first two CPUs we may run on (0 and 1 on most machines): this process on the first, the peer on
        // the second.
        let allowed = (try? CPUMask.current())?.cpus ?? []
        let plan = allowed.count >= 2 ? Array(allowed.prefix(2)) : nil
        let mapping = try PageMapping.create()
        // `side` holds bare pointers into the mapping: keep it mapped to the very end.
        defer { withExtendedLifetime(mapping) {} }
        mapping.page.initialize(parentPid: getpid(), peerCPU: plan.map { Int32($0[1]) } ?? -1,
                                runs: runs, iterations: iterations, warmup: warmup)
        let pid = try PeerProcess.spawn(sharing: mapping.fd)
        mapping.closeDescriptor()
        var side = Side(me: 0, page: mapping.page, otherPid: pid)
        var stage = "start-up"
        let result: PaperReport
        do {
            result = try { () throws -> PaperReport in
                // Hello: the peer has mapped the page and tried to pin itself.
                try side.barrier()
                let (cpus, note) = pin(plan, allowed: allowed, peerResult: side.page.peerPinResult)
                side.page.pinned = !cpus.isEmpty
                // The peer learns the verdict, and unpins itself if we could not pin.
                try side.barrier()
                var result = PaperReport(machine: machine, runs: runs, iterations: iterations,
                                         warmup: warmup, cpus: cpus, pinningNote: note)
                result.header.forEach { report.line($0) }
                for task in PaperTask.rows {
                    stage = task.name
                    let row = PaperRow(task, runs: try side.runRow(task))
                    result.rows.append(row)
                    report.line(result.line(row))
                }
                stage = "shut-down"
                _ = try side.runRow(.quit)
                return result
            }()
        } catch let stop as Stop {
            PeerProcess.kill(pid, reaped: side.watch.peerStatus)
            throw Failure("--paper: during \(stage), \(explain(stop, side.page))")
        } catch {
            // A connection that broke usually means the peer died or gave up: say that first when it is so.
            let cause = peerTrouble(&side.watch, side.page)
            PeerProcess.kill(pid, reaped: side.watch.peerStatus)
            guard let cause else { throw error }
            throw Failure("--paper: during \(stage), \(cause) (\(error))")
        }
        // Reaped here, once: from now on the pid may belong to someone else.
        let status = PeerProcess.finish(pid, reaped: side.watch.peerStatus)
        guard status == 0 else {
            let why = vms_load_seqcst_u32(side.page.failed) != 0 ? ": \(side.page.message)" : ""
            throw Failure("--paper: the peer process \(PeerProcess.describe(status)) at the end\(why)")
        }
        if report.json {
            report.document(result.document)
        } else {
            result.footer.forEach { report.line($0) }
        }
    }

    /// What is wrong with the peer, if anything shows within 200 ms.
    private func peerTrouble(_ watch: inout Watchdog, _ page: PaperPage) -> String? {
        for _ in 0..<20 {
            do throws(Stop) {
                try watch.checkPeer()
            } catch {
                return explain(error, page)
            }
            usleep(10_000)
        }
        return nil
    }

    /// Pins this process to the plan's first CPU once the peer has pinned itself to the second. With fewer than
    /// two CPUs, or when either pin fails, both run unpinned and the note says why.
    private func pin(_ plan: [Int]?, allowed: [Int], peerResult: Int32) -> (cpus: [Int], note: String?) {
        guard let plan else {
            return ([], "this process may run on \(allowed.count) CPU\(allowed.count == 1 ? "" : "s") only, two are needed")
        }
        guard peerResult == 0 else {
            return ([], "pinning the peer to CPU \(plan[1]) failed: \(String(cString: strerror(peerResult)))")
        }
        let mine = CPUMask.only(plan[0]).apply()
        guard mine == 0 else { return ([], "pinning to CPU \(plan[0]) failed: \(String(cString: strerror(mine)))") }
        return (plan, nil)
    }

    private func explain(_ stop: Stop, _ page: PaperPage) -> String {
        switch stop {
        case .peerExited(let status): "the peer process \(PeerProcess.describe(status))"
        case .peerFailed: "the peer failed: \(page.message)"
        case .noProgress: "the peer made no progress for \(Watchdog.patience) s"
        case .parentGone: "the parent process is gone"
        }
    }

    // MARK: The peer

    /// `--paper-peer fd=N`: the second process. It maps the page, pins itself, then runs whatever row the parent
    /// announces until told to quit, then returns. It prints nothing: when it fails, it writes why into the page
    /// for the parent to report and exits with status 1. Throws only when it was not started by `run` (`how` is
    /// not `fd=N` naming the parent's shared page).
    public static func runPeer(_ how: String) throws {
        // The kernel kills us when the parent goes, even in the middle of a busy wait.
        _ = vms_set_parent_death_signal(SIGKILL)
        guard how.hasPrefix("fd="), let fd = Int32(how.dropFirst(3)), fd >= 0 else {
            throw Failure("\(peerOption) is started by --paper (expected fd=N, got \(how))")
        }
        let mapping = try PageMapping.attach(fd)
        defer { withExtendedLifetime(mapping) {} }
        let page = mapping.page
        // A parent gone before the death signal was set would never be signalled for.
        guard getppid() == page.parentPid else { exit(1) }
        var side = Side(me: 1, page: page, otherPid: page.parentPid)
        do {
            try serve(&side)
        } catch Stop.parentGone {
            exit(1)
        } catch {
            page.fail("\(error)")
            exit(1)
        }
    }

    private static func serve(_ side: inout Side) throws {
        let original = try CPUMask.current()
        let cpu = side.page.peerCPU
        if cpu >= 0 { side.page.peerPinResult = CPUMask.only(Int(cpu)).apply() }
        try side.barrier()
        try side.barrier()
        if cpu >= 0, side.page.peerPinResult == 0, !side.page.pinned { _ = original.apply() }
        while true {
            try side.barrier()
            guard let task = side.page.task else { throw Failure("the parent announced an unknown row") }
            if task == .quit { return }
            _ = try side.runRow(task)
        }
    }
}
