import Glibc
import VMSock

extension IPEndpoint {
    /// Stores this endpoint as `getsockname(2)` does: a `sockaddr_in` or `sockaddr_in6`, cut to the `*length`
    /// bytes the caller has room for, and `*length` set to the full size.
    /// - Throws: EFAULT when either pointer is NULL.
    public func store(into address: UnsafeMutablePointer<sockaddr>?, length: UnsafeMutablePointer<socklen_t>?)
        throws(VMSockError)
    {
        guard let address, let length else { throw VMSockError(code: EFAULT, "the address or its length is NULL") }
        var storage = sockaddr_storage()
        let size: Int
        switch family {
        case .v4:
            var v4 = sockaddr_in()
            v4.sin_family = sa_family_t(AF_INET)
            v4.sin_port = port.bigEndian
            withUnsafeMutableBytes(of: &v4.sin_addr) { $0.copyBytes(from: addressBytes) }
            withUnsafeMutableBytes(of: &storage) { $0.storeBytes(of: v4, as: sockaddr_in.self) }
            size = MemoryLayout<sockaddr_in>.size
        case .v6:
            var v6 = sockaddr_in6()
            v6.sin6_family = sa_family_t(AF_INET6)
            v6.sin6_port = port.bigEndian
            withUnsafeMutableBytes(of: &v6.sin6_addr) { $0.copyBytes(from: addressBytes) }
            withUnsafeMutableBytes(of: &storage) { $0.storeBytes(of: v6, as: sockaddr_in6.self) }
            size = MemoryLayout<sockaddr_in6>.size
        }
        let room = min(Int(length.pointee), size)
        withUnsafeBytes(of: &storage) { UnsafeMutableRawPointer(address).copyMemory(from: $0.baseAddress!, byteCount: room) }
        length.pointee = socklen_t(size)
    }
}
