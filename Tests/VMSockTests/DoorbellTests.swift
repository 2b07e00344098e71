import Glibc
@_spi(Testing) import VMSock
import XCTest

/// The need-wakeup handshake rings once per announcement: a sleeper that is slow to wake does not cost its peer a
/// system call per publish (or per consume), and a new announcement still gets its own ring, on a reopened link
/// too. The order that makes one ring enough is `PollerArmingTests`'.
final class DoorbellTests: XCTestCase {
    override func setUp() {
        super.setUp()
        VMSocket.closeIdleLinks()
    }

    override func tearDown() {
        VMSocket.closeIdleLinks()
        super.tearDown()
    }

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
        let (server, client) = try connectedPair(options: VMSocketOptions(ringSize: 4096))
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

    /// A reopened link starts both sides' waiting words and the wakers' memories from zero, so the first
    /// announcement of the new connection (the same value as the old one's first) is rung for.
    func testAReopenedLinkRingsItsFirstAnnouncement() throws {
        let listener = try VMListener(address: .port(freePortText()), options: VMSocketOptions(ringSize: 4096))
        defer { listener.close() }
        let before = TransportStatistics.current.sharedMemoryReused
        for round in 0..<3 {
            try armedExchange(listener, round: round)
            XCTAssertTrue(eventually { VMSocket.idleLinkCount > 0 && listener.parkedLinkCount > 0 }, "not parked")
        }
        XCTAssertEqual(TransportStatistics.current.sharedMemoryReused - before, 4, "rounds 1 and 2 reopened the link")
    }

    private func armedExchange(_ listener: VMListener, round: Int) throws {
        let accepting = Background { try listener.accept() }
        let client = try VMSocket.connect(to: listener.address, options: VMSocketOptions(ringSize: 4096))
        let server = try XCTUnwrap(accepting.wait(timeout: 10)).get()
        server.isNonBlocking = true
        XCTAssertFalse(try server.armReadable(), "round \(round): nothing to read yet")
        try client.writeAll([UInt8(round)])
        XCTAssertEqual(client.waitStatistics?.dataRings, 1, "round \(round): the new announcement is rung for")
        XCTAssertTrue(pollsReadable(server.pollDescriptor), "round \(round): the ring wakes the poller")
        XCTAssertEqual(try server.readExactly(1), [UInt8(round)])
        client.close()
        server.close()
    }

    private func pollsReadable(_ descriptor: Int32) -> Bool {
        var pfd = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
        return poll(&pfd, 1, 2000) == 1
    }
}
