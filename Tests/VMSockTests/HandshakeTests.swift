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
        // A named datagram socket, as /dev/log is: a bell connected to it would post our rings there in our name.
        let service = try Self.namedService()
        defer { close(service.fd) }
        let serviceBell = { () throws -> [Int32] in
            [try RawControl.makeRegion(capacity: 4096), try Self.connected(to: service.name), RawControl.makeBell()]
        }
        let cases: [(String, [UInt8], () throws -> [Int32], HandshakeMessage.RejectReason?)] = [
            ("garbage", [UInt8](repeating: 0xEE, count: 32), good, .badRequest),
            ("short", Array(hello.prefix(5)), good, .badRequest),
            ("oversized", hello + hello, good, .badRequest),
            ("no descriptors", hello, { [] }, .badRequest),
            ("extra descriptors", hello, { try good() + [RawControl.makeBell()] }, .badRequest),
            ("unsealed memfd", hello, unsealed, .badRequest),
            ("pipe as doorbell", hello, pipeBell, .badRequest),
            ("doorbell connected to a named socket", hello, serviceBell, .badRequest),
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
        // The spare half a connector that does not reuse links makes after its hellos is kept by design: freed
        // here, as before.
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

    /// A Unix datagram socket bound to an abstract name of its own.
    private static func namedService() throws -> (fd: Int32, name: String) {
        let name = "vmsock-test-service-\(getpid())"
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        var (address, length) = abstractAddress(name)
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        guard bound == 0 else { let code = errno; close(fd); throw POSIXError(POSIXErrorCode(rawValue: code) ?? .EIO) }
        return (fd, name)
    }

    /// A Unix datagram socket connected to the abstract name `name`.
    private static func connected(to name: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        var (address, length) = abstractAddress(name)
        let done = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, length) } }
        guard done == 0 else { let code = errno; close(fd); throw POSIXError(POSIXErrorCode(rawValue: code) ?? .EIO) }
        return fd
    }

    private static func abstractAddress(_ name: String) -> (sockaddr_un, socklen_t) {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(name.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.baseAddress!.advanced(by: 1).copyMemory(from: bytes, byteCount: bytes.count) }
        return (address, socklen_t(MemoryLayout<sa_family_t>.size + 1 + bytes.count))
    }

    private static func pipeBell() throws -> [Int32] {
        var ends: [Int32] = [0, 0]
        pipe(&ends)
        close(ends[0])
        return [try RawControl.makeRegion(capacity: 4096), ends[1], RawControl.makeBell()]
    }
}
