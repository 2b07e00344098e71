import Glibc
import Synchronization

/// How a connection carries its bytes.
public enum Transport: String, Sendable, CustomStringConvertible {
    /// Shared-memory rings with a peer on this host.
    case sharedMemory = "shared memory"
    /// A real TCP connection.
    case tcp = "TCP"
    /// Rings inside a vmsockd region, with a peer of that region (another host process, or a guest).
    case ivshmem = "ivshmem"

    public var description: String { rawValue }

    /// Whether the bytes go through shared-memory rings (this host's, or a vmsockd region's): `readInPlace` and
    /// `writeInPlace` then hand out the ring itself, where over TCP they go through a buffer.
    public var usesRings: Bool { self != .tcp }
}

/// Which transports a connection may use: per socket (`VMSocketOptions.transport`) or per process
/// (`VMSOCK_TRANSPORT=auto|shm|tcp|ivshmem`).
public enum TransportPolicy: String, Sendable, CaseIterable {
    /// Shared memory when the destination is on this host and a trusted vmsock listener is registered for it
    /// and the handshake succeeds; else, in a process that joined a vmsockd region (`VMSOCK_IVSHMEM`), the region
    /// when a peer of it listens on that address and port; TCP otherwise, with the reason recorded.
    case auto
    /// Shared memory or nothing: connect fails with ECONNREFUSED and the reason instead of falling back.
    case shm
    /// TCP only. A listener under this policy does not register for shared memory.
    case tcp
    /// The vmsockd region or nothing (like `shm`, for the region): the process must have joined one
    /// (`VMSOCK_IVSHMEM`, or `VMSocketOptions.ivshmemPath`). A listener under it registers only in the region.
    case ivshmem

    /// The process default: `VMSOCK_TRANSPORT`, or `auto` when it is unset. An unknown value is reported once on
    /// stderr and treated as `auto`.
    public static let processDefault: TransportPolicy = {
        guard let raw = Sys.setting("VMSOCK_TRANSPORT"), !raw.isEmpty else { return .auto }
        if let policy = TransportPolicy(rawValue: raw.lowercased()) { return policy }
        Sys.writeToStandardError("vmsock: ignoring VMSOCK_TRANSPORT=\(raw): use auto, shm, tcp or ivshmem\n")
        return .auto
    }()
}

/// Why a connection that could have used shared memory uses TCP.
public enum FallbackReason: String, Sendable, CaseIterable, CustomStringConvertible {
    /// The destination is not an address of this host.
    case remote
    /// No vmsock listener is registered for that address and port (a plain TCP server, or nothing).
    case noListener = "no shared-memory listener"
    /// A registration exists, but its owner (SO_PEERCRED) is a user this socket does not trust.
    case untrustedOwner = "untrusted owner"
    /// The listener turned us away by its peer policy.
    case refusedByListener = "refused by the listener's policy"
    /// The listener speaks another handshake version.
    case versionMismatch = "version mismatch"
    /// Memory, descriptors or mappings ran out on one side.
    case outOfResources = "out of resources"
    /// The transport policy is `tcp`.
    case disabledByPolicy = "disabled by policy"
    /// The listener broke, reset or timed out the handshake.
    case handshakeFailed = "handshake failed"

    /// In words, for `transportDescription` ("TCP (no shared-memory listener)").
    public var description: String { self == .disabledByPolicy ? "shared memory off by policy" : rawValue }
}

/// The process's connection counters: how many connections each transport carried, and why `auto` chose TCP.
public struct TransportStatistics: Sendable, Equatable, CustomStringConvertible {
    public var sharedMemory: Int
    /// Of `sharedMemory`, the connections that reopened a parked link (see `VMSocketOptions.reusesLinks`).
    public var sharedMemoryReused: Int
    public var tcp: Int
    /// Connections through a vmsockd region.
    public var ivshmem: Int = 0
    public var fallbacks: [FallbackReason: Int]

    /// The counters now (connections made by connect and by accept since the process started).
    public static var current: TransportStatistics { counters.withLock { $0 } }

    static let counters = Mutex(TransportStatistics(sharedMemory: 0, sharedMemoryReused: 0, tcp: 0, fallbacks: [:]))

    /// Counts one new connection, and for a TCP one the reason shared memory was not used.
    static func count(_ transport: Transport, fallback: FallbackReason?, reused: Bool = false) {
        counters.withLock { stats in
            if reused { stats.sharedMemoryReused += 1 }
            switch transport {
            case .sharedMemory: stats.sharedMemory += 1
            case .tcp: stats.tcp += 1
            case .ivshmem: stats.ivshmem += 1
            }
            if let fallback { stats.fallbacks[fallback, default: 0] += 1 }
        }
    }

    public var description: String {
        let reasons = FallbackReason.allCases.compactMap { reason in fallbacks[reason].map { "\(reason): \($0)" } }
        return "shared memory: \(sharedMemory) (\(sharedMemoryReused) on reused links), TCP: \(tcp)" + (ivshmem > 0 ? ", ivshmem: \(ivshmem)" : "") + (reasons.isEmpty ? "" : " (\(reasons.joined(separator: ", ")))")
    }
}
