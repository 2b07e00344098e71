import Foundation
import XCTest

/// The heavy runs, kept in the suite CI runs but in a folder of their own (`Heavy/`): gigabytes between two
/// processes here, a thousand connections on one loop (`LoopScaleTests`), random pauses for lost wake-ups
/// (`LoopStressTests`).
final class GigabyteTransferTests: XCTestCase {
    /// 1 GiB of pseudo-random bytes each way at the same time, in random chunks of 1 B to 1 MiB, every byte checked
    /// at its offset by the receiver (so loss, duplication and reordering all show), between two processes.
    func testGigabyteEachWayWithOneMegabyteRing() throws {
        try streamBetweenProcesses(bytes: 1 << 30, ring: 1 << 20)
    }

    func testGigabyteEachWayWithFourKilobyteRing() throws {
        try streamBetweenProcesses(bytes: 1 << 30, ring: 4 << 10)
    }

    private func streamBetweenProcesses(bytes: Int, ring: Int) throws {
        let port = freePortText()
        let seed = String(UInt32.random(in: 1...UInt32.max))
        let listener = try TestPeer("stream-listen", port, String(bytes), String(ring), seed)
        listener.expectLine("ready")
        let connector = try TestPeer("stream-connect", port, String(bytes), String(ring), seed)
        XCTAssertEqual(connector.wait(), 0, "connector: \(connector.errorOutput())")
        XCTAssertEqual(listener.wait(), 0, "listener: \(listener.errorOutput())")
    }
}
