import CVMSock
import Foundation
@_spi(Testing) import VMSock
import XCTest

/// The connect handshake: its encoding, and what happens when either side gets it wrong.
final class HandshakeTests: XCTestCase {
    func testMessageRoundTrip() throws {
        let hello = HandshakeMessage(kind: .hello, ringCapacity: 1 << 20)
        let bytes = hello.encoded()
        XCTAssertEqual(bytes.count, HandshakeMessage.size)
        XCTAssertEqual(Array(bytes.prefix(4)), Array("VMSH".utf8))
        XCTAssertEqual(try bytes.withUnsafeBytes { try HandshakeMessage.decode($0) }, hello)
    }

    /// The connector's own address and port travel with the dialed address, in its family; without a dialed
    /// address, any source byte is malformed.
    func testSourceAddressRoundTrip() throws {
        let dialed = try XCTUnwrap(IPEndpoint(numericHost: "127.0.0.1", port: 7000))
        for source in [try XCTUnwrap(IPEndpoint(numericHost: "127.0.0.2", port: 40000)), dialed.with(port: 0)] {
            let hello = HandshakeMessage(kind: .hello, ringCapacity: 4096, dialed: dialed, source: source)
            XCTAssertEqual(try hello.encoded().withUnsafeBytes { try HandshakeMessage.decode($0) }.source, source)
        }
        let v6 = try XCTUnwrap(IPEndpoint(numericHost: "::1", port: 7000))
        let hello6 = HandshakeMessage(kind: .reopen, ringCapacity: 4096, dialed: v6, source: v6.with(port: 40001))
        XCTAssertEqual(try hello6.encoded().withUnsafeBytes { try HandshakeMessage.decode($0) }, hello6)
        // A source of the other family is not sent; all zero decodes as none.
        let mixed = HandshakeMessage(kind: .hello, dialed: v6, source: dialed)
        XCTAssertNil(try mixed.encoded().withUnsafeBytes { try HandshakeMessage.decode($0) }.source)
        var bytes = HandshakeMessage(kind: .welcome, ringCapacity: 4096).encoded()
        bytes[50] = 1
        XCTAssertThrowsError(try bytes.withUnsafeBytes { try HandshakeMessage.decode($0) }) {
            XCTAssertEqual($0 as? HandshakeMessage.DecodeError, .nonZeroReserved)
        }
    }

    func testMalformedMessagesAreRefused() {
        var bytes = HandshakeMessage(kind: .welcome, ringCapacity: 4096).encoded()
        XCTAssertThrowsError(try bytes.prefix(31).withUnsafeBytes { try HandshakeMessage.decode($0) }) {
            XCTAssertEqual($0 as? HandshakeMessage.DecodeError, .wrongSize(31))
        }
        bytes[6] = 9
        XCTAssertThrowsError(try bytes.withUnsafeBytes { try HandshakeMessage.decode($0) }) {
            XCTAssertEqual($0 as? HandshakeMessage.DecodeError, .unknownKind(9))
        }
        bytes[6] = 1
        bytes[20] = 1
        XCTAssertThrowsError(try bytes.withUnsafeBytes { try HandshakeMessage.decode($0) }) {
            XCTAssertEqual($0 as? HandshakeMessage.DecodeError, .nonZeroReserved)
        }
        bytes[0] = 0
        XCTAssertThrowsError(try bytes.withUnsafeBytes { try HandshakeMessage.decode($0) })
    }

    /// A hostile connector sends a bad hello. The listener answers with a reject (where it can), counts it, leaks
    /// nothing, and goes on serving good connectors.
    func testListenerSurvivesMalformedHellos() throws {
        let port = freePortText()
        var options = VMSocketOptions()
        options.handshakeTimeout = .milliseconds(500)
        let listener = try VMListener(address: .port(port), options: options)
        let hello = HandshakeMessage(kind: .hello, ringCapacity: 4096).encoded()
        let good = Self.good, unsealed = Self.unsealed, pipeBell = Self.pipeBell
        let cases: [(String, [UInt8], () throws -> [Int32], HandshakeMessage.RejectReason?)] = [
            ("garbage", [UInt8](repeating: 0xEE, count: 32), good, .badRequest),
            ("short", Array(hello.prefix(5)), good, .badRequest),
            ("oversized", hello + hello, good, .badRequest),
            ("no descriptors", hello, { [] }, .badRequest),
            ("extra descriptors", hello, { try good() + [RawControl.makeBell()] }, .badRequest),
            ("unsealed memfd", hello, unsealed, .badRequest),
            ("pipe as doorbell", hello, pipeBell, .badRequest),
            ("eventfd as doorbell", hello, { [try RawControl.makeRegion(capacity: 4096), RawControl.makeEventFD(), RawControl.makeBell()] }, .badRequest),
            ("bad ring size", HandshakeMessage(kind: .hello, ringCapacity: 5000).encoded(), good, .badRequest),
            ("wrong size memfd", HandshakeMessage(kind: .hello, ringCapacity: 8192).encoded(), good, .badRequest),
            ("welcome instead of hello", HandshakeMessage(kind: .welcome, ringCapacity: 4096).encoded(), good, .badRequest),
            ("future version", HandshakeMessage(kind: .hello, ringCapacity: 4096, version: HandshakeMessage.protocolVersion + 1).encoded(), good, .versionMismatch),
            ("silence", [], { [] }, nil),
        ]
        // What earlier tests left (idle links, a thread holding its last socket) goes first, not during the cases.
        VMSocket.closeIdleLinks()
        let fdsBefore = settledDescriptorCount()
        for (index, (label, bytes, descriptors, expected)) in cases.enumerated() {
            let accepted = Background { try listener.accept() }
            let fd = try RawControl.connect(IPEndpoint(numericHost: "127.0.0.1", port: UInt16(port)!)!)
            defer { close(fd) }
            if !bytes.isEmpty {
                let fds = try descriptors()
                try RawControl.send(fd, bytes, descriptors: fds)
                fds.forEach { close($0) }
            }
            let reply = try? RawControl.receive(fd, timeoutMs: 3000)
            reply?.descriptors.forEach { close($0) }
            if let expected {
                let message = try XCTUnwrap(reply, label).bytes.withUnsafeBytes { try HandshakeMessage.decode($0) }
                XCTAssertEqual(message.kind, .reject, label)
                XCTAssertEqual(message.rejectReason, expected.rawValue, label)
            }
            // The listener is still healthy: a good connector gets through the same accept call. (It keeps no
            // link for reuse, so that the descriptor count below is the listener's alone.)
            var goodOptions = VMSocketOptions(ringSize: 4096)
            goodOptions.reusesLinks = false
            let client = try VMSocket.connect(to: .port(port), options: goodOptions)
            let server = try XCTUnwrap(accepted.wait(timeout: 10), label).get()
            try client.writeAll([UInt8(index)])
            XCTAssertEqual(try server.readExactly(1), [UInt8(index)], label)
            XCTAssertEqual(listener.rejectedCount, index + 1, label)
        }
        // The spare half a connector makes from its second new link on is kept by design: freed here, as before.
        VMSocket.closeIdleLinks()
        XCTAssertEqual(settledDescriptorCount(), fdsBefore, "descriptors leaked across malformed handshakes")
    }

    /// A hostile listener answers our hello wrongly: connect fails cleanly and leaks nothing.
    func testConnectorSurvivesBadWelcomes() throws {
        let cases: [(String, Int32)] = [
            ("garbage", EPROTO), ("short", EPROTO), ("no-fds", EPROTO), ("extra-fds", EPROTO),
            ("unsealed-memfd", EPROTO), ("wrong-size", EPROTO), ("pipe-bell", EPROTO), ("wrong-version", EPROTO),
            ("hang-up", ECONNRESET), ("silent", ETIMEDOUT), ("reject", ECONNREFUSED),
        ]
        var options = VMSocketOptions()
        options.handshakeTimeout = .milliseconds(300)
        for (how, expected) in cases {
            let port = freePortText()
            let peer = try TestPeer("bad-welcome", port, how)
            peer.expectLine("ready")
            VMSocket.closeIdleLinks()  // what earlier tests left for later connections is not this test's
            let fdsBefore = settledDescriptorCount()
            let mapsBefore = mappingCount()
            XCTAssertErrno(expected, try VMSocket.connect(to: .port(port), options: options), how)
            VMSocket.closeIdleLinks()  // the spare half a connector makes from its second new link on, by design
            XCTAssertEqual(openDescriptorCount(), fdsBefore, "descriptors leaked after '\(how)'")
            XCTAssertEqual(mappingCount(), mapsBefore, "mappings leaked after '\(how)'")
            peer.killHard()
        }
    }

    func testRejectNamesTheVersion() throws {
        let port = freePortText()
        let peer = try TestPeer("bad-welcome", port, "reject")
        peer.expectLine("ready")
        do {
            _ = try VMSocket.connect(to: .port(port))
            XCTFail("connect should be refused")
        } catch {
            XCTAssertTrue(error.description.contains("version mismatch"), error.description)
            XCTAssertTrue(error.description.contains("protocol 4"), error.description)
        }
    }

    private static func good() throws -> [Int32] {
        [try RawControl.makeRegion(capacity: 4096), RawControl.makeBell(), RawControl.makeBell()]
    }

    private static func unsealed() throws -> [Int32] {
        let memfd = vms_memfd_create("unsealed", VMS_MFD_CLOEXEC)
        ftruncate(memfd, 4096 * 2)
        return [memfd, RawControl.makeBell(), RawControl.makeBell()]
    }

    private static func pipeBell() throws -> [Int32] {
        var ends: [Int32] = [0, 0]
        pipe(&ends)
        close(ends[0])
        return [try RawControl.makeRegion(capacity: 4096), ends[1], RawControl.makeBell()]
    }
}
