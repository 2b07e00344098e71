import CVMSock
import Glibc

/// The calling thread's CPU affinity (sched_getaffinity/sched_setaffinity through the C shim).
public struct CPUMask {
    var raw = vms_cpu_mask()

    /// The CPUs this thread may run on now.
    public static func current() throws -> CPUMask {
        var mask = CPUMask()
        guard vms_get_affinity(&mask.raw) == 0 else {
            throw Failure("sched_getaffinity failed: \(String(cString: strerror(errno)))")
        }
        return mask
    }

    /// A mask of one CPU.
    public static func only(_ cpu: Int) -> CPUMask {
        var mask = CPUMask()
        withUnsafeMutableBytes(of: &mask.raw.bits) { $0.bindMemory(to: UInt64.self)[cpu / 64] = 1 << UInt64(cpu % 64) }
        return mask
    }

    /// The CPUs in the mask, in increasing order.
    public var cpus: [Int] {
        withUnsafeBytes(of: raw.bits) { bytes in
            let words = bytes.bindMemory(to: UInt64.self)
            return (0..<(words.count * 64)).filter { words[$0 / 64] & (1 << UInt64($0 % 64)) != 0 }
        }
    }

    /// Restricts the calling thread to this mask. Returns 0, or the errno.
    public func apply() -> Int32 {
        var copy = raw
        return vms_set_affinity(&copy) == 0 ? 0 : errno
    }
}
