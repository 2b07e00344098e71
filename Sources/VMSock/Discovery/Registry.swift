import Glibc

/// The host-local registry of shared-memory listeners: one control socket per address and port a vmsock
/// listener accepts on, bound under a name derived from them.
///
/// By default the names live in the abstract Unix namespace, which belongs to the network namespace: a listener's
/// names vanish the moment it closes or its process dies, so nothing stale can remain. With a directory
/// (`VMSOCK_DIR`, or `VMSocketOptions.registryDirectory`) they are socket files there, for containers that share
/// a directory but not a network namespace. A file left by a crashed process is harmless: connecting to it is
/// refused (the client moves on), and the next listener on that address replaces it.
///
/// Names: `tcp-<scope>-<address>-<port>`. Loopback and wildcard addresses mean something different in every
/// network namespace, so their scope is `net<inode of /proc/self/ns/net>`; other addresses have scope `host`.
enum Registry {
    /// The control addresses a listener bound to `bound` registers. A wildcard listener registers the wildcard
    /// (found by local clients whatever address they dial), and in a shared directory also each interface address
    /// of its namespace (for clients in other namespaces, which dial those).
    static func names(forListenerOn bound: IPEndpoint, directory: String?) -> [ControlAddress] {
        var endpoints = [bound]
        if bound.isWildcard && directory != nil {
            endpoints += LocalAddresses.interfaceAddresses(bound.family).map { $0.with(port: bound.port) }
            if bound.family == .v6 {  // a dual-stack listener accepts IPv4 too
                endpoints += LocalAddresses.interfaceAddresses(.v4).map { $0.with(port: bound.port) }
            }
        }
        return endpoints.map { address(of: $0, directory: directory) }
    }

    /// Where a client looks for a listener that accepts on `destination`, in order: that exact address, then a
    /// wildcard listener (an IPv4 client also finds a dual-stack IPv6 one). A destination that is not local is
    /// only looked up in a shared directory, and only by its exact address.
    static func candidates(for destination: IPEndpoint, isLocal: Bool, directory: String?) -> [ControlAddress] {
        let exact = destination.mappedIPv4 ?? destination
        guard isLocal else { return directory == nil ? [] : [address(of: exact, directory: directory)] }
        var endpoints = [exact, .wildcard(exact.family, port: exact.port)]
        if exact.family == .v4 { endpoints.append(.wildcard(.v6, port: exact.port)) }
        return endpoints.map { address(of: $0, directory: directory) }
    }

    static func key(of endpoint: IPEndpoint) -> String {
        let scope = endpoint.isLoopback || endpoint.isWildcard ? "net\(LocalAddresses.networkNamespace)" : "host"
        return "tcp-\(scope)-\(endpoint.host)-\(endpoint.port)"
    }

    static func address(of endpoint: IPEndpoint, directory: String?) -> ControlAddress {
        guard let directory else { return ControlAddress(kind: .abstract, name: "vmsock/" + key(of: endpoint)) }
        return ControlAddress(kind: .path, name: directory + "/" + key(of: endpoint))
    }

    /// The directory from `VMSOCK_DIR`, or nil for the abstract namespace.
    static let processDirectory: String? = {
        guard let raw = Sys.setting("VMSOCK_DIR"), !raw.isEmpty else { return nil }
        return raw.hasSuffix("/") && raw.count > 1 ? String(raw.dropLast()) : raw
    }()
}

/// One bound registration: a listening control socket under a registry name. Closing it (or its process dying)
/// removes it; a socket file is unlinked, but only while it is still ours.
final class Registration: @unchecked Sendable {  // immutable but for the socket's own state
    let address: ControlAddress
    let socket: GuardedDescriptor
    private let inode: ino_t?
    /// The process that bound it: only that one removes the socket file (a forked child's close of its copy must
    /// not take the parent's registration away).
    private let creator = Sys.processID()

    /// Binds `address`. In a directory, a file that nobody answers on is stale and replaced; one that answers
    /// belongs to a live listener, and this fails with EADDRINUSE.
    init(_ address: ControlAddress, backlog: Int32) throws(VMSockError) {
        self.address = address
        let bound: Descriptor
        do {
            bound = try ControlSocket.listen(address, backlog: backlog)
        } catch where error.code == EADDRINUSE && address.kind == .path {
            guard Self.isStale(address) else { throw Self.inUse(address) }
            Sys.unlink(address.name)
            bound = try ControlSocket.listen(address, backlog: backlog)
        } catch where error.code == EADDRINUSE {
            throw Self.inUse(address)
        }
        // The listener polls all its sockets at once and accepts without blocking on any of them.
        try Sys.setNonBlocking(bound.raw, true)
        inode = address.kind == .path ? Sys.inode(of: address.name) : nil
        socket = GuardedDescriptor(bound.release())
    }

    deinit { close() }

    /// Closes the socket (once no call uses it) and removes a socket file while it is still ours, in the process
    /// that bound it. Idempotent.
    func close() {
        guard !socket.isClosed else { return }
        socket.close()
        if let inode, Sys.processID() == creator, Sys.inode(of: address.name) == inode { Sys.unlink(address.name) }
    }

    private static func isStale(_ address: ControlAddress) -> Bool {
        do {
            _ = try ControlSocket.connect(address, timeoutMs: 1000)
            return false
        } catch {
            return error.code == ECONNREFUSED
        }
    }

    private static func inUse(_ address: ControlAddress) -> VMSockError {
        VMSockError(code: EADDRINUSE, "the shared-memory registration \(address) is held by another process")
    }
}
