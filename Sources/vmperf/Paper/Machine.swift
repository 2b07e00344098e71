import CVMSock
import Foundation
import Glibc

/// What the report says about this machine: the CPU model, the system, how many CPUs.
struct Machine {
    /// /proc/cpuinfo's first "model name" (x86), or "unknown".
    let cpuModel: String
    /// uname: system, host name, release, version, machine (iperf3's `system_info`).
    let systemInfo: String
    let onlineCPUs: Int

    static func current() -> Machine {
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let model = cpuinfo.split(separator: "\n").first { $0.hasPrefix("model name") }
            .flatMap { $0.split(separator: ":", maxSplits: 1).last }
            .map { $0.trimmingCharacters(in: .whitespaces) }
        var names = utsname()
        uname(&names)
        let fields = [names.sysname, names.nodename, names.release, names.version, names.machine]
        let info = fields.map { field in
            withUnsafeBytes(of: field) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        }
        return Machine(cpuModel: model ?? "unknown", systemInfo: info.joined(separator: " "),
                       onlineCPUs: sysconf(Int32(_SC_NPROCESSORS_ONLN)))
    }
}

/// The calling thread's CPU affinity (sched_getaffinity/sched_setaffinity through the C shim).
struct CPUMask {
    var raw = vms_cpu_mask()

    /// The CPUs this thread may run on now.
    static func current() throws -> CPUMask {
        var mask = CPUMask()
        guard vms_get_affinity(&mask.raw) == 0 else {
            throw Failure("sched_getaffinity failed: \(String(cString: strerror(errno)))")
        }
        return mask
    }

    /// A mask of one CPU.
    static func only(_ cpu: Int) -> CPUMask {
        var mask = CPUMask()
        withUnsafeMutableBytes(of: &mask.raw.bits) { $0.bindMemory(to: UInt64.self)[cpu / 64] = 1 << UInt64(cpu % 64) }
        return mask
    }

    /// The CPUs in the mask, in increasing order.
    var cpus: [Int] {
        withUnsafeBytes(of: raw.bits) { bytes in
            let words = bytes.bindMemory(to: UInt64.self)
            return (0..<(words.count * 64)).filter { words[$0 / 64] & (1 << UInt64($0 % 64)) != 0 }
        }
    }

    /// Restricts the calling thread to this mask. Returns 0, or the errno.
    func apply() -> Int32 {
        var copy = raw
        return vms_set_affinity(&copy) == 0 ? 0 : errno
    }
}
