import Foundation
import Glibc
import VMSock

/// Processor time this process used over a test, as percentages of the wall time (iperf3's
/// `cpu_utilization_percent`): user, system and their sum. Also the share of the whole machine's processor time
/// that the hypervisor gave to others (steal): a figure measured while it was high says more about the host
/// than about the transport.
struct CPUUsage: Codable {
    var user: Double
    var system: Double
    /// Percent of all CPUs' time stolen during the test (`/proc/stat`); nil where that cannot be read.
    var steal: Double? = nil
    var total: Double { user + system }

    struct Snapshot {
        let user: Double
        let system: Double
        let wall: Int64
        let machine: MachineTicks?

        static func now() -> Snapshot {
            var usage = rusage()
            getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
            let seconds = { (t: timeval) in Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
            return Snapshot(
                user: seconds(usage.ru_utime), system: seconds(usage.ru_stime), wall: MonotonicClock.nanoseconds(),
                machine: MachineTicks.now())
        }
    }

    /// The first line of `/proc/stat`: all CPUs' time in clock ticks, and the part of it stolen.
    struct MachineTicks {
        let total: UInt64
        let steal: UInt64

        static func now() -> MachineTicks? {
            guard let file = fopen("/proc/stat", "r") else { return nil }
            defer { fclose(file) }
            var line = [CChar](repeating: 0, count: 256)
            guard fgets(&line, Int32(line.count), file) != nil else { return nil }
            let fields = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self).split(separator: " ")
            // cpu user nice system idle iowait irq softirq steal ...
            guard fields.first == "cpu", fields.count >= 9 else { return nil }
            let ticks = fields.dropFirst().compactMap { UInt64($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            guard ticks.count >= 8 else { return nil }
            return MachineTicks(total: ticks.prefix(8).reduce(0, +), steal: ticks[7])
        }
    }

    init(user: Double, system: Double) {
        self.user = user
        self.system = system
    }

    init(from start: Snapshot, to end: Snapshot) {
        let wall = max(Double(end.wall - start.wall) / 1e9, 1e-9)
        user = (end.user - start.user) / wall * 100
        system = (end.system - start.system) / wall * 100
        if let before = start.machine, let after = end.machine, after.total > before.total {
            steal = Double(after.steal &- before.steal) / Double(after.total - before.total) * 100
        }
    }
}
