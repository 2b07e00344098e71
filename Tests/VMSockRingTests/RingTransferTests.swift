import CVMSock
import VMSockRing
import XCTest

/// A producer and a consumer over ordinary heap memory (not mirrored, so every wrap takes the two-copy path),
/// driven by one thread: the index arithmetic alone, without any system call.
final class RingTransferTests: XCTestCase {
    /// Two regions as two sides would own them; side A produces into its own, side B consumes from it.
    final class Pair {
        let capacity: Int
        let regionA: UnsafeMutableRawPointer
        let regionB: UnsafeMutableRawPointer
        var producer: RingProducer
        var consumer: RingConsumer

        init(capacity: Int) {
            self.capacity = capacity
            let size = RingLayout.regionSize(capacity: capacity)
            regionA = .allocate(byteCount: size, alignment: 4096)
            regionB = .allocate(byteCount: size, alignment: 4096)
            LocalHeader(base: regionA).initialize(capacity: capacity)
            LocalHeader(base: regionB).initialize(capacity: capacity)
            producer = RingProducer(
                data: regionA + RingLayout.headerSize, capacity: capacity, mirrored: false,
                local: LocalHeader(base: regionA), peer: PeerHeader(base: regionB))
            consumer = RingConsumer(
                data: regionA + RingLayout.headerSize, capacity: capacity, mirrored: false,
                local: LocalHeader(base: regionB), peer: PeerHeader(base: regionA))
        }

        deinit {
            regionA.deallocate()
            regionB.deallocate()
        }
    }

    func testBytesSurviveManyWrapsInOrder() throws {
        let pair = Pair(capacity: 4096)
        var rng = SystemRandomNumberGenerator()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 8192, alignment: 8)
        defer { buffer.deallocate() }
        var written: UInt64 = 0
        var read: UInt64 = 0
        while read < 10 << 20 {
            let free = try pair.producer.refreshFreeSpace()
            let n = min(free, Int.random(in: 0...3000, using: &rng))
            vms_pattern_fill(buffer.baseAddress, n, written, 7)
            pair.producer.copyIn(buffer.baseAddress!, count: n)
            pair.producer.publish(n)
            written += UInt64(n)

            let available = try pair.consumer.refreshAvailable()
            XCTAssertEqual(available, Int(written - read))
            let m = min(available, Int.random(in: 0...5000, using: &rng))
            pair.consumer.copyOut(buffer.baseAddress!, count: m)
            XCTAssertEqual(vms_pattern_check(buffer.baseAddress, m, read, 7), m, "byte mismatch near \(read)")
            pair.consumer.consume(m)
            read += UInt64(m)
        }
    }

    func testFullRingHasNoSpaceAndEmptyRingNothingToRead() throws {
        let pair = Pair(capacity: 4096)
        XCTAssertEqual(try pair.consumer.refreshAvailable(), 0)
        XCTAssertEqual(try pair.producer.refreshFreeSpace(), 4096)
        let bytes = [UInt8](repeating: 9, count: 4096)
        pair.producer.copyIn(bytes, count: 4096)
        pair.producer.publish(4096)
        XCTAssertEqual(try pair.producer.refreshFreeSpace(), 0)
        XCTAssertEqual(try pair.consumer.refreshAvailable(), 4096)
        pair.consumer.consume(1)
        XCTAssertEqual(try pair.producer.refreshFreeSpace(), 1)
    }

    func testVectoredCopiesUseSkip() throws {
        let pair = Pair(capacity: 4096)
        // Move the positions near the end so the vectored write wraps.
        let filler = [UInt8](repeating: 0, count: 4000)
        pair.producer.copyIn(filler, count: 4000)
        pair.producer.publish(4000)
        _ = try pair.consumer.refreshAvailable()
        pair.consumer.consume(4000)
        _ = try pair.producer.refreshFreeSpace()
        let a: [UInt8] = Array(0..<100)
        let b: [UInt8] = Array(100..<250)
        pair.producer.copyIn(a, count: a.count)
        pair.producer.copyIn(b, count: b.count, skipping: a.count)
        pair.producer.publish(250)
        XCTAssertEqual(try pair.consumer.refreshAvailable(), 250)
        var out = [UInt8](repeating: 0, count: 250)
        out.withUnsafeMutableBytes { pair.consumer.copyOut($0.baseAddress!, count: 250) }
        XCTAssertEqual(out, a + b)
        XCTAssertEqual(pair.consumer.contiguousAvailable.count, 96, "non-mirrored view stops at the end of the data")
    }

    func testPeerHeaderValidation() throws {
        let pair = Pair(capacity: 4096)
        XCTAssertNoThrow(try PeerHeader(base: pair.regionA).validate(expectedCapacity: 4096))
        XCTAssertThrowsError(try PeerHeader(base: pair.regionA).validate(expectedCapacity: 8192)) {
            XCTAssertEqual($0 as? RingViolation, .capacityMismatch(4096))
        }
        pair.regionA.storeBytes(of: 0x1234, toByteOffset: 0, as: UInt64.self)
        XCTAssertThrowsError(try PeerHeader(base: pair.regionA).validate(expectedCapacity: 4096)) {
            XCTAssertEqual($0 as? RingViolation, .badMagic(0x1234))
        }
    }
}
