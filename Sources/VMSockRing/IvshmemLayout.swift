import CVMSock

/// The region vmsockd hands to every ivshmem peer (QEMU's BAR2, a library client's mapping): one memfd, shared
/// read-write by all of them, with a small header that only the daemon writes.
///
/// ```
///  offset  size  field                       written by the daemon      read by peers
///  ------  ----  --------------------------  -------------------------  ---------------------------------------
///       0     8  magic "vmsockI\u{1}"        once, before the first     once, at join
///       8     4  layout version                client can connect
///      12     4  header size (4096)
///      16     8  region size                                            (must equal the memfd's size)
///      24     4  vectors per peer                                       (the number of eventfds each peer has)
///      28     4  peer slots S                                           (ids are 0..<S: an id indexes its slot)
///      32     4  slot size (64)
///      36     4  reserved, zero
///      40     8  slot table offset (4096)
///      48     8  arena offset                                           the next step: listen table and rings
///      56     8  arena size                                                live in the arena
///      64     8  daemon instance             random, new at every start
///      72     4  daemon pid
///      76     4  reserved, zero
///      80     8  joins                       after each join            diagnostics: the last epoch handed out
///      88     8  heartbeat                   every 100 ms               a guest learns that vmsockd died
///      96     8  host key                    once                       which host and network namespace the
///                                                                         daemon runs in (`IvshmemNode`)
///     104     4  host aliases: count (0-4)   once                       addresses that name the daemon's host
///     108    16  host aliases: IPv4 each                                  to a guest (QEMU user networking's
///                                                                         10.0.2.2: `vmsockd --host-alias`)
///     124  3972  reserved, zero
///    4096  S*64  peer slots, 64 bytes each:
///                  +0  8  liveness: epoch << 1 | live    at join (live), at leave (epoch kept, live cleared)
///                  +8  4  pid   (SO_PEERCRED at join)    before liveness, so a reader that sees it live sees these
///                 +12  4  uid
///                 +16  4  gid
///                 +20  4  reserved, zero
///                 +24  8  via (process slots only): the owner word of the VM whose device the process uses
///                 +32  8  heartbeat (process slots only): counted up by the process while it lives
///                 +40 24  reserved, zero
///   arena   ...  zero until the next step uses it; starts on a 4 KiB boundary after the slot table
/// ```
///
/// Every peer maps the whole region read-write (ivshmem cannot map part of a BAR read-only), so "only the daemon
/// writes the header" is a convention every peer must keep, not something the kernel enforces. The daemon
/// therefore never reads its own fields back (like `LocalHeader`, it keeps its values privately and only stores;
/// of the process slots it only compares words, to see whether they changed), and a peer checks what it reads
/// before it uses it (`IvshmemHeader.validate`).
///
/// **Epochs.** The daemon counts joins from 1; a peer's epoch is the count at its join, and it is never handed out
/// again in this region. A peer slot's liveness word holds the epoch of the last peer that had the slot and
/// whether it is still there, in one 64-bit word, stored with release and loaded with acquire. Something that
/// refers to a peer (the next step: a listen entry, a connection's rings) records its (id, epoch); it is current
/// only while the slot's liveness word is exactly `epoch << 1 | 1`. A new peer that gets the id of a dead one has
/// another epoch, so it is never mistaken for it.
///
/// **Process slots.** The last `processSlots` slots are never handed to a client: a process inside a guest shares
/// its VM's id (one device, one id), so it claims one of these for an identity of its own (`IvshmemProcessSlots`),
/// by CAS of the liveness word to the next epoch, live. Nothing tells anyone that such a process died (its guest's
/// kernel does not tell the device), so it counts its heartbeat up at least every 100 ms, and the daemon clears
/// the live bit of one whose heartbeat has stood still for `processTimeoutMs`. A process slot is current only while
/// its VM's slot is too.
///
/// **Sizes.** The region is a power of two (QEMU maps BAR2 from the memfd's size and refuses anything else), from
/// 64 KiB to 64 GiB. It has one slot per KiB, at most 65,536 (ivshmem ids are 16 bits): the slot table is 1/16 of
/// the region up to 64 MiB, 4 MiB beyond.
public enum IvshmemLayout {
    /// "vmsockI" and a 1, read as a little-endian 64-bit word.
    public static let magic: UInt64 = 0x0149_6b63_6f73_6d76
    /// 4: a connector marks a slot `claiming` until its request is written (`IvshmemArena.Owner.claimingBit`),
    /// and slots a guest process was judged gone from are quarantined; a peer of version 3 would free a slot
    /// under a claim, or at once.
    public static let version: UInt32 = 4
    public static let headerSize = 4096
    public static let slotSize = 64

    public static let minimumRegionSize = 64 << 10
    public static let maximumRegionSize = 64 << 30
    public static let defaultRegionSize = 64 << 20

    /// ivshmem's limits: 16-bit peer ids, at most 64 vectors (MSI-X vectors of the QEMU device).
    public static let maximumPeers = 1 << 16
    public static let maximumVectors = 64
    /// Process slots: half the slots, at most this many.
    public static let maximumProcessSlots = 4096
    /// Host aliases the header has room for.
    public static let maximumHostAliases = 4
    /// A guest that sees the daemon's heartbeat stand still this long takes the daemon for dead.
    public static let daemonTimeoutMs = 2000
    /// A process slot whose heartbeat stands still this long is cleared by the daemon: its process is gone (or
    /// stopped, or its VM paused, that long).
    public static let processTimeoutMs = 600

    public enum Offset {
        public static let magic = 0
        public static let version = 8
        public static let headerSize = 12
        public static let regionSize = 16
        public static let vectors = 24
        public static let peerSlots = 28
        public static let slotSize = 32
        public static let slotTable = 40
        public static let arenaOffset = 48
        public static let arenaSize = 56
        public static let instance = 64
        public static let daemonPID = 72
        public static let joins = 80
        public static let heartbeat = 88
        public static let hostKey = 96
        public static let aliasCount = 104
        public static let aliases = 108
    }

    /// Offsets inside one peer slot.
    public enum SlotOffset {
        public static let liveness = 0
        public static let pid = 8
        public static let uid = 12
        public static let gid = 16
        public static let via = 24
        public static let heartbeat = 32
    }

    /// A region size is valid when it is a power of two from 64 KiB to 64 GiB.
    public static func isValid(regionSize: Int) -> Bool {
        regionSize >= minimumRegionSize && regionSize <= maximumRegionSize && regionSize & (regionSize - 1) == 0
    }

    /// Where everything lies in a region of a valid size.
    public struct Geometry: Equatable, Sendable {
        public let regionSize: Int
        public let peerSlots: Int
        /// Ids from here up are process slots (`processSlots` of them); the daemon hands out only ids below.
        public let firstProcessSlot: Int
        public let slotTableOffset: Int
        public let arenaOffset: Int

        public var arenaSize: Int { regionSize - arenaOffset }
        public var processSlots: Int { peerSlots - firstProcessSlot }

        public func isProcessSlot(_ id: Int) -> Bool { id >= firstProcessSlot && id < peerSlots }

        /// The geometry of a region of `regionSize` bytes; nil unless `isValid(regionSize:)`.
        public init?(regionSize: Int) {
            guard IvshmemLayout.isValid(regionSize: regionSize) else { return nil }
            self.regionSize = regionSize
            peerSlots = min(IvshmemLayout.maximumPeers, regionSize >> 10)
            firstProcessSlot = peerSlots - min(peerSlots / 2, IvshmemLayout.maximumProcessSlots)
            slotTableOffset = IvshmemLayout.headerSize
            let tableEnd = slotTableOffset + peerSlots * IvshmemLayout.slotSize
            arenaOffset = (tableEnd + 4095) & ~4095
        }

        /// The offset of slot `id`'s first byte; `id` must be below `peerSlots`.
        public func slotOffset(_ id: Int) -> Int { slotTableOffset + id * IvshmemLayout.slotSize }
    }

    /// A liveness word: the epoch of the slot's last peer, and whether it is still there.
    public struct Liveness: Equatable, Sendable {
        public let epoch: UInt64
        public let live: Bool

        public init(epoch: UInt64, live: Bool) {
            self.epoch = epoch
            self.live = live
        }

        public init(word: UInt64) {
            epoch = word >> 1
            live = word & 1 != 0
        }

        public var word: UInt64 { epoch << 1 | (live ? 1 : 0) }

        /// A slot that has never had a peer.
        public static let unused = Liveness(epoch: 0, live: false)
    }
}

/// What a peer found wrong with the region's header. The daemon is trusted more than a peer, but every peer can
/// write the region: callers report EPROTO and do not use the region.
public enum IvshmemLayoutViolation: Error, Equatable, Sendable, CustomStringConvertible {
    case badMagic(UInt64)
    case versionMismatch(UInt32)
    case badHeaderSize(UInt32)
    case regionSizeMismatch(header: UInt64, actual: Int)
    case badVectors(UInt32)
    case geometryMismatch(String)

    public var description: String {
        switch self {
        case .badMagic(let m): "region has bad magic 0x\(String(m, radix: 16)) (not a vmsockd region)"
        case .versionMismatch(let v): "region layout version \(v), we speak \(IvshmemLayout.version)"
        case .badHeaderSize(let h): "region header size \(h), expected \(IvshmemLayout.headerSize)"
        case .regionSizeMismatch(let h, let a): "region header says \(h) bytes, the memory has \(a)"
        case .badVectors(let v): "region header says \(v) vectors (1...\(IvshmemLayout.maximumVectors) are valid)"
        case .geometryMismatch(let what): "region header's \(what) does not match its size"
        }
    }
}

/// The daemon's side of the header: stores only, never a load (see `IvshmemLayout`).
public struct IvshmemHeaderWriter: @unchecked Sendable {  // a pointer into a mapping its owner keeps alive
    public let base: UnsafeMutableRawPointer
    public let geometry: IvshmemLayout.Geometry

    public init(base: UnsafeMutableRawPointer, geometry: IvshmemLayout.Geometry) {
        self.base = base
        self.geometry = geometry
    }

    /// Writes the fixed fields. Call once, on a fresh (zero) region, before any client can connect.
    public func initialize(vectors: Int, instance: UInt64, daemonPID: UInt32) {
        base.initializeMemory(as: UInt8.self, repeating: 0, count: IvshmemLayout.headerSize)
        store64(IvshmemLayout.magic, at: IvshmemLayout.Offset.magic)
        store32(IvshmemLayout.version, at: IvshmemLayout.Offset.version)
        store32(UInt32(IvshmemLayout.headerSize), at: IvshmemLayout.Offset.headerSize)
        store64(UInt64(geometry.regionSize), at: IvshmemLayout.Offset.regionSize)
        store32(UInt32(vectors), at: IvshmemLayout.Offset.vectors)
        store32(UInt32(geometry.peerSlots), at: IvshmemLayout.Offset.peerSlots)
        store32(UInt32(IvshmemLayout.slotSize), at: IvshmemLayout.Offset.slotSize)
        store64(UInt64(geometry.slotTableOffset), at: IvshmemLayout.Offset.slotTable)
        store64(UInt64(geometry.arenaOffset), at: IvshmemLayout.Offset.arenaOffset)
        store64(UInt64(geometry.arenaSize), at: IvshmemLayout.Offset.arenaSize)
        store64(instance, at: IvshmemLayout.Offset.instance)
        store32(daemonPID, at: IvshmemLayout.Offset.daemonPID)
    }

    /// Writes the daemon's host key and the addresses that name its host to guests (IPv4, 4 bytes each; at most
    /// `maximumHostAliases`, the rest ignored). Call once, after `initialize`.
    public func describeHost(key: UInt64, aliases: [[UInt8]]) {
        let kept = aliases.filter { $0.count == 4 }.prefix(IvshmemLayout.maximumHostAliases)
        store64(key, at: IvshmemLayout.Offset.hostKey)
        for (index, alias) in kept.enumerated() {
            for (byte, value) in alias.enumerated() {
                base.storeBytes(of: value, toByteOffset: IvshmemLayout.Offset.aliases + index * 4 + byte, as: UInt8.self)
            }
        }
        store32(UInt32(kept.count), at: IvshmemLayout.Offset.aliasCount)
    }

    /// One heartbeat: `count`, the daemon's own count of them (it never reads the word back).
    public func beat(_ count: UInt64) {
        vms_store_release_u64(word(IvshmemLayout.Offset.heartbeat), count.littleEndian)
    }

    /// Marks slot `id` live for a new peer: its credentials first, then (release) the liveness word, so that a
    /// peer that sees the slot live also sees the credentials. Then the join count, for diagnostics.
    public func markJoined(id: Int, epoch: UInt64, pid: UInt32, uid: UInt32, gid: UInt32) {
        let slot = geometry.slotOffset(id)
        store32(pid, at: slot + IvshmemLayout.SlotOffset.pid)
        store32(uid, at: slot + IvshmemLayout.SlotOffset.uid)
        store32(gid, at: slot + IvshmemLayout.SlotOffset.gid)
        vms_store_release_u64(word(slot + IvshmemLayout.SlotOffset.liveness),
                              IvshmemLayout.Liveness(epoch: epoch, live: true).word.littleEndian)
        vms_store_release_u64(word(IvshmemLayout.Offset.joins), epoch.littleEndian)
    }

    /// Marks slot `id` left: the epoch stays (so a stale reference still compares unequal to any later peer), the
    /// live bit goes. The credentials stay too, for diagnostics, until the slot's next join overwrites them.
    public func markLeft(id: Int, epoch: UInt64) {
        vms_store_release_u64(word(geometry.slotOffset(id) + IvshmemLayout.SlotOffset.liveness),
                              IvshmemLayout.Liveness(epoch: epoch, live: false).word.littleEndian)
    }

    private func word(_ offset: Int) -> UnsafeMutablePointer<UInt64> {
        (base + offset).assumingMemoryBound(to: UInt64.self)
    }
    private func store64(_ value: UInt64, at offset: Int) {
        base.storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt64.self)
    }
    private func store32(_ value: UInt32, at offset: Int) {
        base.storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt32.self)
    }
}

/// A peer's view of the header: every value is read once, checked, then used.
public struct IvshmemHeader: @unchecked Sendable {  // a pointer into a mapping its owner keeps alive
    public let base: UnsafeRawPointer

    public init(base: UnsafeRawPointer) { self.base = base }

    /// What a peer needs from the header, checked against the size of the memory it mapped.
    public struct Fields: Equatable, Sendable {
        public let geometry: IvshmemLayout.Geometry
        public let vectors: Int
        public let instance: UInt64
        public let daemonPID: UInt32
    }

    /// Checks the fixed fields against the memory's real size (`regionSize`, from fstat) and returns them.
    public func validate(regionSize: Int) throws(IvshmemLayoutViolation) -> Fields {
        let magic = load64(IvshmemLayout.Offset.magic)
        guard magic == IvshmemLayout.magic else { throw .badMagic(magic) }
        let version = load32(IvshmemLayout.Offset.version)
        guard version == IvshmemLayout.version else { throw .versionMismatch(version) }
        let header = load32(IvshmemLayout.Offset.headerSize)
        guard header == IvshmemLayout.headerSize else { throw .badHeaderSize(header) }
        let size = load64(IvshmemLayout.Offset.regionSize)
        guard size == UInt64(regionSize), let geometry = IvshmemLayout.Geometry(regionSize: regionSize) else {
            throw .regionSizeMismatch(header: size, actual: regionSize)
        }
        let vectors = load32(IvshmemLayout.Offset.vectors)
        guard vectors >= 1 && vectors <= IvshmemLayout.maximumVectors else { throw .badVectors(vectors) }
        guard load32(IvshmemLayout.Offset.peerSlots) == UInt32(geometry.peerSlots) else { throw .geometryMismatch("peer slot count") }
        guard load32(IvshmemLayout.Offset.slotSize) == UInt32(IvshmemLayout.slotSize) else { throw .geometryMismatch("slot size") }
        guard load64(IvshmemLayout.Offset.slotTable) == UInt64(geometry.slotTableOffset) else { throw .geometryMismatch("slot table offset") }
        guard load64(IvshmemLayout.Offset.arenaOffset) == UInt64(geometry.arenaOffset) else { throw .geometryMismatch("arena offset") }
        guard load64(IvshmemLayout.Offset.arenaSize) == UInt64(geometry.arenaSize) else { throw .geometryMismatch("arena size") }
        return Fields(
            geometry: geometry, vectors: Int(vectors), instance: load64(IvshmemLayout.Offset.instance),
            daemonPID: load32(IvshmemLayout.Offset.daemonPID))
    }

    /// The daemon's heartbeat, counted up every 100 ms while it runs.
    public var heartbeat: UInt64 {
        UInt64(littleEndian: vms_load_acquire_u64((base + IvshmemLayout.Offset.heartbeat).assumingMemoryBound(to: UInt64.self)))
    }

    /// The daemon's host key (0: not written).
    public var hostKey: UInt64 { load64(IvshmemLayout.Offset.hostKey) }

    /// The addresses that name the daemon's host to a guest (IPv4, 4 bytes each): at most `maximumHostAliases`,
    /// whatever the count word says.
    public var hostAliases: [[UInt8]] {
        let count = min(Int(load32(IvshmemLayout.Offset.aliasCount)), IvshmemLayout.maximumHostAliases)
        return (0..<count).map { index in
            (0..<4).map { base.load(fromByteOffset: IvshmemLayout.Offset.aliases + index * 4 + $0, as: UInt8.self) }
        }
    }

    /// Slot `id`'s liveness word (acquire: a live slot's credentials, written before it, are visible after it).
    /// `id` must be below the validated geometry's `peerSlots`.
    public func liveness(of id: Int, in geometry: IvshmemLayout.Geometry) -> IvshmemLayout.Liveness {
        let pointer = (base + geometry.slotOffset(id) + IvshmemLayout.SlotOffset.liveness).assumingMemoryBound(to: UInt64.self)
        return IvshmemLayout.Liveness(word: UInt64(littleEndian: vms_load_acquire_u64(pointer)))
    }

    private func load64(_ offset: Int) -> UInt64 {
        UInt64(littleEndian: base.load(fromByteOffset: offset, as: UInt64.self))
    }
    private func load32(_ offset: Int) -> UInt32 {
        UInt32(littleEndian: base.load(fromByteOffset: offset, as: UInt32.self))
    }
}
