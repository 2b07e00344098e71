import CVMSock
import Glibc

/// An eventfd that one side sleeps on and the other side writes to wake it.
///
/// Each side makes two: one it sleeps on while waiting for data, one while waiting for space. Separate bells let a
/// reader thread and a writer thread sleep at the same time without one draining the other's wake-up.
/// Both are non-blocking: a write that would overflow the counter (a peer that never drains) is dropped, since a
/// non-zero counter already means "wake up".
final class Doorbell: @unchecked Sendable {  // immutable after init
    let descriptor: Descriptor
    var fd: Int32 { descriptor.raw }

    private init(_ descriptor: Descriptor) { self.descriptor = descriptor }

    /// A new bell of our own.
    static func create() throws(VMSockError) -> Doorbell {
        let fd = try Sys.check("eventfd") { eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK)) }
        return Doorbell(Descriptor(fd))
    }

    /// Adopts a bell the peer sent us, after checking that it really is an eventfd (anything else could block us
    /// or do something we did not ask for when written).
    static func adoptPeer(_ descriptor: Descriptor) throws(VMSockError) -> Doorbell {
        guard Sys.describe(descriptor.raw) == "anon_inode:[eventfd]" else {
            throw .protocolFault("peer sent a doorbell that is not an eventfd (\(Sys.describe(descriptor.raw)))")
        }
        try Sys.setNonBlocking(descriptor.raw, true)
        return Doorbell(descriptor)
    }

    /// Wakes whoever sleeps on this bell. One system call; callers ring only when the sleeper said it sleeps.
    @inline(__always)
    func ring() {
        var one: UInt64 = 1
        _ = Sys.retryingEINTR { Glibc.write(fd, &one, 8) }
    }

    /// Clears pending rings, so that the next poll sleeps until a new one.
    @inline(__always)
    func drain() {
        var count: UInt64 = 0
        _ = Sys.retryingEINTR { Glibc.read(fd, &count, 8) }
    }
}
