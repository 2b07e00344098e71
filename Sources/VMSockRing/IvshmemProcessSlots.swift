import CVMSock

/// Process slots (see `IvshmemLayout`): an identity of its own for each process inside a guest, whose VM has one
/// peer id for all its processes, and the heartbeat by which the daemon learns that such a process died.
///
/// A guest's kernel tells nobody outside when one of its processes dies, or when the guest reboots: QEMU stays
/// connected to vmsockd, so the VM's slot stays live. Without an identity per process, a host peer's connection to a
/// killed guest process would wait for ever. So each guest process claims a process slot (CAS of its liveness word
/// to the next epoch, live), names its VM in it, and counts the heartbeat up; the daemon clears the live bit of a
/// slot whose words have all stood still for `IvshmemLayout.processTimeoutMs` (`IvshmemProcessJudge`). Everything
/// that refers to the process (listen entries, connection slots) does so by that slot's owner word, so the rest of
/// the arena's rules (an owner word is current only while its slot says so) cover it unchanged.
///
/// Every word here can be written by any peer: each is read once and compared, never used as a size or offset.
public struct IvshmemProcessSlots: @unchecked Sendable {  // a pointer into a mapping its owner keeps alive
    public let base: UnsafeMutableRawPointer
    public let geometry: IvshmemLayout.Geometry

    public init(base: UnsafeMutableRawPointer, geometry: IvshmemLayout.Geometry) {
        self.base = base
        self.geometry = geometry
    }

    /// The largest epoch an owner word can carry (bits 62 and 63 are a slot's marks).
    static let maximumEpoch = IvshmemArena.Owner.maximumEpoch

    /// Claims the first process slot that is not live, for a process of `vm`: CAS of its liveness word to the next
    /// epoch, live; then its via word, credentials and a first heartbeat. Nil when every process slot is live.
    public func claim(for vm: IvshmemArena.Owner, pid: UInt32, uid: UInt32, gid: UInt32) -> IvshmemArena.Owner? {
        for id in geometry.firstProcessSlot..<geometry.peerSlots {
            let slot = geometry.slotOffset(id)
            let word = load(slot + IvshmemLayout.SlotOffset.liveness)
            let old = IvshmemLayout.Liveness(word: word)
            guard !old.live, old.epoch < Self.maximumEpoch else { continue }
            let mine = IvshmemLayout.Liveness(epoch: old.epoch + 1, live: true)
            guard vms_cas_u64(pointer(slot + IvshmemLayout.SlotOffset.liveness), word.littleEndian, mine.word.littleEndian) else { continue }
            // Nobody refers to this owner yet, so a reader that sees the old via word in between harms no one.
            store(slot + IvshmemLayout.SlotOffset.via, vm.word)
            base.storeBytes(of: pid.littleEndian, toByteOffset: slot + IvshmemLayout.SlotOffset.pid, as: UInt32.self)
            base.storeBytes(of: uid.littleEndian, toByteOffset: slot + IvshmemLayout.SlotOffset.uid, as: UInt32.self)
            base.storeBytes(of: gid.littleEndian, toByteOffset: slot + IvshmemLayout.SlotOffset.gid, as: UInt32.self)
            store(slot + IvshmemLayout.SlotOffset.heartbeat, load(slot + IvshmemLayout.SlotOffset.heartbeat) &+ 1)
            return IvshmemArena.Owner(id: id, epoch: mine.epoch)
        }
        return nil
    }

    /// One heartbeat of `me`, a process slot this process holds.
    public func beat(_ me: IvshmemArena.Owner) {
        let offset = geometry.slotOffset(me.id) + IvshmemLayout.SlotOffset.heartbeat
        store(offset, load(offset) &+ 1)
    }

    /// The VM whose device rings process slot `id`'s owner: its via word, when that names a peer id (not another
    /// process slot); nil otherwise.
    public func vm(of id: Int) -> IvshmemArena.Owner? {
        guard geometry.isProcessSlot(id),
              let vm = IvshmemArena.Owner(word: load(geometry.slotOffset(id) + IvshmemLayout.SlotOffset.via)),
              vm.id < geometry.firstProcessSlot else { return nil }
        return vm
    }

    func load(_ offset: Int) -> UInt64 { UInt64(littleEndian: vms_load_acquire_u64(pointer(offset))) }
    private func store(_ offset: Int, _ value: UInt64) { vms_store_seqcst_u64(pointer(offset), value.littleEndian) }
    func pointer(_ offset: Int) -> UnsafeMutablePointer<UInt64> { (base + offset).assumingMemoryBound(to: UInt64.self) }
}

/// The daemon's side of process slots: every `scanIntervalMs` it looks at each live process slot, and clears the
/// live bit (CAS, keeping the epoch) of one whose liveness, via and heartbeat words have not changed for
/// `IvshmemLayout.processTimeoutMs` of its own clock. After a pause of the daemon itself (descheduled, stopped)
/// it starts every count again, so that its own stall never condemns a process.
public struct IvshmemProcessJudge {
    public static let scanIntervalMs: UInt64 = 100

    private struct Seen: Equatable {
        var liveness: UInt64
        var via: UInt64
        var heartbeat: UInt64
    }

    private let slots: IvshmemProcessSlots
    private var seen: [Int: (words: Seen, sinceMs: UInt64)] = [:]
    private var lastScanMs: UInt64?

    public init(base: UnsafeMutableRawPointer, geometry: IvshmemLayout.Geometry) {
        slots = IvshmemProcessSlots(base: base, geometry: geometry)
    }

    /// One look at every process slot at `nowMs` (a monotonic clock). Returns the slots it cleared, each with the
    /// VM its via word named (nil when it named none).
    public mutating func scan(nowMs: UInt64) -> [(id: Int, vm: IvshmemArena.Owner?)] {
        let restart = lastScanMs.map { nowMs &- $0 > UInt64(IvshmemLayout.processTimeoutMs) / 2 } ?? true
        lastScanMs = nowMs
        var cleared: [(id: Int, vm: IvshmemArena.Owner?)] = []
        let geometry = slots.geometry
        for id in geometry.firstProcessSlot..<geometry.peerSlots {
            let slot = geometry.slotOffset(id)
            let liveness = slots.load(slot + IvshmemLayout.SlotOffset.liveness)
            guard liveness & 1 != 0 else {
                seen[id] = nil
                continue
            }
            let words = Seen(
                liveness: liveness, via: slots.load(slot + IvshmemLayout.SlotOffset.via),
                heartbeat: slots.load(slot + IvshmemLayout.SlotOffset.heartbeat))
            guard let last = seen[id], last.words == words, !restart else {
                seen[id] = (words, nowMs)
                continue
            }
            guard nowMs &- last.sinceMs >= UInt64(IvshmemLayout.processTimeoutMs) else { continue }
            seen[id] = nil
            let pointer = slots.pointer(slot + IvshmemLayout.SlotOffset.liveness)
            if vms_cas_u64(pointer, liveness.littleEndian, (liveness & ~1).littleEndian) {
                cleared.append((id, IvshmemArena.Owner(word: words.via)))
            }
        }
        return cleared
    }
}
