import Glibc
import VMSock
import XCTest

/// `VMSocket.waitStatistics` counts what the need-wakeup handshake costs: sleeps (arming a poller that then polls
/// counts as one) and doorbell rings, on the side that paid for each; TCP has none to count.
final class WaitStatisticsTests: XCTestCase {
    func testSleepsAndRingsAreCountedWhereTheyHappen() throws {
        let (server, client) = try connectedPair()
        server.isNonBlocking = true
        XCTAssertEqual(server.waitStatistics, WaitStatistics(), "a new connection has slept and rung nothing")
        XCTAssertFalse(try server.armReadable(), "nothing to read yet: the reader announces that it waits")
        try client.writeAll([7])
        XCTAssertTrue(pollsReadable(server.pollDescriptor), "the ring wakes the poller")
        XCTAssertEqual(try server.readExactly(1), [7])
        XCTAssertEqual(client.waitStatistics?.dataRings, 1, "the writer rang the waiting reader once")
        XCTAssertEqual(server.waitStatistics?.readSleeps, 1, "the reader's arming counts as a sleep")
        try client.writeAll([8])
        XCTAssertEqual(client.waitStatistics?.dataRings, 1, "the read withdrew the announcement: no more rings")
        XCTAssertEqual(client.waitStatistics?.writeSleeps, 0)
        XCTAssertEqual(client.waitStatistics?.spaceRings, 0)
    }

    func testAWriterThatSleepsIsCountedAndRung() throws {
        var options = VMSocketOptions()
        options.ringSize = 4096
        let (server, client) = try connectedPair(options: options)
        client.spinMicroseconds = 0  // every wait sleeps
        let reader = Background { () throws -> Int in
            usleep(50_000)  // let the writer fill the ring and sleep
            return try server.readExactly(3 * 4096).count
        }
        try client.writeAll([UInt8](repeating: 1, count: 3 * 4096))
        XCTAssertEqual(try reader.wait(timeout: 10)?.get(), 3 * 4096)
        XCTAssertGreaterThanOrEqual(client.waitStatistics?.writeSleeps ?? 0, 1, "a full ring put the writer to sleep")
        XCTAssertGreaterThanOrEqual(server.waitStatistics?.spaceRings ?? 0, 1, "the reader rang it awake")
    }

    func testTCPHasNoWaitStatistics() throws {
        let (server, client) = try connectedPair(options: VMSocketOptions(transport: .tcp))
        XCTAssertNil(server.waitStatistics)
        XCTAssertNil(client.waitStatistics)
    }

    private func pollsReadable(_ descriptor: Int32) -> Bool {
        var pfd = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
        return poll(&pfd, 1, 2000) == 1
    }
}
