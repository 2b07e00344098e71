import Glibc

/// How a forked sibling takes over a link this process's listener thread welcomed (nginx: the master listens
/// and answers hellos, a worker accepts). The worker, finding the listener registered by another process,
/// connects to that process's claim socket and names the listening descriptor and the connector's address and
/// port (what accept(2) gave it as the peer's); the
/// answer carries the link's descriptors, or says there is none (the connector was not welcomed: TCP). The
/// worker's side is C (`Sources/CVMSockPreload/claim.c`), so it touches no Swift state it copied at fork; both
/// sides must agree on the layout below.
///
///     claim (28 bytes)   magic u32 'vmcl' | listening descriptor i32 | connector's port u16 | family u16 (4, 6)
///                        | connector's address, 16 bytes (IPv4 in the first 4, the rest zero)
///                        with SCM_RIGHTS: the listening socket (the claimer's proof that it holds it)
///     answer (24 bytes)  magic u32 'vmcl' | found u32 (1 or 0) | our capacity u64 | the peer's capacity u64
///                        with, when found, SCM_RIGHTS: our memfd, the peer's memfd, the control socket,
///                        our space doorbell's receiving end, the peer's space doorbell, our data doorbell's
///                        receiving end, the peer's data doorbell
enum PreloadClaims {
    static let magic: UInt32 = 0x766d_636c

    /// One per listening process: the abstract name `vmsock-run/claim/PID`.
    static func address(pid: pid_t) -> ControlAddress {
        ControlAddress(kind: .abstract, name: "vmsock-run/claim/\(pid)")
    }

    struct Claim {
        let listener: Int32
        /// The connector's address and port, as the claimer's accept gave them.
        let peer: IPEndpoint

        init?(_ bytes: [UInt8]) {
            guard bytes.count == 28 else { return nil }
            let (magic, listener, port, family) = bytes.withUnsafeBytes { raw in
                (raw.loadUnaligned(fromByteOffset: 0, as: UInt32.self), raw.loadUnaligned(fromByteOffset: 4, as: Int32.self),
                 raw.loadUnaligned(fromByteOffset: 8, as: UInt16.self), raw.loadUnaligned(fromByteOffset: 10, as: UInt16.self))
            }
            guard magic == PreloadClaims.magic, family == 4 || family == 6 else { return nil }
            self.listener = listener
            peer = IPEndpoint(
                family: family == 4 ? .v4 : .v6, addressBytes: Array(bytes[12..<(family == 4 ? 16 : 28)]), port: port)
        }
    }

    /// The answer for `link` (nil: none), and the descriptors to pass with it.
    static func answer(_ link: EstablishedLink?) -> (bytes: [UInt8], descriptors: [Int32]) {
        var bytes = [UInt8](repeating: 0, count: 24)
        bytes.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: magic, toByteOffset: 0, as: UInt32.self)
            raw.storeBytes(of: link == nil ? 0 : 1, toByteOffset: 4, as: UInt32.self)
            raw.storeBytes(of: UInt64(link?.localRegion.capacity ?? 0), toByteOffset: 8, as: UInt64.self)
            raw.storeBytes(of: UInt64(link?.peerRegion.capacity ?? 0), toByteOffset: 16, as: UInt64.self)
        }
        guard let link, link.memory.count == 2 else { return (bytes, []) }
        return (bytes, [link.memory[0].raw, link.memory[1].raw, link.control.raw, link.spaceBell.fd, link.peerSpaceBell.fd,
                        link.dataBell.fd, link.peerDataBell.fd])
    }
}
