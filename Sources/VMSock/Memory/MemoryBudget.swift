import Glibc
import Synchronization

/// Keeps our rings inside the memory cgroup limits above this process.
///
/// A ring's pages are charged to the memory cgroup of the process that first writes them, when it writes them, not
/// when the ring is made. Without swap, a write that pushes a cgroup over its limit makes the kernel kill a
/// process of the group (checked here: even fallocate at set-up is killed, not refused). A TCP socket's buffers
/// shrink under pressure instead. So when the process's cgroup, or one above it, has a limit, every ring we make
/// is first weighed against each such limit: that cgroup's usage that cannot be reclaimed (usage less inactive file
/// pages), plus every ring this process made and still holds (counted whole, as if not yet written: a written ring
/// counts twice, so a long-lived process falls back a little early), plus the new ring, must stay a margin below
/// the limit (1/16 of it, at least 4 MiB). Otherwise the ring is refused with ENOMEM, which a connection takes as
/// "out of resources": TCP where the policy allows, as for `ulimit -f` and `ulimit -v`.
///
/// The cgroups and which of them have a limit are looked up once, at the first ring: a process without a limit
/// then pays nothing per ring (a limit set later is not seen). With limits, each ring reads three small files per
/// limited cgroup. Rings in a vmsockd region are not weighed: their memory is the region's, made once.
enum MemoryBudget {
    /// Bytes of rings this process made and holds.
    private static let promised = Atomic<Int>(0)
    private static let cgroup: MemoryCgroup? = MemoryCgroup.ofThisProcess()

    /// A ring of `bytes`, weighed against every limit above the process: the charge to keep while the ring lives
    /// (nil when no cgroup of the process has a limit).
    /// - Throws: ENOMEM, saying which cgroup is short, what it has, and what to change.
    static func charge(_ bytes: Int) throws(VMSockError) -> MemoryCharge? {
        guard let cgroup else { return nil }
        let before = promised.add(bytes, ordering: .relaxed).oldValue
        for level in cgroup.levels {
            guard let now = level.measure() else { continue }
            let margin = max(now.limit / 16, 4 << 20)
            guard now.unreclaimable + before + bytes + margin > now.limit else { continue }
            promised.subtract(bytes, ordering: .relaxed)
            throw VMSockError(
                code: ENOMEM,
                "a \(bytes >> 10) KiB ring would bring the memory cgroup \(level.path) within \(margin >> 20) MiB of its "
                    + "\(now.limit >> 20) MiB limit (\(now.unreclaimable >> 20) MiB in use, \(before >> 20) MiB promised to "
                    + "this process's other rings); the kernel would kill a process as the ring fills. Raise the "
                    + "cgroup's memory limit for shared memory")
        }
        return MemoryCharge(bytes)
    }

    fileprivate static func release(_ bytes: Int) { promised.subtract(bytes, ordering: .relaxed) }
}

/// One ring's share of `MemoryBudget`, given back when the ring's region goes.
final class MemoryCharge: Sendable {
    let bytes: Int

    fileprivate init(_ bytes: Int) { self.bytes = bytes }

    deinit { MemoryBudget.release(bytes) }
}

/// The memory cgroups of this process, v1 (a `memory` hierarchy) or v2 (the unified one), from its own up to the
/// hierarchy's root, that have a limit. Each is weighed on its own usage, which counts its other members and
/// descendants too: a parent at its limit through a sibling group kills us as surely as our own.
struct MemoryCgroup: Sendable {
    let levels: [Level]

    /// One cgroup directory.
    struct Level: Sendable {
        let path: String
        let version: Int

        /// What the cgroup has now, in bytes: its limit, and the usage reclaim cannot give back (usage less
        /// inactive file pages); nil without a limit, or when its files cannot be read.
        func measure() -> Measure? {
            let limitFile = version == 1 ? "/memory.limit_in_bytes" : "/memory.max"
            let usageFile = version == 1 ? "/memory.usage_in_bytes" : "/memory.current"
            guard let limit = MemoryCgroup.number(in: path + limitFile), limit < MemoryCgroup.unlimited,
                let usage = MemoryCgroup.number(in: path + usageFile)
            else { return nil }
            let stat = MemoryCgroup.fields(of: path + "/memory.stat")
            let inactiveFile = stat[version == 1 ? "total_inactive_file" : "inactive_file"] ?? 0
            return Measure(limit: limit, unreclaimable: max(0, usage - inactiveFile))
        }
    }

    struct Measure {
        let limit: Int
        let unreclaimable: Int
    }

    /// Limits at or above this are "no limit" (v1 writes a page-rounded 2^63 - 1).
    fileprivate static let unlimited = 1 << 60

    /// The limited cgroups /proc/self/cgroup names (and their parents), or nil when none has a limit. A path that
    /// is not under the mount (a container without its own cgroup namespace sees the host's path) is taken as the
    /// mount's root, which is then the container's own cgroup.
    static func ofThisProcess() -> MemoryCgroup? {
        guard let bytes = Sys.readSmallFile("/proc/self/cgroup", limit: 8192) else { return nil }
        var found: (root: String, path: String, version: Int)? = nil
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3 else { continue }
            if fields[1].split(separator: ",").contains("memory") {
                found = ("/sys/fs/cgroup/memory", String(fields[2]), 1)
                break
            }
            if fields[0] == "0" && fields[1].isEmpty { found = ("/sys/fs/cgroup", String(fields[2]), 2) }
        }
        guard let found else { return nil }
        var directory = found.root + found.path
        if Sys.pathStatus(directory) == nil { directory = found.root }
        var levels: [Level] = []
        while true {
            let level = Level(path: directory, version: found.version)
            if level.measure() != nil { levels.append(level) }
            guard directory.count > found.root.count, let slash = directory.lastIndex(of: "/") else { break }
            directory = String(directory[..<slash])
        }
        return levels.isEmpty ? nil : MemoryCgroup(levels: levels)
    }

    /// A file holding one number ("max" and unreadable files give nil).
    fileprivate static func number(in path: String) -> Int? {
        guard let bytes = Sys.readSmallFile(path, limit: 64) else { return nil }
        return Int(String(decoding: bytes.prefix { $0 != UInt8(ascii: "\n") }, as: UTF8.self))
    }

    /// "name value" lines of a memory.stat file.
    fileprivate static func fields(of path: String) -> [String: Int] {
        guard let bytes = Sys.readSmallFile(path, limit: 16384) else { return [:] }
        var fields: [String: Int] = [:]
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
            let parts = line.split(separator: " ")
            if parts.count == 2, let value = Int(parts[1]) { fields[String(parts[0])] = value }
        }
        return fields
    }
}
