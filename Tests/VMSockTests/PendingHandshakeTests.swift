import Foundation
@_spi(Testing) import VMSock
import XCTest

/// The listener never waits for one connector's hello: silent connectors wait aside, bounded in number and time.
final class PendingHandshakeTests: XCTestCase {
    /// A connector that never sends its hello does not hold up a good one that comes after it.
    func testSilentConnectorDoesNotDelayTheNextOne() throws {
        var options = VMSocketOptions()
        options.handshakeTimeout = .seconds(20)
        let listener = try VMListener(address: .port(freePortText()), options: options)
        let endpoint = IPEndpoint(numericHost: "127.0.0.1", port: listener.localAddress.port)!
        let silent = try RawControl.connect(endpoint)
        defer { close(silent) }
        let accepted = Background { try listener.accept() }
        Thread.sleep(forTimeInterval: 0.1)  // let accept take the silent one in first
        let start = Date()
        let client = try VMSocket.connect(to: listener.address)
        let server = try XCTUnwrap(accepted.wait(timeout: 10), "accept is stuck behind the silent connector").get()
        XCTAssertLessThan(Date().timeIntervalSince(start), 5, "accept waited for the silent connector")
        try client.writeAll([42])
        XCTAssertEqual(try server.readExactly(1), [42])
        XCTAssertEqual(listener.rejectedCount, 0, "the silent connector still has time")
    }

    /// A silent connector is dropped (and counted) when its time runs out, waking a blocked accept to do it.
    func testSilentConnectorIsDroppedAtTheDeadline() throws {
        var options = VMSocketOptions()
        options.handshakeTimeout = .milliseconds(200)
        let listener = try VMListener(address: .port(freePortText()), options: options)
        let endpoint = IPEndpoint(numericHost: "127.0.0.1", port: listener.localAddress.port)!
        let silent = try RawControl.connect(endpoint)
        defer { close(silent) }
        let accepted = Background { try listener.accept() }
        // The listener hangs up on it: we read end of stream, not a timeout.
        let reply = try RawControl.receive(silent, timeoutMs: 10_000)
        XCTAssertEqual(reply.bytes, [])
        XCTAssertEqual(listener.rejectedCount, 1)
        XCTAssertTrue(listener.lastRejectionReason?.contains("no hello") ?? false, "\(listener.lastRejectionReason ?? "")")
        listener.close()
        XCTAssertErrno(EBADF, try accepted.wait(timeout: 10)?.get())
    }

    /// Beyond the limit, connectors are turned away at once (with a reject saying out of resources), and a
    /// non-blocking accept says EAGAIN without waiting for any of them. Nothing leaks.
    func testPendingHandshakesBeyondTheLimitAreRejected() throws {
        VMSocket.closeIdleLinks()  // what earlier tests left for later connections is not this test's
        let fdsBefore = settledDescriptorCount()
        var options = VMSocketOptions()
        options.handshakeTimeout = .seconds(20)
        let listener = try VMListener(address: .port(freePortText()), options: options, backlog: 256)
        listener.isNonBlocking = true
        let endpoint = IPEndpoint(numericHost: "127.0.0.1", port: listener.localAddress.port)!
        let extra = 5
        var silent: [Int32] = []
        defer { silent.forEach { close($0) } }
        for _ in 0..<(64 + extra) { silent.append(try RawControl.connect(endpoint)) }
        let start = Date()
        XCTAssertErrno(EAGAIN, try listener.accept())
        XCTAssertErrno(EAGAIN, try listener.accept())
        XCTAssertLessThan(Date().timeIntervalSince(start), 5)
        XCTAssertEqual(listener.rejectedCount, extra)
        XCTAssertTrue(
            listener.lastRejectionReason?.contains("handshakes already pending") ?? false, "\(listener.lastRejectionReason ?? "")")
        let reply = try RawControl.receive(silent.last!, timeoutMs: 5000)
        reply.descriptors.forEach { close($0) }
        let message = try reply.bytes.withUnsafeBytes { try HandshakeMessage.decode($0) }
        XCTAssertEqual(message.kind, .reject)
        XCTAssertEqual(message.rejectReason, HandshakeMessage.RejectReason.outOfResources.rawValue)
        listener.close()
        silent.forEach { close($0) }
        silent = []
        XCTAssertEqual(openDescriptorCount(), fdsBefore, "descriptors leaked")
    }
}
