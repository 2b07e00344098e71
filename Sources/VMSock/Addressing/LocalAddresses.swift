import Glibc
import Synchronization

/// Which addresses belong to this host (this network namespace): loopback, and every address of a local
/// interface. `auto` only looks for a shared-memory listener behind such an address.
enum LocalAddresses {
    /// Interfaces change rarely and getifaddrs costs a netlink round trip, so the list is kept for a second.
    private static let cache = Mutex<(taken: Int64, addresses: Set<[UInt8]>)?>(nil)
    private static let lifetimeNanos: Int64 = 1_000_000_000

    static func isLocal(_ endpoint: IPEndpoint) -> Bool {
        if endpoint.isLoopback { return true }
        if let v4 = endpoint.mappedIPv4 { return isLocal(v4) }
        return current().contains(endpoint.addressBytes)
    }

    /// The non-loopback addresses of this namespace's interfaces, of one family (for a wildcard listener's
    /// registrations).
    static func interfaceAddresses(_ family: IPEndpoint.Family) -> [IPEndpoint] {
        current().filter { $0.count == (family == .v4 ? 4 : 16) }
            .map { IPEndpoint(family: family, addressBytes: $0, port: 0) }
            .filter { !$0.isLoopback }
            .sorted { $0.addressBytes.lexicographicallyPrecedes($1.addressBytes) }
    }

    private static func current() -> Set<[UInt8]> {
        let now = monotonicNanos()
        if let cached = cache.withLock({ $0 }), now - cached.taken < lifetimeNanos { return cached.addresses }
        let fresh = read()
        cache.withLock { $0 = (now, fresh) }
        return fresh
    }

    /// The addresses of this namespace's interfaces. None when getifaddrs fails (out of memory, no netlink): then
    /// only loopback counts as local, and `auto` uses TCP for the rest, as for a remote host.
    private static func read() -> Set<[UInt8]> {
        var found: Set<[UInt8]> = []
        do {
            try Sys.forEachInterfaceAddress { address in
                if let endpoint = IPEndpoint(address) { found.insert(endpoint.addressBytes) }
            }
        } catch {
            return []
        }
        return found
    }

    /// The inode of this process's network namespace: it tells namespaces apart in a registry directory that
    /// several of them share.
    static let networkNamespace: UInt64 = UInt64(Sys.inode(of: "/proc/self/ns/net") ?? 0)
}
