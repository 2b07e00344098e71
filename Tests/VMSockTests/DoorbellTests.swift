import Glibc
import VMSock
import XCTest

/// The need-wakeup handshake rings once per announcement: a sleeper that is slow to wake does not cost its peer a
/// system call per publish (or per consume), and a new announcement still gets its own ring.
final class DoorbellTests: XCTestCase {
    func testAWaitingReaderIsRungOncePerAnnouncement() throws {
        let (server, client) = try connectedPair()
        server.isNonBlocking = true
        XCTAssertFalse(try server.armReadable(), "nothing to read yet: the reader announces that it waits")
        for _ in 0..<1000 { try client.writeAll([7]) }
        XCTAssertEqual(client.waitStatistics?.dataRings, 1, "one ring for the announcement, not one per write")
        XCTAssertTrue(pollsReadable(server.pollDescriptor), "the one ring wakes the poller")
        XCTAssertEqual(try server.readExactly(1000).count, 1000)

        XCTAssertFalse(try server.armReadable(), "drained: a new announcement")
        try client.writeAll([8])
        XCTAssertEqual(client.waitStatistics?.dataRings, 2, "a new announcement gets its own ring")
        XCTAssertTrue(pollsReadable(server.pollDescriptor))
        XCTAssertEqual(try server.readExactly(1), [8])
        XCTAssertEqual(server.waitStatistics?.readSleeps, 2, "each arming that leaves the caller to poll counts as a sleep")
    }

    func testAWaitingWriterIsRungOncePerAnnouncement() throws {
        var options = VMSocketOptions()
        options.ringSize = 4096
        let (server, client) = try connectedPair(options: options)
        client.isNonBlocking = true
        let fill = [UInt8](repeating: 1, count: 4096)
        var written = 0
        while true {
            do { written += try fill.withUnsafeBytes { try client.write($0) } } catch let error as VMSockError where error.code == EAGAIN { break }
        }
        XCTAssertEqual(written, client.ringSize, "a non-blocking writer fills the ring, then gets EAGAIN")
        XCTAssertFalse(try client.armWritable(), "full: the writer announces that it waits for space")
        for _ in 0..<100 { XCTAssertEqual(try server.readExactly(1).count, 1) }
        XCTAssertEqual(server.waitStatistics?.spaceRings, 1, "one ring for the announcement, not one per read")
        XCTAssertTrue(pollsReadable(client.writeInterest.descriptor), "the one ring wakes the poller")
    }

    private func pollsReadable(_ descriptor: Int32) -> Bool {
        var pfd = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
        return poll(&pfd, 1, 2000) == 1
    }
}
