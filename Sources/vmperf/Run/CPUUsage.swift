import Glibc

/// Processor time this process used over a test, as percentages of the wall time (iperf3's
/// `cpu_utilization_percent`): user, system and their sum.
struct CPUUsage: Codable {
    var user: Double
    var system: Double
    var total: Double { user + system }

    struct Snapshot {
        let user: Double
        let system: Double
        let wall: UInt64

        static func now() -> Snapshot {
            var usage = rusage()
            getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
            let seconds = { (t: timeval) in Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
            return Snapshot(user: seconds(usage.ru_utime), system: seconds(usage.ru_stime), wall: monotonicNanos())
        }
    }

    init(user: Double, system: Double) {
        self.user = user
        self.system = system
    }

    init(from start: Snapshot, to end: Snapshot) {
        let wall = max(Double(end.wall &- start.wall) / 1e9, 1e-9)
        user = (end.user - start.user) / wall * 100
        system = (end.system - start.system) / wall * 100
    }
}
