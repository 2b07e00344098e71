// What a connection is: vmsock_transport, vmsock_fallback_reason, vmsock_transport_description, the addresses, and
// vmsock_last_error.
import CVMSockAPI
import Glibc
import VMSock
import VMSockHandles

@_cdecl("vmsock_transport")
public func cTransport(_ handle: Int32) -> Int32 {
    Errno.returning32 { () throws(VMSockError) in
        try HandleTable.withConnection(handle) {
            switch $0.transport {
            case .sharedMemory: VMSOCK_TRANSPORT_SHM
            case .ivshmem: VMSOCK_TRANSPORT_IVSHMEM
            case .tcp: VMSOCK_TRANSPORT_TCP
            }
        }
    }
}

@_cdecl("vmsock_fallback_reason")
public func cFallbackReason(_ handle: Int32) -> UnsafePointer<CChar>? {
    do throws(VMSockError) {
        let reason = try HandleTable.withConnection(handle) { $0.fallbackReason }
        Glibc.errno = 0
        return reason.map { UnsafeRawPointer(constantText($0).utf8Start).assumingMemoryBound(to: CChar.self) }
    } catch {
        Errno.record(error)
        return nil
    }
}

/// The reasons as strings that live as long as the process (in the library's constant data).
private func constantText(_ reason: FallbackReason) -> StaticString {
    switch reason {
    case .remote: "remote"
    case .noListener: "no shared-memory listener"
    case .untrustedOwner: "untrusted owner"
    case .refusedByListener: "refused by the listener's policy"
    case .versionMismatch: "version mismatch"
    case .outOfResources: "out of resources"
    case .disabledByPolicy: "disabled by policy"
    case .handshakeFailed: "handshake failed"
    }
}

@_cdecl("vmsock_transport_description")
public func cTransportDescription(_ handle: Int32, _ buffer: UnsafeMutablePointer<CChar>?, _ size: Int) -> Int32 {
    Errno.returning32 { () throws(VMSockError) in
        if buffer == nil && size != 0 { throw VMSockError(code: EFAULT, "the buffer is NULL") }
        var text = try HandleTable.withConnection(handle) { socket in
            socket.transportDescription + (socket.fallbackDetail.map { ": \($0)" } ?? "")
        }
        return text.withUTF8 { utf8 in
            if let buffer, size > 0 {  // as snprintf: cut to size - 1 bytes, always NUL-terminated
                let kept = min(utf8.count, size - 1)
                if kept > 0 { UnsafeMutableRawPointer(buffer).copyMemory(from: utf8.baseAddress!, byteCount: kept) }
                buffer[kept] = 0
            }
            return Int32(clamping: utf8.count)
        }
    }
}

@_cdecl("vmsock_local_address")
public func cLocalAddress(
    _ handle: Int32, _ address: UnsafeMutablePointer<sockaddr>?, _ length: UnsafeMutablePointer<socklen_t>?
) -> Int32 {
    Errno.returning32 { () throws(VMSockError) in
        let endpoint = try HandleTable.with(handle, connection: { $0.localAddress }, listener: { $0.localAddress })
        try endpoint.store(into: address, length: length)
        return 0
    }
}

@_cdecl("vmsock_peer_address")
public func cPeerAddress(
    _ handle: Int32, _ address: UnsafeMutablePointer<sockaddr>?, _ length: UnsafeMutablePointer<socklen_t>?
) -> Int32 {
    Errno.returning32 { () throws(VMSockError) in
        let endpoint = try HandleTable.withConnection(handle) { $0.peerAddress }
        try endpoint.store(into: address, length: length)
        return 0
    }
}

@_cdecl("vmsock_last_error")
public func cLastError() -> UnsafePointer<CChar> {
    Errno.lastMessage
}
