// vmsock_shutdown, vmsock_close, vmsock_set_nonblocking, vmsock_set_timeout, vmsock_close_idle_links.
import CVMSockAPI
import Glibc
import VMSock
import VMSockHandles

@_cdecl("vmsock_shutdown")
public func cShutdown(_ handle: Int32, _ how: Int32) -> Int32 {
    Errno.returning32 { () throws(VMSockError) in
        try HandleTable.withConnection(handle) { (socket) throws(VMSockError) in
            let direction: VMSocket.ShutdownDirection
            switch how {
            case Int32(SHUT_RD): direction = .read
            case Int32(SHUT_WR): direction = .write
            case Int32(SHUT_RDWR): direction = .both
            default: throw VMSockError(code: EINVAL, "shutdown how \(how) is not SHUT_RD, SHUT_WR or SHUT_RDWR")
            }
            try socket.shutdown(direction)
            return 0
        }
    }
}

@_cdecl("vmsock_close")
public func cClose(_ handle: Int32) -> Int32 {
    Errno.returning32 { () throws(VMSockError) in
        try HandleTable.close(handle)
        return 0
    }
}

@_cdecl("vmsock_set_nonblocking")
public func cSetNonBlocking(_ handle: Int32, _ on: Int32) -> Int32 {
    Errno.returning32 { () throws(VMSockError) in
        try HandleTable.with(handle, connection: { $0.isNonBlocking = on != 0 }, listener: { $0.isNonBlocking = on != 0 })
        return 0
    }
}

@_cdecl("vmsock_set_timeout")
public func cSetTimeout(_ handle: Int32, _ direction: Int32, _ milliseconds: Int32) -> Int32 {
    Errno.returning32 { () throws(VMSockError) in
        try HandleTable.withConnection(handle) { (socket) throws(VMSockError) in
            let timeout: Duration? = milliseconds > 0 ? .milliseconds(milliseconds) : nil
            switch direction {
            case VMSOCK_READ: socket.readTimeout = timeout
            case VMSOCK_WRITE: socket.writeTimeout = timeout
            default: throw badDirection(direction)
            }
            return 0
        }
    }
}

@_cdecl("vmsock_close_idle_links")
public func cCloseIdleLinks() {
    VMSocket.closeIdleLinks()
}

func badDirection(_ direction: Int32) -> VMSockError {
    VMSockError(code: EINVAL, "direction \(direction) is not VMSOCK_READ or VMSOCK_WRITE")
}
