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
        var found: [IPEndpoint] = []
        try Sys.resolve(host, hints: hints) { address in
            if let endpoint = IPEndpoint(address) {
                let withPort = endpoint.with(port: port)
                if !found.contains(withPort) { found.append(withPort) }
            }
        }
        guard !found.isEmpty else { throw VMSockError(code: EINVAL, "host '\(host)' has no IP address") }
        return found
    }
}
