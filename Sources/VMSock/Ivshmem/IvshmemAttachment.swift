import CVMSock
import Glibc
import VMSockRing

/// How this process reaches vmsockd's region, and how it is woken: what `vmcat -v` and `vmperf -V` print after
/// "ivshmem".
enum IvshmemMode: String, Sendable {
    /// A host process: vmsockd's socket gave us the memfd and the eventfds (`IvshmemClient`).
    case socket = "vmsockd socket"
    /// A guest: the ivshmem-doorbell PCI device, its MSI-X vectors routed to eventfds by vfio-pci (`IvshmemDevice`).
    case vfio = "pci, vfio interrupts"
    /// A guest without vfio: the PCI device's memory and doorbell, and no interrupts. The dispatcher looks at the
    /// region every `IvshmemNode.pollingMs` while a call waits (`idleMs` otherwise) instead of being rung.
    case polling = "pci, polling"
}

/// One way into a vmsockd region: what `IvshmemNode` needs, and all it needs, of the region's transport. Two
/// implementations: `IvshmemClient` (a host process, through vmsockd's socket) and `IvshmemDevice` (a process in a
/// QEMU guest, through the ivshmem-doorbell PCI device). The node, the listen table, the handshake and the streams
/// above it are the same for both.
///
/// Only under the node's lock: `readLeaves` and `bell(for:)`; the rest is immutable.
protocol IvshmemAttachment: AnyObject, Sendable {
    /// Our peer id (the index of our slot) and the epoch vmsockd gave us at our join.
    var id: Int { get }
    var epoch: UInt64 { get }
    /// Whether other processes reach the region with the same id (a guest's device, which is its VM's): then each
    /// process takes a process slot for an identity of its own (`IvshmemProcessSlots`).
    var sharesItsID: Bool { get }
    var region: IvshmemRegion { get }
    /// A descriptor whose mapping at `memoryOffset + x` is byte x of the region: connections map their halves
    /// from it (the memfd; the PCI resource file; the vfio device).
    var memoryFD: Int32 { get }
    var memoryOffset: Int { get }
    var mode: IvshmemMode { get }
    /// Descriptors that are readable when one of our vectors was rung (clear them with
    /// `vms_eventfd_read_nowait`); empty when nothing rings us (`IvshmemMode.polling`).
    var interrupts: [Int32] { get }
    /// A descriptor readable when `readLeaves` has news (vmsockd's socket), or nil when there never is any (a guest
    /// learns of joins and leaves from the slot table alone).
    var news: Int32? { get }
    /// Reads the news without waiting: the ids of peers that left.
    /// - Throws: ECONNRESET (or EPROTO) once the way to the region is gone; later calls throw again.
    func readLeaves() throws(VMSockError) -> [Int]
    /// A bell that rings vector 0 of `peer` (our own for us), or nil when `peer` is not known (yet) with that
    /// epoch. An eventfd is rung by `ringer`'s thread.
    func bell(for peer: IvshmemArena.Owner, ringer: EventRinger) throws(VMSockError) -> PeerBell?
}

extension IvshmemClient: IvshmemAttachment {
    var memoryFD: Int32 { memory.raw }
    var memoryOffset: Int { 0 }
    var mode: IvshmemMode { .socket }
    var sharesItsID: Bool { false }
    var interrupts: [Int32] { (0..<vectors).map { descriptor(ofVector: $0) } }
    var news: Int32? { descriptor }

    func readLeaves() throws(VMSockError) -> [Int] {
        var leaves: [Int] = []
        for case .left(let id) in try update() { leaves.append(id) }
        return leaves
    }

    /// Our own duplicate of the eventfd, so that a leave, which closes the client's copy, cannot turn it into
    /// someone else's.
    func bell(for peer: IvshmemArena.Owner, ringer: EventRinger) throws(VMSockError) -> PeerBell? {
        if peer.id == id && peer.epoch == epoch {
            return PeerBell.regionPeer(try Sys.duplicate(descriptor(ofVector: 0)), ringer: ringer)
        }
        guard let known = peers[peer.id], known.epoch == peer.epoch else { return nil }
        return PeerBell.regionPeer(try Sys.duplicate(known.vectors[0].raw), ringer: ringer)
    }
}
