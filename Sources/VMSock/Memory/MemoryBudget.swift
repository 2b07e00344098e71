import Glibc
import Synchronization

/// Keeps our rings inside this process's memory cgroup limit.
///
/// A ring's pages are charged to the memory cgroup of the process that first writes them, when it writes them, not
/// when the ring is made. Without swap, a write that pushes the cgroup over its limit makes the kernel kill a
/// process of the group (checked here: even fallocate at set-up is killed, not refused). A TCP socket's buffers
/// shrink under pressure instead. So when the process's cgroup has a limit, every ring we make is first weighed
/// against it: the cgroup's usage that cannot be reclaimed (usage less inactive file pages), plus every ring this
/// process made and still holds (counted whole, as if already written), plus the new ring, must stay a margin
/// below the limit (1/16 of it, at least 4 MiB). Otherwise the ring is refused with ENOMEM, which a connection
/// takes as "out of resources": TCP where the policy allows, as for `ulimit -f` and `ulimit -v`.
///
/// The cgroup and whether it has a limit are looked up once, at the first ring: a process without a limit then
/// pays nothing per ring (a limit set later is not seen). With a limit, each ring reads two small files. Rings in
/// a vmsockd region are not weighed: their memory is the region's, made once.
enum MemoryBudget {
    /// Bytes of rings this process made and holds.
    private static let promised = Atomic<Int>(0)
    private static let cgroup: MemoryCgroup? = MemoryCgroup.ofThisProcess()

    /// A ring of `bytes`, weighed against the limit: the charge to keep while the ring lives (nil when the
    /// process has no limit).
    /// - Throws: ENOMEM, saying what the cgroup has and what to change.
    static func charge(_ bytes: Int) throws(VMSockError) -> MemoryCharge? {
        guard let cgroup, let now = cgroup.measure() else { return nil }
        let margin = max(now.limit / 16, 4 << 20)
        let before = promised.add(bytes, ordering: .relaxed).oldValue
        guard now.unreclaimable + before + bytes + margin <= now.limit else {
            promised.subtract(bytes, ordering: .relaxed)
            throw VMSockError(
                code: ENOMEM,
                "a \(bytes >> 10) KiB ring would bring this process's memory cgroup (\(cgroup.path)) within "
                    + "\(margin >> 20) MiB of its \(now.limit >> 20) MiB limit (\(now.unreclaimable >> 20) MiB in use, "
                    + "\(before >> 20) MiB promised to other rings); the kernel would kill the process as the ring "
                    + "fills. Raise the cgroup's memory limit for shared memory")
        }
        return MemoryCharge(bytes)
    }

    fileprivate static func release(_ bytes: Int) { promised.subtract(bytes, ordering: .relaxed) }

    /// Bytes of rings this process holds under a limit (for tests and diagnostics; 0 without a limit).
    static var promisedBytes: Int { promised.load(ordering: .relaxed) }
}

/// One ring's share of `MemoryBudget`, given back when the ring's region goes.
final class MemoryCharge: Sendable {
    let bytes: Int

    fileprivate init(_ bytes: Int) { self.bytes = bytes }

    deinit { MemoryBudget.release(bytes) }
}

/// This process's memory cgroup, v1 (a `memory` hierarchy) or v2 (the unified one), when it or a parent has a
/// limit.
struct MemoryCgroup: Sendable {
    let path: String
    let version: Int

    /// What the cgroup has now, in bytes.
    struct Measure {
        let limit: Int
        let unreclaimable: Int
    }

    /// Limits at or above this are "no limit" (v1 writes a page-rounded 2^63 - 1).
    private static let unlimited = 1 << 60

    /// The cgroup, when /proc/self/cgroup names one whose limit (its own or a parent's) is set.
    static func ofThisProcess() -> MemoryCgroup? {
        guard let bytes = Sys.readSmallFile("/proc/self/cgroup", limit: 8192) else { return nil }
        var unified: String? = nil
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3 else { continue }
            if fields[1].split(separator: ",").contains("memory") {
                let cgroup = MemoryCgroup(path: "/sys/fs/cgroup/memory" + fields[2], version: 1)
                return cgroup.measure() != nil ? cgroup : nil
            }
            if fields[0] == "0" && fields[1].isEmpty { unified = String(fields[2]) }
        }
        guard let unified else { return nil }
        let cgroup = MemoryCgroup(path: "/sys/fs/cgroup" + unified, version: 2)
        return cgroup.measure() != nil ? cgroup : nil
    }

    /// The limit and the usage that reclaim cannot give back; nil without a limit, or when the files cannot be
    /// read (then nothing is weighed).
    func measure() -> Measure? {
        let stat = Self.fields(of: path + "/memory.stat")
        let limit: Int
        let usage: Int?
        if version == 1 {
            guard let hierarchical = stat["hierarchical_memory_limit"] else { return nil }
            limit = hierarchical
            usage = Self.number(in: path + "/memory.usage_in_bytes")
        } else {
            guard let smallest = Self.smallestLimit(from: path) else { return nil }
            limit = smallest
            usage = Self.number(in: path + "/memory.current")
        }
        guard limit < Self.unlimited, let usage else { return nil }
        let inactiveFile = stat[version == 1 ? "total_inactive_file" : "inactive_file"] ?? 0
        return Measure(limit: limit, unreclaimable: max(0, usage - inactiveFile))
    }

    /// v2: the smallest memory.max from the cgroup up to the root (which has none).
    private static func smallestLimit(from path: String) -> Int? {
        var smallest: Int? = nil
        var directory = path
        while directory.count > "/sys/fs/cgroup".count {
            if let limit = number(in: directory + "/memory.max") { smallest = min(smallest ?? limit, limit) }
            guard let slash = directory.lastIndex(of: "/") else { break }
            directory = String(directory[..<slash])
        }
        return smallest
    }

    /// A file holding one number ("max" and unreadable files give nil).
    private static func number(in path: String) -> Int? {
        guard let bytes = Sys.readSmallFile(path, limit: 64) else { return nil }
        return Int(String(decoding: bytes.prefix { $0 != UInt8(ascii: "\n") }, as: UTF8.self))
    }

    /// "name value" lines of a memory.stat file.
    private static func fields(of path: String) -> [String: Int] {
        guard let bytes = Sys.readSmallFile(path, limit: 16384) else { return [:] }
        var fields: [String: Int] = [:]
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
            let parts = line.split(separator: " ")
            if parts.count == 2, let value = Int(parts[1]) { fields[String(parts[0])] = value }
        }
        return fields
    }
}
