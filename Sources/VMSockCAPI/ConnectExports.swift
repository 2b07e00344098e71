// vmsock_connect, vmsock_listen, vmsock_accept: each makes a VMSocket or VMListener and puts it in the handle table.
import CVMSockAPI
import Glibc
import VMSock
import VMSockHandles

@_cdecl("vmsock_connect")
public func cConnect(_ host: UnsafePointer<CChar>?, _ port: UInt16, _ options: UnsafePointer<vmsock_options>?) -> Int32 {
    Errno.returning32 { () throws(VMSockError) in
        guard let host else { throw VMSockError(code: EINVAL, "vmsock_connect: host is NULL") }
        let settings = try VMSocketOptions(options)
        return try handle(for: VMSocket.connect(host: String(cString: host), port: port, options: settings))
    }
}

@_cdecl("vmsock_listen")
public func cListen(
    _ host: UnsafePointer<CChar>?, _ port: UInt16, _ backlog: Int32, _ options: UnsafePointer<vmsock_options>?
) -> Int32 {
    Errno.returning32 { () throws(VMSockError) in
        let settings = try VMSocketOptions(options)
        let listener = try VMListener(
            host: host.map { String(cString: $0) }, port: port, options: settings, backlog: backlog > 0 ? backlog : 128)
        guard let handle = HandleTable.insert(listener) else { throw tableFull }
        return handle
    }
}

@_cdecl("vmsock_accept")
public func cAccept(
    _ listener: Int32, _ address: UnsafeMutablePointer<sockaddr>?, _ length: UnsafeMutablePointer<socklen_t>?
) -> Int32 {
    Errno.returning32 { () throws(VMSockError) in
        if address != nil && length == nil { throw VMSockError(code: EFAULT, "vmsock_accept: address_length is NULL") }
        let socket = try HandleTable.withListener(listener) { (listener) throws(VMSockError) in try listener.accept() }
        if address != nil { try socket.peerAddress.store(into: address, length: length) }
        return try handle(for: socket)
    }
}

/// A handle for a new connection; without a free slot the connection is closed (its deinit) and EMFILE thrown.
private func handle(for socket: VMSocket) throws(VMSockError) -> Int32 {
    guard let handle = HandleTable.insert(socket) else { throw tableFull }
    return handle
}

private var tableFull: VMSockError { VMSockError(code: EMFILE, "all 1048576 vmsock handles are open") }
