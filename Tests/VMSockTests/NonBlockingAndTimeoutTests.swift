import Foundation
import VMSock
import XCTest

final class NonBlockingAndTimeoutTests: XCTestCase {
    func testNonBlockingReadIsEAGAINExactlyWhenEmpty() throws {
        let (server, client) = try connectedPair()
        server.isNonBlocking = true
        XCTAssertErrno(EAGAIN, try server.read(upTo: 10))
        try client.writeAll([1, 2])
        XCTAssertEqual(try server.read(upTo: 10), [1, 2])
        XCTAssertErrno(EAGAIN, try server.read(upTo: 10))
        client.close()
        XCTAssertEqual(try server.read(upTo: 10), [], "end of stream, not EAGAIN, once the peer closed")
    }

    func testNonBlockingWriteIsPartialThenEAGAIN() throws {
        let (server, client) = try connectedPair(options: VMSocketOptions(ringSize: 4096))
        client.isNonBlocking = true
        let big = [UInt8](repeating: 7, count: 5000)
        XCTAssertEqual(try big.withUnsafeBytes { try client.write($0) }, 4096, "a full ring takes what fits")
        XCTAssertErrno(EAGAIN, try big.withUnsafeBytes { try client.write($0) })
        XCTAssertEqual(try server.readExactly(100).count, 100)
        XCTAssertEqual(try big.withUnsafeBytes { try client.write($0) }, 100)
    }

    func testReadTimeoutFires() throws {
        let (server, client) = try connectedPair()
        defer { withExtendedLifetime(client) {} }
        server.readTimeout = .milliseconds(200)
        XCTAssertEqual(server.readTimeout, .milliseconds(200))
        let start = Date()
        XCTAssertErrno(ETIMEDOUT, try server.read(upTo: 10))
        let waited = Date().timeIntervalSince(start)
        XCTAssertGreaterThanOrEqual(waited, 0.19)
        XCTAssertLessThan(waited, 2.0)
    }

    func testWriteTimeoutFiresOnAFullRing() throws {
        let (server, client) = try connectedPair(options: VMSocketOptions(ringSize: 4096))
        defer { withExtendedLifetime(server) {} }
        client.writeTimeout = .milliseconds(200)
        try client.writeAll([UInt8](repeating: 0, count: 4096))
        XCTAssertErrno(ETIMEDOUT, try client.writeAll([1]))
    }

    func testPollDescriptorFiresWhenDataArrivesAfterArming() throws {
        let (server, client) = try connectedPair()
        server.isNonBlocking = true
        XCTAssertFalse(try server.armReadable(), "nothing to read yet")
        var pfd = pollfd(fd: server.pollDescriptor, events: Int16(POLLIN), revents: 0)
        XCTAssertEqual(poll(&pfd, 1, 50), 0, "armed and idle: the descriptor stays quiet")
        let writer = Background {
            usleep(100_000)
            try client.writeAll([9, 9, 9])
        }
        XCTAssertEqual(poll(&pfd, 1, 5000), 1, "the peer's write must ring the armed descriptor")
        XCTAssertEqual(try server.read(upTo: 10), [9, 9, 9])
        XCTAssertNoThrow(try writer.wait()?.get())
        XCTAssertErrno(EAGAIN, try server.read(upTo: 10))
        // Arming when data is already there says so, instead of leaving the caller to poll.
        try client.writeAll([1])
        XCTAssertTrue(try server.armReadable())
        XCTAssertEqual(try server.read(upTo: 10), [1])
    }

    /// A ring left over from before arming (the peer rang, we read without sleeping) must not wake the poller.
    func testArmingClearsStaleRings() throws {
        let (server, client) = try connectedPair()
        server.isNonBlocking = true
        XCTAssertFalse(try server.armReadable())
        try client.writeAll([1])  // rings: the server said it sleeps
        XCTAssertEqual(try server.read(upTo: 10), [1])  // read without polling; the ring stays in the bell
        XCTAssertFalse(try server.armReadable())
        var pfd = pollfd(fd: server.pollDescriptor, events: Int16(POLLIN), revents: 0)
        XCTAssertEqual(poll(&pfd, 1, 100), 0, "armed with nothing new: the descriptor must stay quiet")
    }

    /// The peer only half-closed: our full-ring write must sleep and time out, not spin.
    func testWriteTimeoutAfterPeerHalfClose() throws {
        let (server, client) = try connectedPair(options: VMSocketOptions(ringSize: 4096))
        try client.shutdown(.write)
        server.writeTimeout = .milliseconds(300)
        let start = Date()
        XCTAssertErrno(ETIMEDOUT, try server.writeAll([UInt8](repeating: 0, count: 8192)))
        XCTAssertLessThan(Date().timeIntervalSince(start), 2.0)
    }

    /// A listener that never accepts cannot keep connect blocked past the handshake timeout, backlog full or not.
    func testConnectToAListenerThatNeverAcceptsTimesOut() throws {
        let port = freePortText()
        let listener = try VMListener(address: .port(port), backlog: 1)
        var options = VMSocketOptions()
        options.handshakeTimeout = .milliseconds(300)
        for attempt in 0..<4 {
            let start = Date()
            XCTAssertErrno(ETIMEDOUT, try VMSocket.connect(to: .port(port), options: options), "attempt \(attempt)")
            XCTAssertLessThan(Date().timeIntervalSince(start), 3.0, "attempt \(attempt)")
        }
        withExtendedLifetime(listener) {}
    }

    func testPollDescriptorFiresWhenThePeerCloses() throws {
        let (server, client) = try connectedPair()
        server.isNonBlocking = true
        XCTAssertFalse(try server.armReadable())
        client.close()
        var pfd = pollfd(fd: server.pollDescriptor, events: Int16(POLLIN), revents: 0)
        XCTAssertEqual(poll(&pfd, 1, 5000), 1)
        XCTAssertEqual(try server.read(upTo: 10), [])
    }

    func testNonBlockingAcceptIsEAGAINWithoutAConnector() throws {
        let listener = try VMListener(address: .port(freePortText()))
        listener.isNonBlocking = true
        XCTAssertErrno(EAGAIN, try listener.accept())
        let client = Background { [port = listener.localAddress.port] in try VMSocket.connect(to: .port(String(port))) }
        // The descriptor fires when the connector arrives and again when its hello does: accept says EAGAIN in
        // between (it never waits for a hello), and the usual poll-then-accept loop takes the connection.
        var accepted: Result<VMSocket, VMSockError> = .failure(VMSockError(code: EAGAIN, ""))
        for _ in 0..<10 {
            var pfd = pollfd(fd: listener.pollDescriptor, events: Int16(POLLIN), revents: 0)
            XCTAssertEqual(poll(&pfd, 1, 5000), 1)
            accepted = Result { () throws(VMSockError) in try listener.accept() }
            if case .failure(let error) = accepted, error.code == EAGAIN { continue }
            break
        }
        XCTAssertNoThrow(try accepted.get())
        XCTAssertNoThrow(try client.wait()?.get())
    }
}
