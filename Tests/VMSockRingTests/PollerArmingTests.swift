import CVMSock
import VMSockRing
import XCTest

/// The need-wakeup handshake of a poller, replayed step by step on real ring words (two regions, a producer, a
/// consumer, the reader's `WaitWord`, the writer's `RingMemo`) with a bell that counts rings. The interleaving is
/// the one LoopStressTests hung on with ring-once doorbells (a trace of both sides, see `PollerArming`): the
/// writer publishes; before it reads the reader's waiting word, the reader sees that publish, consumes it and
/// arms again; the writer's read then finds the new announcement and rings for it.
final class PollerArmingTests: XCTestCase {
    /// The arming order `PollerArming.arm` replaced (announce, re-check, drain, re-check; commit 9fd1b8a):
    /// it drains the ring sent for its own announcement.
    static func armDrainingAfterAnnouncing(
        drain: () -> Void, announce: () -> Void, isReady: () -> Bool
    ) -> Bool {
        announce()
        if isReady() { return true }
        drain()
        return isReady()
    }

    /// With the order that drains after announcing, the ring for the announcement is swallowed, the writer rings
    /// no more for it, and the poller sleeps on a ring that holds bytes: the hang.
    func testDrainingAfterAnnouncingLosesTheOneRing() {
        let side = Sides()
        side.replay(ringOnce: true, arm: Self.armDrainingAfterAnnouncing)
        XCTAssertGreaterThan(side.readable, 0, "bytes wait in the ring")
        XCTAssertEqual(side.bell, 0, "and nothing rings the poller awake: the lost wake-up")
    }

    /// With flags rung at every publish, the same order loses nothing: the next publish rings again. That is why
    /// the order only showed once ring-once doorbells came.
    func testDrainingAfterAnnouncingWasHarmlessWithAFlag() {
        let side = Sides()
        side.replay(ringOnce: false, arm: Self.armDrainingAfterAnnouncing)
        XCTAssertGreaterThan(side.readable, 0)
        XCTAssertEqual(side.bell, 1, "the next publish rang")
    }

    /// `PollerArming.arm` drains first: the ring for the new announcement stays in the bell and wakes the poll.
    func testDrainingBeforeAnnouncingKeepsTheRing() {
        let side = Sides()
        side.replay(ringOnce: true) { drain, announce, isReady in
            PollerArming.arm(drain: drain, announce: announce, isReady: isReady)
        }
        XCTAssertGreaterThan(side.readable, 0)
        XCTAssertEqual(side.bell, 1, "the poll fires")
    }

    /// Each announcement is a value the word never held before, odd while it stands; the memo rings once for it.
    func testEachAnnouncementIsNewAndRungForOnce() {
        var word = WaitWord()
        var memo = RingMemo()
        var seen: Set<UInt64> = [0]
        for round in 0..<100 {
            let announced = word.announce()
            XCTAssertEqual(announced & 1, 1)
            XCTAssertTrue(seen.insert(announced).inserted, "round \(round): \(announced) came back")
            if round % 3 == 0 { XCTAssertTrue(seen.insert(word.announce()).inserted, "announcing again moves on") }
            XCTAssertTrue(memo.wantsRing(word.value))
            memo.rang(for: word.value)
            XCTAssertFalse(memo.wantsRing(word.value), "once per announcement")
            let withdrawn = word.withdraw()
            XCTAssertEqual(withdrawn.map { $0 & 1 }, 0)
            XCTAssertFalse(memo.wantsRing(word.value), "nobody waits")
            XCTAssertNil(word.withdraw(), "nothing more to withdraw")
        }
    }
}

/// A writer and a reader over two heap regions, and the reader's data bell as a count of rings.
private final class Sides {
    static let capacity = 4096
    let writerRegion: UnsafeMutableRawPointer
    let readerRegion: UnsafeMutableRawPointer
    var producer: RingProducer
    var consumer: RingConsumer
    var readerWait = WaitWord()
    var writerMemo = RingMemo()
    /// Rings in the reader's bell: the poll fires while it is above zero.
    var bell = 0
    private let scratch = UnsafeMutableRawPointer.allocate(byteCount: 100, alignment: 8)

    init() {
        let size = RingLayout.regionSize(capacity: Self.capacity)
        writerRegion = .allocate(byteCount: size, alignment: 4096)
        readerRegion = .allocate(byteCount: size, alignment: 4096)
        LocalHeader(base: writerRegion).initialize(capacity: Self.capacity)
        LocalHeader(base: readerRegion).initialize(capacity: Self.capacity)
        producer = RingProducer(
            data: writerRegion + RingLayout.headerSize, capacity: Self.capacity, mirrored: false,
            local: LocalHeader(base: writerRegion), peer: PeerHeader(base: readerRegion))
        consumer = RingConsumer(
            data: writerRegion + RingLayout.headerSize, capacity: Self.capacity, mirrored: false,
            local: LocalHeader(base: readerRegion), peer: PeerHeader(base: writerRegion))
    }

    deinit {
        writerRegion.deallocate()
        readerRegion.deallocate()
        scratch.deallocate()
    }

    /// Bytes the reader would find now.
    var readable: Int { (try? consumer.refreshAvailable()) ?? -1 }

    // The writer's two steps, which the reader may run between.
    func publish() {
        producer.copyIn(scratch, count: 100)
        producer.publish(100)
    }

    func lookAndRing(ringOnce: Bool) {
        let word = PeerHeader(base: readerRegion).waitingForData
        if ringOnce {
            guard writerMemo.wantsRing(word) else { return }
            writerMemo.rang(for: word)
        } else {
            guard word & 1 != 0 else { return }
        }
        bell += 1
    }

    // The reader's steps.
    func readAll() {
        let n = (try? consumer.refreshAvailable()) ?? 0
        consumer.consume(n)
        if let withdrawn = readerWait.withdraw() { LocalHeader(base: readerRegion).setWaitingForData(withdrawn) }
    }

    func announce() { LocalHeader(base: readerRegion).setWaitingForData(readerWait.announce()) }

    /// The interleaving of the hang, with `arm` as the reader's arming order.
    func replay(
        ringOnce: Bool, arm: (_ drain: () -> Void, _ announce: () -> Void, _ isReady: () -> Bool) -> Bool
    ) {
        let isReady = { [self] in readable > 0 }
        // The reader arms and polls; a publish rings it awake; it reads all, which withdraws. The ring stays in
        // the bell (only arming drains).
        let first = arm({ self.bell = 0 }, announce, isReady)
        XCTAssertFalse(first)
        publish()
        lookAndRing(ringOnce: ringOnce)
        XCTAssertEqual(bell, 1)
        readAll()
        // The writer publishes; the reader, still in its read handler, sees those bytes too and reads them...
        publish()
        readAll()
        // ...then arms again. Right after its announcement, the writer reads the word (its second step, for the
        // publish the reader already read) and rings for the new announcement.
        let ready = arm({ self.bell = 0 }, { self.announce(); self.lookAndRing(ringOnce: ringOnce) }, isReady)
        XCTAssertFalse(ready, "nothing new to read: the reader polls")
        // New bytes: the writer publishes and reads the word, which has not changed.
        publish()
        lookAndRing(ringOnce: ringOnce)
    }
}
