import CVMSock
import Glibc
import Synchronization

/// A doorbell: the sleeping side polls its receiving end; the other side sends a byte to wake it.
///
/// Each side makes two: one it sleeps on while waiting for data, one while waiting for space. Separate bells let a
/// reader thread and a writer thread sleep at the same time without one draining the other's wake-up.
///
/// Why a Unix stream socketpair and not an eventfd: the peer is untrusted, and whatever descriptor we hand it shares
/// its open file description with ours. With an eventfd the peer could clear O_NONBLOCK on it and fill its counter,
/// and our next wake-up write would block for good (eventfd writes ignore RWF_NOWAIT: EOPNOTSUPP on Linux 6.18);
/// it could also read our bell and swallow our wake-ups. Here the receiving end of a bell we make never goes to the
/// peer (under vmsock-run, only to a forked sibling of our own program that accepts the connection), and every send
/// and receive says MSG_DONTWAIT, which no file flag can override. The wake-up costs the same.
///
/// **Shared pairs.** To a hello that offers no link reuse, from a connector of its own user (or root), a listener
/// makes no bells: it sleeps on the ends the connector passed, and rings the connector on the same ends
/// (`adoptFarEnd`, `PeerBell.farEnd`). A socketpair carries a queue each way, so one pair serves both sides' data
/// bells, and another both sides' space bells: two socketpairs a connection instead of four. The connector made
/// them and holds them too. It could read the listener's queue, where only its own rings go (it would take wake-ups
/// it need not have sent), or hold the queue's receive lock (a read into memory whose fault never ends): that is
/// why only a process that could stop the listener with a signal anyway gets shared bells (`Handshake.answer`).
/// Such a bell has no end of ours to ring ourselves with, so `ringSelf` shuts its receiving direction down
/// instead, which keeps it readable for good: it is called only where its sleepers are done with the connection
/// (a shutdown of that direction, a teardown), and never on a link that is kept.
final class Doorbell: @unchecked Sendable {  // immutable after init, but for `shutForGood`
    /// Where we sleep: private to this process, or, for a far end, shared only with the connector that made it.
    private let receiver: Descriptor
    /// The end the peer rings, which we keep too, to wake our own sleepers (shutdown from another thread); nil
    /// for a far end (`adoptFarEnd`).
    let sender: Descriptor?
    /// A far end's receiving direction was shut down by `ringSelf`: its end of stream is ours, not the peer's.
    private let shutForGood = Atomic<Bool>(false)

    var fd: Int32 { receiver.raw }
    /// The end that goes to the peer, of a bell we made (`create`); -1 for a far end.
    var ringingEnd: Int32 { sender?.raw ?? -1 }

    private init(receiver: Descriptor, sender: Descriptor?) {
        self.receiver = receiver
        self.sender = sender
    }

    /// A new bell of our own.
    static func create() throws(VMSockError) -> Doorbell {
        let type = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue)
        // The other way, only we write to the peer's end, and only where the listener shares our bells: it sleeps on
        // that end (`adoptFarEnd`). Otherwise nothing travels that way, so no shutdown(SHUT_WR) is needed.
        let (receiver, sender) = try Sys.socketPair(type, "socketpair(doorbell)")
        return Doorbell(receiver: receiver, sender: sender)
    }

    /// A listener's bell that the connector made: the far end of one of its bells, which it sent in its hello (see
    /// *Shared pairs* above). Checked as `PeerBell.adopt` checks a bell we only ring (we ring the connector on it
    /// too), and for a stream socket: we sleep on it, and a datagram socket shut down by its holder would poll
    /// readable for good while a receive finds nothing, so every wait on it would spin.
    static func adoptFarEnd(_ descriptor: Descriptor) throws(VMSockError) -> Doorbell {
        guard Sys.isConnectedToUnnamedUnixSocket(descriptor.raw), Sys.isStreamSocket(descriptor.raw) else {
            throw .protocolFault(
                "peer sent a doorbell that is not a Unix stream socket connected to an unnamed one (\(Sys.describe(descriptor.raw)))")
        }
        return Doorbell(receiver: descriptor, sender: nil)
    }

    /// Wakes our own sleeper on this bell. A far end has no end of ours to ring, so its receiving direction is
    /// shut down, which wakes every sleeper on it now and later: call it only where they are done with it.
    @inline(__always)
    func ringSelf() {
        if let sender {
            PeerBell.send(sender.raw)
        } else {
            shutForGood.store(true, ordering: .sequentiallyConsistent)
            Sys.shutdownReceiving(receiver.raw)
        }
    }

    /// Clears pending rings, so that the next poll sleeps until a new one. Never blocks.
    /// - Returns: false when the bell's other end is closed everywhere (the peer is gone).
    @inline(__always)
    @discardableResult
    func drain() -> Bool { receive() != 0 || shutForGood.load(ordering: .sequentiallyConsistent) }

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
    /// What keeps the register mapped while this bell lives, or the bell whose far end we ring (`farEnd`).
    private let registerOwner: AnyObject?
    /// The descriptor a ring is sent on: `sender`'s, or the bell's of `farEnd`; -1 for a device register.
    private let ringFD: Int32

    private init(
        _ sender: Descriptor?, ringer: EventRinger? = nil, register: UnsafeMutableRawPointer? = nil, value: UInt32 = 0,
        owner: AnyObject? = nil, ringFD: Int32? = nil
    ) {
        self.sender = sender
        self.ringer = ringer
        self.register = register
        registerValue = value
        registerOwner = owner
        self.ringFD = ringFD ?? sender?.raw ?? -1
    }

    /// A bell that writes `value` to a device register (an ivshmem Doorbell: the device rings the peer's eventfd
    /// on the host, or raises its MSI-X interrupt in its guest). `owner` keeps the register's mapping alive.
    static func deviceRegister(_ register: UnsafeMutableRawPointer, value: UInt32, owner: AnyObject) -> PeerBell {
        PeerBell(nil, register: register, value: value, owner: owner)
    }

    /// A region peer's eventfd (our own duplicate of it, so that its number stays ours for the connection's life),
    /// rung by `ringer`'s thread.
    static func regionPeer(_ eventFD: Descriptor, ringer: EventRinger) -> PeerBell { PeerBell(eventFD, ringer: ringer) }

    /// The peer's bell on a link whose bells are shared pairs (see `Doorbell`): a send on our own end of `bell`
    /// lands in the peer's queue of the same socketpair. `bell` keeps the descriptor open.
    static func farEnd(of bell: Doorbell) -> PeerBell { PeerBell(nil, owner: bell, ringFD: bell.fd) }

    /// The ringing end, for a data path outside this module (vmsock-run's C half) that rings it itself; -1 for a
    /// guest's device register (vmsock-run's links are memfd links, whose bells are sockets). With shared pairs it
    /// is the number of our own bell of the same direction.
    var fd: Int32 { ringFD }

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
            Self.send(ringFD)
        }
    }

    /// Sends one byte without ever blocking or raising SIGPIPE (`Sys.sendWakeUp`). A full buffer already means
    /// "wake up", and a closed peer learns nothing more: both failures are meant to be ignored.
    @inline(__always)
    static func send(_ fd: Int32) { Sys.sendWakeUp(fd) }
}
