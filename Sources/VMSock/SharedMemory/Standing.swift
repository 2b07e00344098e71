import CVMSock
import Synchronization
import VMSockRing

/// Whether this side may still write its own half of a link.
///
/// A guest process in a vmsockd region holds its place there only while vmsockd sees its heartbeat. A process (or
/// its VM) stopped for longer than `IvshmemLayout.processTimeoutMs` is judged gone, and once the quarantine of its
/// connection slots is over (`IvshmemArena.quarantineBeats`) they carry other connections. When such a process runs
/// again it must not write another byte into its half: every data call on such a connection checks its process
/// slot's liveness word first (the stream keeps those calls off its fast path), so that at most a copy already
/// under way when it stopped lands there (DESIGN.md, *Streams through vmsockd's region*). Nobody can withdraw
/// that right from a memfd link or a host peer of a region: `always`.
struct Standing: @unchecked Sendable {  // the word lives in the region's mapping, which the node keeps for good
    /// The liveness word of our process slot, and the value it has while we hold the slot; nil for `always`.
    private let word: UnsafePointer<UInt64>?
    private let expected: UInt64

    /// The liveness word of `owner`'s process slot, and the value it has while `owner` holds it.
    init(processSlotOf owner: IvshmemArena.Owner, in view: IvshmemArenaView) {
        let offset = view.region.slotOffset(owner.id) + IvshmemLayout.SlotOffset.liveness
        word = UnsafePointer((view.base + offset).assumingMemoryBound(to: UInt64.self))
        expected = IvshmemLayout.Liveness(epoch: owner.epoch, live: true).word.littleEndian
    }

    private init() {
        word = nil
        expected = 0
    }

    /// A side whose right to its half nobody can withdraw.
    static let always = Standing()

    /// Whether the right can be withdrawn at all (then every data call must look at `holds`).
    var canBeWithdrawn: Bool { word != nil }

    var holds: Bool { word.map { vms_load_acquire_u64($0) == expected } ?? true }
}

/// Whether a region connection's reader or writer sleeps (a blocked call, or an armed poller), in this process's
/// own memory: what the region's dispatcher reads to decide whom to wake at its pass (`IvshmemNode.sweep`). The
/// same announcement in our half of the ring tells the peer; a peer can scribble that one, and a poller that waits
/// without a timeout must not depend on it.
final class SleepFlags: Sendable {
    let data = Atomic<Bool>(false)
    let space = Atomic<Bool>(false)

    func set(forData: Bool, _ sleeping: Bool) {
        if forData { data.store(sleeping, ordering: .releasing) } else { space.store(sleeping, ordering: .releasing) }
    }
}
