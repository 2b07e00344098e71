import CVMSockAPI
import Glibc
import VMSock

extension VMSocketOptions {
    /// The settings a `struct vmsock_options` asks for; NULL and a zeroed struct mean every default.
    /// - Throws: EINVAL for a value the header does not define, or a reserved word that is not zero.
    init(_ options: UnsafePointer<vmsock_options>?) throws(VMSockError) {
        self.init()
        guard let c = options?.pointee else { return }
        let reserved = withUnsafeBytes(of: c.reserved) { $0.allSatisfy { $0 == 0 } }
        guard reserved else { throw VMSockError(code: EINVAL, "vmsock_options.reserved must be zero") }
        switch c.policy {
        case VMSOCK_POLICY_DEFAULT: transport = nil
        case VMSOCK_POLICY_AUTO: transport = .auto
        case VMSOCK_POLICY_SHM: transport = .shm
        case VMSOCK_POLICY_TCP: transport = .tcp
        case VMSOCK_POLICY_IVSHMEM: transport = .ivshmem
        default: throw VMSockError(code: EINVAL, "vmsock_options.policy \(c.policy) is not a VMSOCK_POLICY_ value")
        }
        switch c.family {
        case AF_UNSPEC: addressFamily = nil
        case AF_INET: addressFamily = .v4
        case AF_INET6: addressFamily = .v6
        default: throw VMSockError(code: EINVAL, "vmsock_options.family \(c.family) is not AF_INET, AF_INET6 or 0")
        }
        if c.ring_size != 0 {
            try VMSocketOptions.validateRingSize(Int(c.ring_size))
            ringSize = Int(c.ring_size)
        }
        if c.connect_timeout_ms > 0 { connectTimeout = .milliseconds(c.connect_timeout_ms) }
        if c.handshake_timeout_ms > 0 { handshakeTimeout = .milliseconds(c.handshake_timeout_ms) }
        switch c.trust {
        case VMSOCK_TRUST_SAME_USER: peerPolicy = .sameUser
        case VMSOCK_TRUST_ANY_USER: peerPolicy = .anyUser
        default: throw VMSockError(code: EINVAL, "vmsock_options.trust \(c.trust) is not a VMSOCK_TRUST_ value")
        }
        reusesLinks = c.no_link_reuse == 0
        if let directory = c.registry_dir { registryDirectory = String(cString: directory) }
    }
}
