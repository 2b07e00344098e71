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

        let usual = try XCTUnwrap(IvshmemLayout.Geometry(regionSize: 64 << 20))
        XCTAssertEqual(usual.peerSlots, 65536, "one per KiB, which is every 16-bit id")
        XCTAssertEqual(usual.arenaOffset, 4096 + (4 << 20))
        let large = try XCTUnwrap(IvshmemLayout.Geometry(regionSize: 1 << 30))
        XCTAssertEqual(large.peerSlots, 65536, "never more than the id space")
        XCTAssertEqual(large.arenaOffset % 4096, 0)
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
        let memory = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 4096)
        defer { memory.deallocate() }
        memory.initializeMemory(as: UInt8.self, repeating: 0, count: size)
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
            (IvshmemLayout.Offset.version, 2, 4, .versionMismatch(2)),
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
}
