import Glibc

// Names and addresses: getsockname and getpeername, getaddrinfo, getifaddrs. See `Sys` in Syscalls.swift for the
// rules every call here follows.

extension Sys {
    /// getsockname(2): the address a socket is bound to.
    static func localAddress(_ fd: Int32) throws(VMSockError) -> sockaddr_storage {
        try socketName(fd, peer: false)
    }

    /// getpeername(2): the address of a connected socket's peer (ENOTCONN once the peer reset the connection).
    static func peerAddress(_ fd: Int32) throws(VMSockError) -> sockaddr_storage {
        try socketName(fd, peer: true)
    }

    /// Whether `fd` is a Unix socket connected to a socket without a name (the other end of a socketpair): one
    /// getpeername(2), which gives AF_UNIX and nothing more for those. False for anything else (no socket, another
    /// family, not connected, a peer bound to a path or an abstract name) or when the call fails.
    static func isConnectedToUnnamedUnixSocket(_ fd: Int32) -> Bool {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let result = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &length) }
        }
        return result == 0 && storage.ss_family == sa_family_t(AF_UNIX) && length == socklen_t(MemoryLayout<sa_family_t>.size)
    }

    /// The abstract name (without its leading NUL) the peer of a connected Unix socket bound; nil when it bound
    /// none, bound a path, or the call fails.
    static func unixPeerAbstractName(_ fd: Int32) -> String? {
        var address = sockaddr_un()
        var length = socklen_t(MemoryLayout<sockaddr_un>.size)
        let result = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &length) }
        }
        let pathLength = Int(length) - MemoryLayout<sa_family_t>.size
        guard result == 0, address.sun_family == sa_family_t(AF_UNIX), pathLength > 1 else { return nil }
        return withUnsafeBytes(of: &address.sun_path) { path in
            guard path[0] == 0 else { return nil }
            return String(decoding: path[1..<min(pathLength, path.count)], as: UTF8.self)
        }
    }

    private static func socketName(_ fd: Int32, peer: Bool) throws(VMSockError) -> sockaddr_storage {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let result = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { address in
                peer ? getpeername(fd, address, &length) : getsockname(fd, address, &length)
            }
        }
        if result != 0 { throw VMSockError.system(peer ? "getpeername" : "getsockname") }
        return storage
    }

    /// getaddrinfo(3) for `host` (no service) with `hints`: calls `body` with each address of the answer, in its
    /// order, then frees the list (freeaddrinfo). glibc retries an interrupted lookup itself.
    /// - Throws: EINVAL (getaddrinfo's codes are not errnos), saying that `host` cannot be resolved and why, in
    ///   gai_strerror's words (errno's for EAI_SYSTEM).
    static func resolve(
        _ host: String, hints: addrinfo, _ body: (UnsafePointer<sockaddr>) -> Void
    ) throws(VMSockError) {
        var hints = hints
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, nil, &hints, &list)
        guard status == 0, let list else {
            let why = status == EAI_SYSTEM ? String(cString: strerror(errno)) : String(cString: gai_strerror(status))
            throw VMSockError(code: EINVAL, "cannot resolve host '\(host)': \(why)")
        }
        defer { freeaddrinfo(list) }
        var entry: UnsafeMutablePointer<addrinfo>? = list
        while let current = entry {
            if let address = current.pointee.ai_addr { body(UnsafePointer(address)) }
            entry = current.pointee.ai_next
        }
    }

    /// getifaddrs(3): calls `body` with the address of each interface that has one, then frees the list
    /// (freeifaddrs).
    static func forEachInterfaceAddress(_ body: (UnsafePointer<sockaddr>) -> Void) throws(VMSockError) {
        var list: UnsafeMutablePointer<ifaddrs>?
        try check("getifaddrs") { getifaddrs(&list) }
        guard let list else { return }
        defer { freeifaddrs(list) }
        var entry: UnsafeMutablePointer<ifaddrs>? = list
        while let current = entry {
            if let address = current.pointee.ifa_addr { body(UnsafePointer(address)) }
            entry = current.pointee.ifa_next
        }
    }
}
