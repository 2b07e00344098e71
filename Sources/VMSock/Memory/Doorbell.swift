import CVMSock
import Glibc

/// A doorbell: the sleeping side polls its receiving end; the other side sends a byte to wake it.
///
/// Each side makes two: one it sleeps on while waiting for data, one while waiting for space. Separate bells let a
/// reader thread and a writer thread sleep at the same time without one draining the other's wake-up.
///
/// Why a Unix stream socketpair and not an eventfd: the peer is untrusted, and whatever descriptor we hand it shares
/// its open file description with ours. With an eventfd the peer could clear O_NONBLOCK on it and fill its counter,
/// and our next wake-up write would block for good (eventfd writes ignore RWF_NOWAIT: EOPNOTSUPP on Linux 6.18);
/// it could also read our bell and swallow our wake-ups. Here the receiving end never goes to the peer (under
/// vmsock-run, only to a forked sibling of our own program that accepts the connection), and every send and
/// receive says MSG_DONTWAIT, which no file flag can override. The wake-up costs the same.
final class Doorbell: @unchecked Sendable {  // immutable after init
    /// Where we sleep: private to this process.
    private let receiver: Descriptor
    /// The end the peer rings. We keep it too, to wake our own sleepers (shutdown from another thread).
    let sender: Descriptor

    var fd: Int32 { receiver.raw }

    private init(receiver: Descriptor, sender: Descriptor) {
        self.receiver = receiver
        self.sender = sender
    }

    /// A new bell of our own.
    static func create() throws(VMSockError) -> Doorbell {
        let type = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue)
        // Nothing travels the other way: only the holders of the receiving end (we, and under vmsock-run a forked
        // sibling) could write to the peer's end, and none does; so no shutdown(SHUT_WR) is needed to refuse it.
        let (receiver, sender) = try Sys.socketPair(type, "socketpair(doorbell)")
        return Doorbell(receiver: receiver, sender: sender)
    }

    /// Wakes our own sleeper on this bell.
    @inline(__always)
    func ringSelf() { PeerBell.send(sender.raw) }

    /// Clears pending rings, so that the next poll sleeps until a new one. Never blocks.
    /// - Returns: false when the bell's other end is closed everywhere (the peer is gone).
    @inline(__always)
    @discardableResult
    func drain() -> Bool { receive() != 0 }

    private static let sinkSize = 64

    /// One non-blocking receive of up to `sinkSize` rings: how many, 0 at end of stream, -1 for none (EAGAIN) or
    /// an error. An error counts as no ring: nothing is lost by it, because every caller re-checks the ring after
    /// draining, and a dead peer shows on the control socket that every sleeper polls too.
    @inline(__always)
    private func receive() -> Int {
        var sink = (UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        return withUnsafeMutableBytes(of: &sink) {
            Sys.receive(receiver.raw, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT))
        }
    }
}

/// The peer's doorbell: the sending end of its socketpair, or, for a peer in vmsockd's region, its eventfd.
final class PeerBell: @unchecked Sendable {  // immutable after init
    private let sender: Descriptor?
    /// For an eventfd the peer shares with every other peer of the region (ivshmem hands them all out): the thread
    /// that rings it, so that no caller waits on a counter someone filled (`EventRinger`).
    private let ringer: EventRinger?
    /// In a guest: the ivshmem device's Doorbell register, and the word that rings the peer (`IvshmemDevice`).
    private let register: UnsafeMutableRawPointer?
    private let registerValue: UInt32
    /// What keeps the register mapped while this bell lives.
    private let registerOwner: AnyObject?

    private init(
        _ sender: Descriptor?, ringer: EventRinger? = nil, register: UnsafeMutableRawPointer? = nil, value: UInt32 = 0,
        owner: AnyObject? = nil
    ) {
        self.sender = sender
        self.ringer = ringer
        self.register = register
        registerValue = value
        registerOwner = owner
    }

    /// A bell that writes `value` to a device register (an ivshmem Doorbell: the device rings the peer's eventfd
    /// on the host, or raises its MSI-X interrupt in its guest). `owner` keeps the register's mapping alive.
    static func deviceRegister(_ register: UnsafeMutableRawPointer, value: UInt32, owner: AnyObject) -> PeerBell {
        PeerBell(nil, register: register, value: value, owner: owner)
    }

    /// A region peer's eventfd (our own duplicate of it, so that its number stays ours for the connection's life),
    /// rung by `ringer`'s thread.
    static func regionPeer(_ eventFD: Descriptor, ringer: EventRinger) -> PeerBell { PeerBell(eventFD, ringer: ringer) }

    /// The ringing end, for a data path outside this module (vmsock-run's C half) that rings it itself; -1 for a
    /// guest's device register (vmsock-run's links are memfd links, whose bells are sockets).
    var fd: Int32 { sender?.raw ?? -1 }

    /// Adopts a bell the peer sent us, after checking that it is a Unix socket connected to a socket without a
    /// name: the other end of a socketpair, as our own bells are. All we ever do with it is send one byte that
    /// never waits and never raises SIGPIPE (`send`). To a socket of the peer's, that is nothing it could not
    /// send itself. But the kernel stamps each message with the sender's credentials where the receiver asks for
    /// them (SO_PASSCRED), so a bell connected to a named service (/dev/log, journald's socket) would post
    /// messages there in our name: one getpeername refuses those, as well as anything that is no connected Unix
    /// socket (a pipe, an eventfd, a file, a TCP socket).
    static func adopt(_ descriptor: Descriptor) throws(VMSockError) -> PeerBell {
        guard Sys.isConnectedToUnnamedUnixSocket(descriptor.raw) else {
            throw .protocolFault(
                "peer sent a doorbell that is not a Unix socket connected to an unnamed one (\(Sys.describe(descriptor.raw)))")
        }
        return PeerBell(descriptor)
    }

    /// Wakes the peer. One system call; callers ring only when the peer said it sleeps.
    @inline(__always)
    func ring() {
        if let register {
            vms_mmio_write32(register, registerValue)
        } else if let ringer {
            ringer.ring(self)
        } else {
            Self.send(sender!.raw)
        }
    }

    /// Sends one byte without ever blocking or raising SIGPIPE (`Sys.sendWakeUp`). A full buffer already means
    /// "wake up", and a closed peer learns nothing more: both failures are meant to be ignored.
    @inline(__always)
    static func send(_ fd: Int32) { Sys.sendWakeUp(fd) }
}
