// The arm-then-poll contract (VMSocket+Readiness.swift): vmsock_arm_*, vmsock_disarm_*, vmsock_poll_fd,
// vmsock_poll_events. A listener needs no arming: its descriptor is level-triggered as it is.
import CVMSockAPI
import Glibc
import VMSock
import VMSockHandles

@_cdecl("vmsock_arm_readable")
public func cArmReadable(_ handle: Int32) -> Int32 {
    Errno.returning32 { () throws(VMSockError) in
        try HandleTable.with(
            handle, connection: { (socket) throws(VMSockError) in try socket.armReadable() ? 1 : 0 }, listener: { _ in 0 })
    }
}

@_cdecl("vmsock_arm_writable")
public func cArmWritable(_ handle: Int32) -> Int32 {
    Errno.returning32 { () throws(VMSockError) in
        try HandleTable.withConnection(handle) { (socket) throws(VMSockError) in try socket.armWritable() ? 1 : 0 }
    }
}

@_cdecl("vmsock_disarm_readable")
public func cDisarmReadable(_ handle: Int32) -> Int32 {
    Errno.returning32 { () throws(VMSockError) in
        try HandleTable.with(handle, connection: { $0.disarmReadable() }, listener: { _ in })
        return 0
    }
}

@_cdecl("vmsock_disarm_writable")
public func cDisarmWritable(_ handle: Int32) -> Int32 {
    Errno.returning32 { () throws(VMSockError) in
        try HandleTable.withConnection(handle) { $0.disarmWritable() }
        return 0
    }
}

@_cdecl("vmsock_poll_fd")
public func cPollDescriptor(_ handle: Int32, _ direction: Int32) -> Int32 {
    Errno.returning32 { () throws(VMSockError) in
        let descriptor = try interest(handle, direction).descriptor
        if descriptor < 0 { throw VMSockError(code: EMFILE, "the epoll set to poll could not be made") }
        return descriptor
    }
}

@_cdecl("vmsock_poll_events")
public func cPollEvents(_ handle: Int32, _ direction: Int32) -> Int16 {
    Int16(Errno.returning32 { () throws(VMSockError) in Int32(try interest(handle, direction).events) })
}

/// What to poll for `direction` of the handle: the socket's read or write interest, or the listener's descriptor.
private func interest(_ handle: Int32, _ direction: Int32) throws(VMSockError) -> PollInterest {
    guard direction == VMSOCK_READ || direction == VMSOCK_WRITE else { throw badDirection(direction) }
    return try HandleTable.with(
        handle,
        connection: { direction == VMSOCK_READ ? $0.readInterest : $0.writeInterest },
        listener: { (listener) throws(VMSockError) in
            guard direction == VMSOCK_READ else {
                throw VMSockError(code: EINVAL, "a listener has no write direction to poll")
            }
            return PollInterest(descriptor: listener.pollDescriptor, events: Int16(POLLIN))
        })
}
