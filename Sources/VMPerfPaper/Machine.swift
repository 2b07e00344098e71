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
