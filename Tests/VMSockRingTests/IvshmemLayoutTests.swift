import VMSockRing
import XCTest

/// vmsockd's region layout over plain memory: geometry, the liveness word, what the daemon writes and what a peer
/// accepts.
final class IvshmemLayoutTests: XCTestCase {
    func testSizesAndGeometry() throws {
        for size in [64 << 10, 1 << 20, 64 << 20, 1 << 30, 64 << 30] { XCTAssertTrue(IvshmemLayout.isValid(regionSize: size), "\(size)") }
        for size in [0, 32 << 10, (64 << 10) + 4096, 3 << 20, 128 << 30, -1] { XCTAssertFalse(IvshmemLayout.isValid(regionSize: size), "\(size)") }
        XCTAssertNil(IvshmemLayout.Geometry(regionSize: 3 << 20))

        let smallest = try XCTUnwrap(IvshmemLayout.Geometry(regionSize: 64 << 10))
        XCTAssertEqual(smallest.peerSlots, 64)
        XCTAssertEqual(smallest.slotTableOffset, 4096)
        XCTAssertEqual(smallest.arenaOffset, 8192)
        XCTAssertEqual(smallest.arenaSize, 56 << 10)
        XCTAssertEqual(smallest.slotOffset(63), 4096 + 63 * 64)
        XCTAssertEqual(smallest.firstProcessSlot, 32, "half the slots are process slots")
        XCTAssertTrue(smallest.isProcessSlot(32) && smallest.isProcessSlot(63))
        XCTAssertFalse(smallest.isProcessSlot(31) || smallest.isProcessSlot(64))

        let usual = try XCTUnwrap(IvshmemLayout.Geometry(regionSize: 64 << 20))
        XCTAssertEqual(usual.peerSlots, 65536, "one per KiB, which is every 16-bit id")
        XCTAssertEqual(usual.arenaOffset, 4096 + (4 << 20))
        XCTAssertEqual(usual.processSlots, 4096, "at most 4096 process slots")
        XCTAssertEqual(usual.firstProcessSlot, 65536 - 4096)
        let large = try XCTUnwrap(IvshmemLayout.Geometry(regionSize: 1 << 30))
        XCTAssertEqual(large.peerSlots, 65536, "never more than the id space")
        XCTAssertEqual(large.arenaOffset % 4096, 0)
    }

    /// The arena's rings: page-aligned halves that never overlap and stay inside the region; the first slots get
    /// memfd-sized rings while the space left over allows.
    func testArenaGeometry() throws {
        for size in [64 << 10, 1 << 20, 16 << 20, 64 << 20, 256 << 20, 1 << 30, 64 << 30] {
            let region = try XCTUnwrap(IvshmemLayout.Geometry(regionSize: size))
            let arena = try XCTUnwrap(IvshmemArena.Geometry(region), "\(size)")
            XCTAssertGreaterThan(arena.slots, 0)
            XCTAssertLessThanOrEqual(arena.bigSlots, arena.slots)
            var end = arena.ringsOffset
            for slot in 0..<arena.slots {
                let capacity = arena.ringCapacity(ofSlot: slot)
                XCTAssertEqual(capacity & (capacity - 1), 0, "a power of two")
                XCTAssertEqual(capacity, slot < arena.bigSlots ? IvshmemArena.maximumRingCapacity : arena.ringCapacity)
                XCTAssertEqual(arena.connectorHalfOffset(slot), end, "\(size): slot \(slot) follows the one before")
                XCTAssertEqual(arena.listenerHalfOffset(slot), end + RingLayout.headerSize + capacity)
                XCTAssertEqual(end % 4096, 0)
                end += 2 * (RingLayout.headerSize + capacity)
            }
            XCTAssertLessThanOrEqual(end, size, "\(size): the rings end inside the region")
            let oneMore = end + 2 * (IvshmemArena.maximumRingCapacity - arena.ringCapacity)
            XCTAssertTrue(arena.bigSlots == arena.slots || oneMore > size, "\(size): as many big slots as fit")
        }
        let usual = try XCTUnwrap(IvshmemArena.Geometry(XCTUnwrap(IvshmemLayout.Geometry(regionSize: 64 << 20))))
        XCTAssertEqual([usual.slots, usual.bigSlots, usual.ringCapacity], [64, 3, 256 << 10])
        let large = try XCTUnwrap(IvshmemArena.Geometry(XCTUnwrap(IvshmemLayout.Geometry(regionSize: 1 << 30))))
        XCTAssertEqual([large.slots, large.bigSlots, large.ringCapacity], [64, 64, 4 << 20])
    }

    func testLivenessWord() {
        let live = IvshmemLayout.Liveness(epoch: 7, live: true)
        XCTAssertEqual(live.word, 15)
        XCTAssertEqual(IvshmemLayout.Liveness(word: 15), live)
        XCTAssertEqual(IvshmemLayout.Liveness(word: 14), IvshmemLayout.Liveness(epoch: 7, live: false))
        XCTAssertEqual(IvshmemLayout.Liveness(word: 0), .unused)
        XCTAssertNotEqual(IvshmemLayout.Liveness(epoch: 8, live: true), live, "a new peer in the same slot differs")
    }

    /// What the daemon writes, a peer reads back; every fixed field a peer relies on is checked.
    func testHeaderRoundTripAndChecks() throws {
        let size = 64 << 10
        let memory = Self.zeroedRegion(size)
        defer { memory.deallocate() }
        let geometry = try XCTUnwrap(IvshmemLayout.Geometry(regionSize: size))
        let writer = IvshmemHeaderWriter(base: memory, geometry: geometry)
        writer.initialize(vectors: 4, instance: 0xfeed, daemonPID: 42)
        let header = IvshmemHeader(base: memory)
        let fields = try header.validate(regionSize: size)
        XCTAssertEqual(fields.geometry, geometry)
        XCTAssertEqual(fields.vectors, 4)
        XCTAssertEqual(fields.instance, 0xfeed)
        XCTAssertEqual(fields.daemonPID, 42)
        XCTAssertEqual(memory.load(as: UInt64.self), IvshmemLayout.magic)
        XCTAssertEqual(Array(UnsafeRawBufferPointer(start: memory, count: 8)), Array("vmsockI\u{1}".utf8))

        writer.markJoined(id: 3, epoch: 9, pid: 100, uid: 1000, gid: 1000)
        XCTAssertEqual(header.liveness(of: 3, in: geometry), .init(epoch: 9, live: true))
        XCTAssertEqual(memory.load(fromByteOffset: geometry.slotOffset(3) + IvshmemLayout.SlotOffset.uid, as: UInt32.self), 1000)
        XCTAssertEqual(memory.load(fromByteOffset: IvshmemLayout.Offset.joins, as: UInt64.self), 9)
        writer.markLeft(id: 3, epoch: 9)
        XCTAssertEqual(header.liveness(of: 3, in: geometry), .init(epoch: 9, live: false))
        XCTAssertEqual(header.liveness(of: 4, in: geometry), .unused)

        XCTAssertThrowsError(try header.validate(regionSize: 128 << 10)) {
            XCTAssertEqual($0 as? IvshmemLayoutViolation, .regionSizeMismatch(header: UInt64(size), actual: 128 << 10))
        }
        // Each fixed field broken in turn (as any peer could, the region being writable by all).
        let cases: [(Int, UInt64, Int, IvshmemLayoutViolation)] = [
            (IvshmemLayout.Offset.magic, 1, 8, .badMagic(1)),
            (IvshmemLayout.Offset.version, 1, 4, .versionMismatch(1)),
            (IvshmemLayout.Offset.headerSize, 8192, 4, .badHeaderSize(8192)),
            (IvshmemLayout.Offset.vectors, 0, 4, .badVectors(0)),
            (IvshmemLayout.Offset.vectors, 65, 4, .badVectors(65)),
            (IvshmemLayout.Offset.peerSlots, 65536, 4, .geometryMismatch("peer slot count")),
            (IvshmemLayout.Offset.slotSize, 128, 4, .geometryMismatch("slot size")),
            (IvshmemLayout.Offset.slotTable, 0, 8, .geometryMismatch("slot table offset")),
            (IvshmemLayout.Offset.arenaOffset, 4096, 8, .geometryMismatch("arena offset")),
            (IvshmemLayout.Offset.arenaSize, 1 << 40, 8, .geometryMismatch("arena size")),
        ]
        for (offset, value, width, expected) in cases {
            writer.initialize(vectors: 4, instance: 1, daemonPID: 1)
            if width == 8 {
                memory.storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt64.self)
            } else {
                memory.storeBytes(of: UInt32(value).littleEndian, toByteOffset: offset, as: UInt32.self)
            }
            XCTAssertThrowsError(try header.validate(regionSize: size)) {
                XCTAssertEqual($0 as? IvshmemLayoutViolation, expected)
            }
        }
    }

    /// A guest's processes: each claims a process slot of its own, current only while its VM is; the daemon's
    /// judge clears one whose words stand still for the timeout, never one that beats, and never after its own
    /// pause. A fake clock: nothing here waits.
    func testProcessSlotsAndTheirJudge() throws {
        let size = 64 << 10
        let memory = Self.zeroedRegion(size)
        defer { memory.deallocate() }
        let geometry = try XCTUnwrap(IvshmemLayout.Geometry(regionSize: size))
        let writer = IvshmemHeaderWriter(base: memory, geometry: geometry)
        writer.initialize(vectors: 1, instance: 1, daemonPID: 1)
        writer.markJoined(id: 2, epoch: 5, pid: 1, uid: 0, gid: 0)
        let arena = try XCTUnwrap(IvshmemArena.Geometry(geometry))
        let view = IvshmemArenaView(base: memory, region: geometry, arena: arena)
        let vm = IvshmemArena.Owner(id: 2, epoch: 5)

        let first = try XCTUnwrap(view.processSlots.claim(for: vm, pid: 10, uid: 0, gid: 0))
        let second = try XCTUnwrap(view.processSlots.claim(for: vm, pid: 11, uid: 0, gid: 0))
        XCTAssertEqual(first, IvshmemArena.Owner(id: 32, epoch: 1))
        XCTAssertEqual(second, IvshmemArena.Owner(id: 33, epoch: 1), "two processes of one VM: two owners")
        XCTAssertTrue(view.isCurrent(first))
        XCTAssertEqual(view.ringTarget(of: first), vm, "a process is rung through its VM")
        XCTAssertEqual(view.ringTarget(of: vm), vm)

        var judge = IvshmemProcessJudge(base: memory, geometry: geometry)
        let timeout = UInt64(IvshmemLayout.processTimeoutMs)
        var now: UInt64 = 1000
        XCTAssertTrue(judge.scan(nowMs: now).isEmpty)
        // `first` beats at every scan, `second` stops: only `second` is cleared, after the timeout.
        var cleared: [Int] = []
        while now < 1000 + 3 * timeout {
            now += 100
            view.processSlots.beat(first)
            cleared += judge.scan(nowMs: now).map(\.id)
        }
        XCTAssertEqual(cleared, [33])
        XCTAssertTrue(view.isCurrent(first))
        XCTAssertFalse(view.isCurrent(second))
        XCTAssertNil(view.ringTarget(of: second))
        XCTAssertEqual(view.processSlots.claim(for: vm, pid: 12, uid: 0, gid: 0), IvshmemArena.Owner(id: 33, epoch: 2),
                       "a cleared slot is claimed again with a new epoch")

        // The judge's own pause (a jump of its clock) restarts every count instead of condemning.
        now += 10 * timeout
        XCTAssertTrue(judge.scan(nowMs: now).isEmpty)

        // The VM leaves: its processes are no longer current at once, before any judge runs.
        writer.markLeft(id: 2, epoch: 5)
        XCTAssertFalse(view.isCurrent(first))
        XCTAssertNil(view.ringTarget(of: first))
        // A via word naming another process slot, or nothing, is never current.
        memory.storeBytes(of: first.word.littleEndian, toByteOffset: geometry.slotOffset(32) + IvshmemLayout.SlotOffset.via, as: UInt64.self)
        XCTAssertNil(view.processSlots.vm(of: 32))
        // Every process slot live: no claim.
        for id in geometry.firstProcessSlot..<geometry.peerSlots {
            memory.storeBytes(of: UInt64(3).littleEndian, toByteOffset: geometry.slotOffset(id), as: UInt64.self)
        }
        XCTAssertNil(view.processSlots.claim(for: vm, pid: 13, uid: 0, gid: 0))
    }

    /// A connection slot that a guest process was judged gone from, without releasing it, stays taken for the
    /// quarantine, counted in vmsockd's heartbeats from the first freer's look: the process may only have been
    /// stopped, and a copy it had begun would land in the next connection. A released side, or a host peer that
    /// left, frees the slot at once; a stamp made for another claim of the slot does not count.
    func testASlotAGuestProcessWasJudgedGoneFromIsQuarantined() throws {
        let (memory, writer, view) = try Self.regionWithTwoPeers()
        defer { memory.deallocate() }
        let geometry = view.region, arena = view.arena
        let guest = try XCTUnwrap(view.processSlots.claim(for: IvshmemArena.Owner(id: 2, epoch: 5), pid: 10, uid: 0, gid: 0))
        let host = IvshmemArena.Owner(id: 3, epoch: 6)
        let slot = arena.slotOffset(0)
        func claim(connector: UInt64, listener: UInt64) {
            view.store64(slot + IvshmemArena.SlotOffset.connector, connector)
            view.store64(slot + IvshmemArena.SlotOffset.listener, listener)
        }
        let released = IvshmemArena.Owner.releasedBit

        // Both sides current: taken.
        claim(connector: guest.word, listener: host.word)
        XCTAssertFalse(view.freeIfDone(slot: 0))
        // The host closed; then vmsockd's judge clears the guest process (it stood still): quarantined.
        claim(connector: guest.word, listener: host.word | released)
        let liveness = geometry.slotOffset(guest.id) + IvshmemLayout.SlotOffset.liveness
        view.store64(liveness, IvshmemLayout.Liveness(epoch: guest.epoch, live: false).word)
        writer.beat(1000)
        XCTAssertFalse(view.freeIfDone(slot: 0), "the first look stamps the quarantine")
        writer.beat(1000 + UInt64(IvshmemArena.quarantineBeats) - 1)
        XCTAssertFalse(view.freeIfDone(slot: 0), "one beat short of the quarantine")
        writer.beat(1000 + UInt64(IvshmemArena.quarantineBeats))
        XCTAssertTrue(view.freeIfDone(slot: 0), "freed once the quarantine is over")
        XCTAssertEqual(view.load64(slot + IvshmemArena.SlotOffset.connector), 0)

        // Another claim of the slot, judged the same way, starts a quarantine of its own.
        claim(connector: host.word | released, listener: guest.word)
        XCTAssertFalse(view.freeIfDone(slot: 0), "the last claim's stamp does not count for this one")
        writer.beat(1000 + 2 * UInt64(IvshmemArena.quarantineBeats))
        XCTAssertTrue(view.freeIfDone(slot: 0))

        // A guest side that released its claim, and a host peer that left, free the slot at once.
        claim(connector: guest.word | released, listener: host.word | released)
        XCTAssertTrue(view.freeIfDone(slot: 0))
        writer.markLeft(id: 3, epoch: 6)
        claim(connector: host.word, listener: 0)
        XCTAssertTrue(view.freeIfDone(slot: 0), "a host peer that left cannot write any more")
    }

    /// A connector's `claiming` mark: the word still names its owner (current while the owner is, so no freer
    /// frees a slot under a claim in progress), and a claim of an owner that died is freed as any other.
    func testAClaimingMarkNamesItsOwnerAndKeepsTheSlotTaken() throws {
        let (memory, writer, view) = try Self.regionWithTwoPeers()
        defer { memory.deallocate() }
        let arena = view.arena
        let host = IvshmemArena.Owner(id: 3, epoch: 6)
        let claiming = host.word | IvshmemArena.Owner.claimingBit
        XCTAssertEqual(IvshmemArena.Owner(word: claiming), host)
        XCTAssertTrue(IvshmemArena.Owner.isClaiming(claiming))
        XCTAssertFalse(IvshmemArena.Owner.isClaiming(host.word))
        XCTAssertTrue(view.isCurrent(word: claiming))
        let slot = arena.slotOffset(0)
        view.store64(slot + IvshmemArena.SlotOffset.connector, claiming)
        XCTAssertFalse(view.freeIfDone(slot: 0), "a claim in progress is not freed")
        writer.markLeft(id: 3, epoch: 6)
        XCTAssertTrue(view.freeIfDone(slot: 0), "a claim whose owner left is")
        // The largest epoch leaves both marks alone.
        let last = IvshmemArena.Owner(id: 0xffff, epoch: IvshmemArena.Owner.maximumEpoch)
        XCTAssertFalse(IvshmemArena.Owner.isClaiming(last.word))
        XCTAssertFalse(IvshmemArena.Owner.isReleased(last.word))
    }

    /// The daemon's heartbeat, host key and host aliases, as a guest reads them; a scribbled alias count never
    /// makes a reader go past the four the header has room for.
    func testHeartbeatHostKeyAndAliases() throws {
        let size = 64 << 10
        let memory = Self.zeroedRegion(size)
        defer { memory.deallocate() }
        let geometry = try XCTUnwrap(IvshmemLayout.Geometry(regionSize: size))
        let writer = IvshmemHeaderWriter(base: memory, geometry: geometry)
        writer.initialize(vectors: 1, instance: 1, daemonPID: 1)
        let header = IvshmemHeader(base: memory)
        XCTAssertEqual(header.hostKey, 0)
        XCTAssertEqual(header.hostAliases, [])
        writer.describeHost(key: 0xabc, aliases: [[10, 0, 2, 2], [1, 2, 3], [192, 168, 1, 1]])
        XCTAssertEqual(header.hostKey, 0xabc)
        XCTAssertEqual(header.hostAliases, [[10, 0, 2, 2], [192, 168, 1, 1]], "only 4-byte addresses are kept")
        writer.beat(7)
        XCTAssertEqual(header.heartbeat, 7)
        memory.storeBytes(of: UInt32(1000).littleEndian, toByteOffset: IvshmemLayout.Offset.aliasCount, as: UInt32.self)
        XCTAssertEqual(header.hostAliases.count, IvshmemLayout.maximumHostAliases)
        XCTAssertNoThrow(try header.validate(regionSize: size), "the new fields are not part of the fixed ones")
    }

    /// Page-aligned zeroed memory standing in for a region of `size` bytes; the caller deallocates it.
    /// A 1 MiB region whose header has two peers joined: a VM (id 2, epoch 5) and a host process (id 3, epoch 6).
    private static func regionWithTwoPeers() throws -> (UnsafeMutableRawPointer, IvshmemHeaderWriter, IvshmemArenaView) {
        let size = 1 << 20
        let memory = zeroedRegion(size)
        let geometry = try XCTUnwrap(IvshmemLayout.Geometry(regionSize: size))
        let writer = IvshmemHeaderWriter(base: memory, geometry: geometry)
        writer.initialize(vectors: 1, instance: 1, daemonPID: 1)
        writer.markJoined(id: 2, epoch: 5, pid: 1, uid: 0, gid: 0)
        writer.markJoined(id: 3, epoch: 6, pid: 1, uid: 0, gid: 0)
        let arena = try XCTUnwrap(IvshmemArena.Geometry(geometry))
        return (memory, writer, IvshmemArenaView(base: memory, region: geometry, arena: arena))
    }

    private static func zeroedRegion(_ size: Int) -> UnsafeMutableRawPointer {
        let memory = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 4096)
        memory.initializeMemory(as: UInt8.self, repeating: 0, count: size)
        return memory
    }
}
