import CVMSock
import Glibc
import XCTest

@testable import VMSock

/// `EventRinger`: a ring of a region peer's eventfd never blocks its caller, even when a hostile peer wins the race
/// between our poll for room and our write (simulated here by a plain blocking write on an eventfd whose counter is
/// full and whose O_NONBLOCK is cleared); the dispatcher's rescue frees the stuck write, and the rings queued behind
/// it go out.
final class EventRingerTests: XCTestCase {
    func testAStuckRingBlocksNoCallerAndIsRescued() throws {
        let victim = try Sys.eventFD(flags: Int32(EFD_CLOEXEC))  // blocking, as a hostile peer would leave it
        var full = UInt64.max - 1
        XCTAssertEqual(write(victim.raw, &full, 8), 8, "the counter is full: a blocking write of 1 now waits")
        let other = try Sys.eventFD(flags: Int32(EFD_CLOEXEC) | Int32(EFD_NONBLOCK))
        let ringer = try EventRinger.start { fd in
            var one: UInt64 = 1
            _ = write(fd, &one, 8)  // what the race leaves: a write on a full, blocking counter
        }
        defer { ringer.stop() }
        let stuck = PeerBell.regionPeer(try Sys.duplicate(victim.raw), ringer: ringer)
        let behind = PeerBell.regionPeer(try Sys.duplicate(other.raw), ringer: ringer)

        stuck.ring()  // returns at once: the thread writes
        behind.ring()
        var delivered: Int64 = 0
        for _ in 0..<500 where delivered == 0 {
            usleep(10_000)
            ringer.rescueIfStuck()  // what the node's dispatcher does at every pass
            delivered = vms_eventfd_read_nowait(other.raw)
        }
        XCTAssertEqual(delivered, 1, "the ring queued behind the stuck one went out")
        XCTAssertGreaterThanOrEqual(ringer.rescues, 1)
        XCTAssertEqual(vms_eventfd_read_nowait(victim.raw), 1, "the rescued write finished after the count was read away")
    }

    /// The real ring (`vms_eventfd_ring_shared`) on a counter a peer filled and made blocking: dropped, not waited
    /// on; and O_NONBLOCK is put back.
    func testARingOfAFullCounterIsDropped() throws {
        let victim = try Sys.eventFD(flags: Int32(EFD_CLOEXEC))
        var full = UInt64.max - 1
        XCTAssertEqual(write(victim.raw, &full, 8), 8)
        let ringer = try EventRinger.start()
        defer { ringer.stop() }
        let bell = PeerBell.regionPeer(try Sys.duplicate(victim.raw), ringer: ringer)
        for _ in 0..<3 { bell.ring() }
        var nonBlocking = false
        for _ in 0..<500 where !nonBlocking {
            usleep(10_000)
            nonBlocking = fcntl(victim.raw, F_GETFL) & O_NONBLOCK != 0
        }
        XCTAssertTrue(nonBlocking, "the ringer put O_NONBLOCK back")
        XCTAssertEqual(ringer.rescues, 0, "nothing was stuck")
        XCTAssertEqual(vms_eventfd_read_nowait(victim.raw), Int64.max - 1, "the full count (its low 63 bits), nothing added")
    }
}
