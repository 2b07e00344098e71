import VMSockRing
import XCTest

/// The windows a peer's positions must stay in, including across the 2^64 wrap.
final class RingCheckTests: XCTestCase {
    func testConsumerPositionWindow() throws {
        // We produced 1000; last accepted peer consumption 200. Anything in [200, 1000] is fine.
        for seen: UInt64 in [200, 201, 999, 1000] {
            XCTAssertNoThrow(try RingProducer.check(peerConsumed: seen, lastSeen: 200, produced: 1000))
        }
        for seen: UInt64 in [199, 0, 1001, .max] {
            XCTAssertThrowsError(try RingProducer.check(peerConsumed: seen, lastSeen: 200, produced: 1000)) {
                XCTAssertEqual($0 as? RingViolation, .consumerOutOfRange(seen: seen, lastSeen: 200, limit: 1000))
            }
        }
    }

    func testProducerPositionWindow() throws {
        // We consumed 1000 of a 4096-byte ring; last accepted peer production 1500: [1500, 5096] is fine.
        for seen: UInt64 in [1500, 1501, 5095, 5096] {
            XCTAssertNoThrow(try RingConsumer.check(peerProduced: seen, lastSeen: 1500, consumed: 1000, capacity: 4096))
        }
        for seen: UInt64 in [1499, 1000, 5097, .max] {
            XCTAssertThrowsError(try RingConsumer.check(peerProduced: seen, lastSeen: 1500, consumed: 1000, capacity: 4096))
        }
    }

    func testWindowsHoldAcrossTheWrap() throws {
        let near = UInt64.max - 10
        XCTAssertNoThrow(try RingConsumer.check(peerProduced: near &+ 100, lastSeen: near, consumed: near, capacity: 4096))
        XCTAssertThrowsError(try RingConsumer.check(peerProduced: near &- 1, lastSeen: near, consumed: near, capacity: 4096))
        XCTAssertNoThrow(try RingProducer.check(peerConsumed: near &+ 20, lastSeen: near, produced: near &+ 50))
        XCTAssertThrowsError(try RingProducer.check(peerConsumed: near &+ 51, lastSeen: near, produced: near &+ 50))
    }

    func testCapacityRules() {
        XCTAssertTrue(RingLayout.isValid(capacity: 4096))
        XCTAssertTrue(RingLayout.isValid(capacity: 64 << 20))
        XCTAssertFalse(RingLayout.isValid(capacity: 2048))
        XCTAssertFalse(RingLayout.isValid(capacity: 128 << 20))
        XCTAssertFalse(RingLayout.isValid(capacity: 12288))
        XCTAssertFalse(RingLayout.isValid(capacity: 0))
        XCTAssertFalse(RingLayout.isValid(capacity: -4096))
    }
}
