import Glibc

/// Name resolution for connect and listen: getaddrinfo, with numeric addresses parsed without it.
enum Resolver {
    /// The addresses `host` names, in the order getaddrinfo gives them (the order connect tries them in).
    /// - Throws: EINVAL with getaddrinfo's message when the name does not resolve, or resolves to no address of
    ///   the wanted family.
    static func resolve(_ host: String, port: UInt16, family: IPEndpoint.Family?) throws(VMSockError) -> [IPEndpoint] {
        if let numeric = IPEndpoint(numericHost: host, port: port) {
            if let family, family != numeric.family {
                throw VMSockError(code: EINVAL, "\(host) is an \(numeric.family == .v4 ? "IPv4" : "IPv6") address, but only \(family == .v4 ? "IPv4" : "IPv6") is allowed")
            }
            return [numeric]
        }
        var hints = addrinfo()
        hints.ai_family = family.map { $0 == .v4 ? AF_INET : AF_INET6 } ?? AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, nil, &hints, &list)
        guard status == 0, let list else {
            let why = status == EAI_SYSTEM ? String(cString: strerror(errno)) : String(cString: gai_strerror(status))
            throw VMSockError(code: EINVAL, "cannot resolve host '\(host)': \(why)")
        }
        defer { freeaddrinfo(list) }
        var found: [IPEndpoint] = []
        var entry: UnsafeMutablePointer<addrinfo>? = list
        while let current = entry {
            if let address = current.pointee.ai_addr, let endpoint = IPEndpoint(UnsafePointer(address)) {
                let withPort = endpoint.with(port: port)
                if !found.contains(withPort) { found.append(withPort) }
            }
            entry = current.pointee.ai_next
        }
        guard !found.isEmpty else { throw VMSockError(code: EINVAL, "host '\(host)' has no IP address") }
        return found
    }
}
