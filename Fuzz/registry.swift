// Fuzz target: registry names (Registry.key, names, candidates) and the Unix socket addresses made from them
// (ControlSocket.socketAddress), for any address, port and registry directory; and the dialed address a peer's
// hello carries, as the listener turns it into the addresses it reports (IPEndpoint).
// A registry entry carries no bytes to parse: a name is derived from an address we hold, and what a peer controls
// is who owns the socket bound there, which SO_PEERCRED checks (docs/PEER-CHECKS.md, entries 21 to 24). What can
// still break is turning an address (a peer's, in a hello) or a long VMSOCK_DIR into a name and a sockaddr_un.
// Invariants: no crash; a name that becomes a sockaddr_un fits in it, with room for its NUL; the name says the
// address and port; the numeric host of any address parses back to the same address.
import Glibc
@testable import VMSock

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRegistry(_ data: UnsafeRawPointer?, _ count: Int) -> CInt {
    var input = FuzzInput(data, count)
    let v4 = input.bool()
    var bytes = input.take(v4 ? 4 : 16)
    bytes += [UInt8](repeating: 0, count: (v4 ? 4 : 16) - bytes.count)
    let endpoint = IPEndpoint(family: v4 ? .v4 : .v6, addressBytes: bytes, port: input.integer(UInt16.self))
    let directory: String? = input.bool() ? nil : String(decoding: input.take(Int(input.byte())), as: UTF8.self)
    let key = Registry.key(of: endpoint)
    require(key.hasPrefix("tcp-") && key.hasSuffix("-\(endpoint.port)"), "key \(key) for \(endpoint)")
    let local = input.bool()
    let addresses = Registry.candidates(for: endpoint, isLocal: local, directory: directory)
        + (input.bool() ? Registry.names(forListenerOn: endpoint, directory: directory) : [])
    for address in addresses {
        do {
            let (addr, length) = try ControlSocket.socketAddress(address)
            require(Int(length) <= MemoryLayout<sockaddr_un>.size, "address length \(length)")
            require(addr.sun_family == sa_family_t(AF_UNIX), "not AF_UNIX")
        } catch {
            require(error.code == ENAMETOOLONG, "socketAddress threw \(error)")
        }
    }
    guard let parsed = IPEndpoint(numericHost: endpoint.host, port: endpoint.port) else {
        require(false, "\(endpoint.host) does not parse back")
        return 0
    }
    require(parsed.family == endpoint.family && parsed.addressBytes == endpoint.addressBytes,
            "\(endpoint.host) parses back as \(parsed.host)")
    return 0
}
