import CVMSock

/// The arena of a vmsockd region (see `IvshmemLayout`): where peers put streams. A listen table, a table of
/// connection slots, and two rings per connection slot. Nothing here is written by the daemon, and every peer
/// can write all of it, so every word is read once, checked, and only then used.
///
/// The geometry is not stored anywhere: every peer derives it from the region's size, which the daemon's header
/// (checked at join) and the memfd's size agree on. A peer therefore never takes a size or an offset from memory
/// another peer writes.
///
/// ```
///  arena offset  size            what
///  ------------  --------------  ------------------------------------------------------------------------------
///             0  L * 64          listen table: L entries (256; 64 in an arena under 16 MiB)
///    (4 KiB up)  S * 128         connection slots: S entries (64, fewer in a small arena)
///    (4 KiB up)  rings           slot i's two halves, the connector's then the listener's, each a ring header
///                                (`RingLayout`) and C(i) bytes of data: the first B slots ("big") have 4 MiB
///                                rings, memfd's size, the others C, the largest power of two with which all S
///                                slots fit; B is as many as the space left over allows. A 64 MiB region: 3 big
///                                slots and 61 of 256 KiB; 1 GiB and more: all 64 big.
///
///  listen entry (64 bytes)
///    +0  8  owner: epoch << 16 | id of the peer that listens, 0 when free   CAS 0 -> owner | claiming to claim,
///           (bit 62, claiming: the fields below are being written; finders skip the entry)  -> owner last; CAS back
///    +8  4  published: 1 once the fields below are written (release)        0 before the owner lets go
///   +12  2  port
///   +14  1  family: 4 or 6
///   +15  1  reserved
///   +16 16  address (IPv4 in the first 4 bytes); all zero: the wildcard
///   +32  8  host key of the listener's host and network namespace (boot id and netns inode, hashed): a
///           wildcard or loopback entry only matches connectors with the same key
///   +40 24  reserved
///
///  connection slot (128 bytes)
///    +0  8  connector: owner word of the peer that claimed the slot, 0 when free     CAS 0 -> owner | claiming
///           (bit 62: claiming, while the connector writes the fields below; cleared last, by CAS)  to claim
///    +8  8  listener: owner word of the peer that accepted, 0 until then             CAS 0 -> owner to accept
///           (bit 63 of either: that side is done with the slot, set by CAS when its connection is gone)
///   +16  4  state: 1 requested, 2 accepted, 3 refused                                 (release)
///   +20  4  reserved
///   +24  8  target: owner word of the listener the connector asks
///   +32  2  dialed port
///   +34  2  connector's port (the TCP port it holds, reported as the accepted socket's peer port)
///   +36  1  family of the dialed address: 4 or 6
///   +37  3  reserved
///   +40 16  dialed address
///   +56  8  request number: the connector's, new at every claim (an acceptor checks it did not change)
///   +64 16  connector's address (reported as the accepted socket's peer address)
///   +80  4  ordering offered: 1 when the connector can use `WakeUpOrdering.asymmetric` (membarrier)
///   +84  4  ordering agreed: 1 when the listener, on the same host key, can too (written before `accepted`)
///   +88  8  the connector's host key (boot id and netns: a membarrier reaches only the same kernel)
///   +96  8  quarantine: vmsockd's heartbeat count when a freer first found a guest process's side judged gone
///           (upper 32 bits), and a tag of the two owner words it judged (lower 32 bits, never 0)
///  +104 24  reserved
/// ```
///
/// **Owner words** name a peer as `epoch << 16 | id` (bits 62 and 63 apart: in a slot, "claiming" and "released"). A word is current only while slot `id`'s liveness word in the
/// region header is exactly `epoch << 1 | 1` (`IvshmemHeader.liveness`): a peer that left, or was killed, has a
/// word that is no longer current, and a new peer with its id has another epoch.
///
/// **A connection slot is free** when its connector word is 0. It is freed (CAS of the connector word, from the
/// value read, to 0) by whoever finds both sides done: the connector released or not current, and the listener
/// never accepted, released, or not current. Each side, when its connection is gone, sets its released bit and
/// then tries to free; so does anyone looking for a free slot. So no lock is ever held by a peer that could die.
/// The released bit lives in the owner word itself, so a freer's CAS can only succeed on the very claim it judged:
/// a new claim is another word (it has no released bit), and a claimer resets the listener word before it asks.
///
/// **Quarantine.** A side that a guest process held and never released is not current because vmsockd stopped
/// seeing that process's heartbeat (`IvshmemProcessJudge`): it may be dead, or only stopped (SIGSTOP, its VM
/// paused). A stopped process that runs again stops writing its half at its next call (`Standing`), but a copy it
/// had begun goes on into the slot's memory. So such a slot is freed only `quarantineBeats` of vmsockd's heartbeats
/// after a freer first found it so; the first freer stamps the slot with the heartbeat count, and the stamp's tag
/// names the claim it judged, so a stamp from an earlier claim of the slot never shortens a later quarantine. A
/// side that was released, or a host peer (whose death vmsockd learns from its socket), frees the slot at once.
public enum IvshmemArena {
    public static let listenEntrySize = 64
    public static let slotSize = 128
    public static let maximumRingCapacity = 4 << 20
    /// How long a slot that a guest process was judged gone from stays taken: vmsockd's heartbeats (every 100 ms),
    /// so 30 s (see *Quarantine* above).
    public static let quarantineBeats: UInt32 = 300

    public enum ListenOffset {
        public static let owner = 0
        public static let published = 8
        public static let port = 12
        public static let family = 14
        public static let address = 16
        public static let hostKey = 32
    }

    public enum SlotOffset {
        public static let connector = 0
        public static let listener = 8
        public static let state = 16
        public static let target = 24
        public static let dialedPort = 32
        public static let sourcePort = 34
        public static let family = 36
        public static let dialedAddress = 40
        public static let request = 56
        public static let sourceAddress = 64
        public static let orderingOffered = 80
        public static let orderingAgreed = 84
        public static let connectorHostKey = 88
        public static let quarantine = 96
    }

    public enum State {
        public static let requested: UInt32 = 1
        public static let accepted: UInt32 = 2
        public static let refused: UInt32 = 3
    }

    /// Where the tables and rings lie in a region's arena; derived from the region's geometry alone.
    public struct Geometry: Equatable, Sendable {
        /// Offsets from the start of the region (not of the arena).
        public let listenTableOffset: Int
        public let listenEntries: Int
        public let slotTableOffset: Int
        public let slots: Int
        public let ringsOffset: Int
        /// Slots below this index are big: their rings have `bigCapacity` bytes of data, the others `ringCapacity`.
        /// A connector claims the lowest free slot, so the first connections at a time get the big rings.
        public let bigSlots: Int
        /// Bytes of each ring's data in a slot that is not big (each direction of a connection has one ring).
        public let ringCapacity: Int
        public var bigCapacity: Int { IvshmemArena.maximumRingCapacity }

        /// Bytes of each ring's data in slot `index`.
        public func ringCapacity(ofSlot index: Int) -> Int { index < bigSlots ? bigCapacity : ringCapacity }

        /// The arena of `region`, or nil when it is too small for even one connection.
        public init?(_ region: IvshmemLayout.Geometry) {
            let arenaStart = region.arenaOffset
            let arenaSize = region.arenaSize
            listenEntries = arenaSize >= 16 << 20 ? 256 : 64
            listenTableOffset = arenaStart
            let listenEnd = Self.pageUp(listenTableOffset + listenEntries * IvshmemArena.listenEntrySize)
            var slots = 64
            var capacity = IvshmemArena.maximumRingCapacity
            func ringsEnd(_ slots: Int, _ capacity: Int, big: Int = 0) -> Int {
                let tableEnd = Self.pageUp(listenEnd + slots * IvshmemArena.slotSize)
                return tableEnd + big * Self.pairSize(IvshmemArena.maximumRingCapacity)
                    + (slots - big) * Self.pairSize(capacity)
            }
            let end = arenaStart + arenaSize
            while ringsEnd(slots, capacity) > end && capacity > RingLayout.minimumCapacity { capacity /= 2 }
            while ringsEnd(slots, capacity) > end && slots > 1 { slots /= 2 }
            guard ringsEnd(slots, capacity) <= end else { return nil }
            var big = capacity == IvshmemArena.maximumRingCapacity ? slots : 0
            while big < slots && ringsEnd(slots, capacity, big: big + 1) <= end { big += 1 }
            self.slots = slots
            bigSlots = big
            ringCapacity = capacity
            slotTableOffset = listenEnd
            ringsOffset = Self.pageUp(listenEnd + slots * IvshmemArena.slotSize)
        }

        public func listenEntryOffset(_ index: Int) -> Int { listenTableOffset + index * IvshmemArena.listenEntrySize }
        public func slotOffset(_ index: Int) -> Int { slotTableOffset + index * IvshmemArena.slotSize }
        /// The connector's half of slot `index`'s rings (the ring it writes, and its positions in the other).
        public func connectorHalfOffset(_ index: Int) -> Int {
            let big = min(index, bigSlots)
            return ringsOffset + big * Self.pairSize(bigCapacity) + (index - big) * Self.pairSize(ringCapacity)
        }
        /// The listener's half, right after the connector's.
        public func listenerHalfOffset(_ index: Int) -> Int {
            connectorHalfOffset(index) + RingLayout.headerSize + ringCapacity(ofSlot: index)
        }

        /// A slot's two halves, each a ring header and `capacity` bytes.
        private static func pairSize(_ capacity: Int) -> Int { 2 * (RingLayout.headerSize + capacity) }
        private static func pageUp(_ offset: Int) -> Int { (offset + 4095) & ~4095 }
    }

    /// A peer as owner words name it.
    public struct Owner: Equatable, Hashable, Sendable, CustomStringConvertible {
        public let id: Int
        public let epoch: UInt64

        public init(id: Int, epoch: UInt64) {
            self.id = id
            self.epoch = epoch
        }

        /// A slot side's "done" mark, in its owner word.
        public static let releasedBit: UInt64 = 1 << 63
        /// A connector's mark while it writes its request into a slot it just claimed: no listener may take the
        /// slot until the connector word is its bare owner word (the request's fields are then all written).
        public static let claimingBit: UInt64 = 1 << 62
        /// The largest epoch an owner word can carry: bits 16 to 61.
        public static let maximumEpoch: UInt64 = (1 << 46) - 1

        /// nil for 0 (no owner) and for a word whose epoch could not have been handed out (0). The released and
        /// claiming marks are not part of the owner.
        public init?(word: UInt64) {
            let bare = word & ~(Self.releasedBit | Self.claimingBit)
            guard bare >> 16 != 0 else { return nil }
            id = Int(bare & 0xffff)
            epoch = bare >> 16
        }

        public static func isReleased(_ word: UInt64) -> Bool { word & releasedBit != 0 }
        public static func isClaiming(_ word: UInt64) -> Bool { word & claimingBit != 0 }

        public var word: UInt64 { epoch << 16 | UInt64(id) }
        public var description: String { "peer \(id) (epoch \(epoch))" }
    }
}

/// The arena as one peer sees it: loads and stores of the tables' words, each atomic, each value returned for the
/// caller to check. Offsets come only from the geometry and indices the caller bounds, never from the region.
public struct IvshmemArenaView: @unchecked Sendable {  // a pointer into a mapping its owner keeps alive
    public let base: UnsafeMutableRawPointer
    public let region: IvshmemLayout.Geometry
    public let arena: IvshmemArena.Geometry

    public init(base: UnsafeMutableRawPointer, region: IvshmemLayout.Geometry, arena: IvshmemArena.Geometry) {
        self.base = base
        self.region = region
        self.arena = arena
    }

    /// Whether `owner` names a peer that is in the region now: its slot's liveness word is exactly its epoch, live;
    /// for a process slot (a process in a guest), its VM's slot too.
    public func isCurrent(_ owner: IvshmemArena.Owner) -> Bool {
        guard owner.id < region.peerSlots else { return false }
        let live = IvshmemHeader(base: base).liveness(of: owner.id, in: region)
        guard live.live && live.epoch == owner.epoch else { return false }
        guard region.isProcessSlot(owner.id) else { return true }
        guard let vm = processSlots.vm(of: owner.id) else { return false }
        let vmLive = IvshmemHeader(base: base).liveness(of: vm.id, in: region)
        return vmLive.live && vmLive.epoch == vm.epoch
    }

    /// The peer whose doorbell reaches `owner`: itself, or for a process slot its VM. Nil when `owner` is not
    /// current.
    public func ringTarget(of owner: IvshmemArena.Owner) -> IvshmemArena.Owner? {
        guard isCurrent(owner) else { return nil }
        return region.isProcessSlot(owner.id) ? processSlots.vm(of: owner.id) : owner
    }

    public var processSlots: IvshmemProcessSlots { IvshmemProcessSlots(base: base, geometry: region) }

    /// Whether a word names a current peer (0 and malformed words do not; a released bit is ignored).
    public func isCurrent(word: UInt64) -> Bool { IvshmemArena.Owner(word: word).map(isCurrent) ?? false }

    // MARK: Words

    public func load64(_ offset: Int) -> UInt64 { UInt64(littleEndian: vms_load_acquire_u64(word(offset))) }
    public func load32(_ offset: Int) -> UInt32 { UInt32(littleEndian: vms_load_acquire_u32(word32(offset))) }
    public func store64(_ offset: Int, _ value: UInt64) { vms_store_seqcst_u64(word(offset), value.littleEndian) }
    public func store32(_ offset: Int, _ value: UInt32) { vms_store_seqcst_u32(word32(offset), value.littleEndian) }
    public func cas64(_ offset: Int, _ expected: UInt64, _ desired: UInt64) -> Bool {
        vms_cas_u64(word(offset), expected.littleEndian, desired.littleEndian)
    }
    @discardableResult
    public func or32(_ offset: Int, _ bits: UInt32) -> UInt32 { UInt32(littleEndian: vms_fetch_or_u32(word32(offset), bits.littleEndian)) }
    public func load16(_ offset: Int) -> UInt16 { UInt16(littleEndian: base.load(fromByteOffset: offset, as: UInt16.self)) }
    public func store16(_ offset: Int, _ value: UInt16) { base.storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt16.self) }
    public func load8(_ offset: Int) -> UInt8 { base.load(fromByteOffset: offset, as: UInt8.self) }
    public func store8(_ offset: Int, _ value: UInt8) { base.storeBytes(of: value, toByteOffset: offset, as: UInt8.self) }
    /// 16 bytes (an address), copied out before anyone looks at them.
    public func loadBytes16(_ offset: Int) -> [UInt8] { Array(UnsafeRawBufferPointer(start: base + offset, count: 16)) }
    public func storeBytes16(_ offset: Int, _ bytes: [UInt8]) {
        var padded = bytes + [UInt8](repeating: 0, count: max(0, 16 - bytes.count))
        padded.withUnsafeMutableBytes { (base + offset).copyMemory(from: $0.baseAddress!, byteCount: 16) }
    }

    // MARK: Slots

    /// Frees connection slot `index` if both of its sides are done (see `IvshmemArena`), and its quarantine is over
    /// when a side is a guest process judged gone: CAS of the connector word from what was read to 0. Returns
    /// whether the slot is free now.
    @discardableResult
    public func freeIfDone(slot index: Int) -> Bool {
        let offset = arena.slotOffset(index)
        let connector = load64(offset + IvshmemArena.SlotOffset.connector)
        if connector == 0 { return true }
        let listener = load64(offset + IvshmemArena.SlotOffset.listener)
        let connectorDone = IvshmemArena.Owner.isReleased(connector) || !isCurrent(word: connector)
        let listenerDone = listener == 0 || IvshmemArena.Owner.isReleased(listener) || !isCurrent(word: listener)
        guard connectorDone && listenerDone else { return false }
        if mayStillWrite(connector) || mayStillWrite(listener) {
            guard quarantineIsOver(slotOffset: offset, connector: connector, listener: listener) else { return false }
        }
        return cas64(offset + IvshmemArena.SlotOffset.connector, connector, 0)
    }

    /// Whether a done side's owner word may belong to a process that still runs: a guest process (a process slot)
    /// that did not release its side. Its slot was cleared by vmsockd's judge, which cannot tell dead from stopped.
    private func mayStillWrite(_ word: UInt64) -> Bool {
        guard word != 0, !IvshmemArena.Owner.isReleased(word), let owner = IvshmemArena.Owner(word: word) else { return false }
        return region.isProcessSlot(owner.id)
    }

    /// Whether the slot's quarantine for this claim (its two owner words) is over; stamps it with vmsockd's
    /// heartbeat count if no freer did yet. The count is compared in 32 bits, wrapping (13 years of beats).
    private func quarantineIsOver(slotOffset offset: Int, connector: UInt64, listener: UInt64) -> Bool {
        let mixed = (connector &* 0x9E37_79B9_7F4A_7C15) ^ (listener &* 0xC2B2_AE3D_27D4_EB4F)
        let tag = UInt64(UInt32(truncatingIfNeeded: mixed >> 32)) | 1
        let beat = UInt32(truncatingIfNeeded: IvshmemHeader(base: base).heartbeat)
        let stamp = load64(offset + IvshmemArena.SlotOffset.quarantine)
        if stamp & 0xffff_ffff == tag { return beat &- UInt32(truncatingIfNeeded: stamp >> 32) >= IvshmemArena.quarantineBeats }
        _ = cas64(offset + IvshmemArena.SlotOffset.quarantine, stamp, UInt64(beat) << 32 | tag)
        return false
    }

    private func word(_ offset: Int) -> UnsafeMutablePointer<UInt64> { (base + offset).assumingMemoryBound(to: UInt64.self) }
    private func word32(_ offset: Int) -> UnsafeMutablePointer<UInt32> { (base + offset).assumingMemoryBound(to: UInt32.self) }
}
