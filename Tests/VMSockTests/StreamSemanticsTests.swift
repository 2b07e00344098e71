import Foundation
import VMSock
import XCTest

/// TCP semantics between two sockets in one process.
final class StreamSemanticsTests: XCTestCase {
    func testBytesArriveInOrderBothWays() throws {
        let (server, client) = try connectedPair()
        try client.writeAll(Array("hello, server".utf8))
        XCTAssertEqual(String(decoding: try server.readExactly(13), as: UTF8.self), "hello, server")
        try server.writeAll(Array("hello, client".utf8))
        XCTAssertEqual(String(decoding: try client.readExactly(13), as: UTF8.self), "hello, client")
    }

    func testShutdownWriteGivesEndOfStreamAfterEveryByte() throws {
        let (server, client) = try connectedPair(options: VMSocketOptions(ringSize: 4096))
        let payload = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let sender = Background {
            try client.writeAll(payload)
            try client.shutdown(.write)
        }
        var received: [UInt8] = []
        while true {
            let chunk = try server.read(upTo: 7777)
            if chunk.isEmpty { break }
            received += chunk
        }
        XCTAssertNoThrow(try sender.wait()?.get())
        XCTAssertEqual(received, payload)
        XCTAssertEqual(try server.read(upTo: 10), [], "end of stream stays end of stream")
        XCTAssertErrno(EPIPE, try client.writeAll([1]), "writing after shutdown(.write)")
        // The other direction still works after a half-close.
        try server.writeAll([42])
        XCTAssertEqual(try client.readExactly(1), [42])
    }

    func testCloseGivesPeerEndOfStreamThenEPIPE() throws {
        let (server, client) = try connectedPair()
        try client.writeAll([1, 2, 3])
        client.close()
        XCTAssertEqual(try server.readExactly(3), [1, 2, 3])
        XCTAssertEqual(try server.read(upTo: 10), [])
        XCTAssertErrno(EPIPE, try server.writeAll([4]))
        XCTAssertErrno(EBADF, try client.read(upTo: 1), "using a closed socket")
        client.close()  // idempotent
    }

    func testShutdownReadStopsPeerWritesWithEPIPE() throws {
        let (server, client) = try connectedPair()
        try server.shutdown(.read)
        XCTAssertEqual(try server.read(upTo: 10), [])
        XCTAssertErrno(EPIPE, try client.writeAll([1]))
    }

    func testVectoredReadAndWrite() throws {
        let (server, client) = try connectedPair()
        let a: [UInt8] = [1, 2, 3], b: [UInt8] = [4, 5], c: [UInt8] = [6, 7, 8, 9]
        let written = try a.withUnsafeBytes { pa in
            try b.withUnsafeBytes { pb in try c.withUnsafeBytes { pc in try client.writev([pa, pb, pc]) } }
        }
        XCTAssertEqual(written, 9)
        var x = [UInt8](repeating: 0, count: 4), y = [UInt8](repeating: 0, count: 5)
        let read = try x.withUnsafeMutableBytes { px in try y.withUnsafeMutableBytes { py in try server.readv([px, py]) } }
        XCTAssertEqual(read, 9)
        XCTAssertEqual(x + y, [1, 2, 3, 4, 5, 6, 7, 8, 9])
    }

    func testZeroCopyWriteAndRead() throws {
        let (server, client) = try connectedPair(options: VMSocketOptions(ringSize: 4096))
        // Walk the positions around the ring so the in-place slices cross its end (the mirror mapping).
        for round in 0..<10 {
            let written = try client.writeInPlace(minimum: 1000) { space in
                for i in 0..<1000 { space[i] = UInt8(truncatingIfNeeded: round &+ i) }
                return 1000
            }
            XCTAssertEqual(written, 1000)
            var seen: [UInt8] = []
            while seen.count < 1000 {
                _ = try server.readInPlace { bytes in
                    seen += bytes
                    return bytes.count
                }
            }
            XCTAssertEqual(seen, (0..<1000).map { UInt8(truncatingIfNeeded: round &+ $0) })
        }
        client.close()
        XCTAssertEqual(try server.readInPlace { _ in XCTFail("no body call at end of stream"); return 0 }, 0)
    }

    func testRingSizesAndIdentity() throws {
        var small = VMSocketOptions(ringSize: 8192)
        small.ringSize = 8192
        let port = freePortText()
        let listener = try VMListener(address: .port(port), options: VMSocketOptions(ringSize: 1 << 20))
        let accepted = Background { try listener.accept() }
        let client = try VMSocket.connect(to: .port(port), options: small)
        let server = try XCTUnwrap(accepted.wait()).get()
        XCTAssertEqual(client.ringSize, 8192)
        XCTAssertEqual(client.peerRingSize, 1 << 20)
        XCTAssertEqual(server.peerRingSize, 8192)
        XCTAssertEqual(client.peerCredentials?.pid, getpid())
        XCTAssertEqual(server.peerCredentials?.uid, getuid())
        XCTAssertEqual(client.transport, .sharedMemory)
        XCTAssertEqual(client.peerAddress.description, "127.0.0.1:\(port)")
        XCTAssertEqual(server.localAddress.description, "127.0.0.1:\(port)")
        XCTAssertEqual(client.localAddress.host, "127.0.0.1")
        XCTAssertNotEqual(client.localAddress.port, 0, "a connector has a port of its own, as over TCP")
        XCTAssertEqual(server.peerAddress, client.localAddress, "each side sees the other's address as TCP would")
    }

    /// A shared-memory connector's port is a real TCP port, held while the socket lives: no TCP socket on the host
    /// can bind it meanwhile, two connections never share one (even on one reused link, one after the other),
    /// and it is free again once the socket is gone.
    func testConnectorPortIsHeldAndDistinct() throws {
        let listener = try VMListener(address: .port(freePortText()))
        defer { listener.close() }
        var ports: Set<UInt16> = []
        for _ in 0..<3 {
            let accepted = Background { try listener.accept() }
            let client = try VMSocket.connect(to: listener.address)
            let server = try XCTUnwrap(accepted.wait(timeout: 10)).get()
            let held = client.localAddress
            XCTAssertEqual(server.peerAddress, held)
            XCTAssertFalse(ports.contains(held.port), "port \(held.port) given twice")
            ports.insert(held.port)
            XCTAssertFalse(Self.canBind(held), "\(held) is held by the connection")
            client.close()
            server.close()
        }
        XCTAssertTrue(eventually { ports.allSatisfy { Self.canBind(IPEndpoint(numericHost: "127.0.0.1", port: $0)!) } },
                      "the ports are free once the sockets are gone")
    }

    /// `sourceAddress` is bind before connect: over shared memory (a new link, then a reused one) and over TCP,
    /// the connection leaves from that address and port, the listener sees it as the peer's, no one else can
    /// bind it meanwhile, and a second connection from it fails with EADDRINUSE until the first is gone. Port 0
    /// takes one the kernel picks; a source of the other family is EAFNOSUPPORT.
    func testSourceAddressIsBindBeforeConnect() throws {
        let listener = try VMListener(address: .port(freePortText()))
        defer { listener.close() }
        VMSocket.closeIdleLinks()
        for (round, transport) in [TransportPolicy.auto, .auto, .tcp].enumerated() {
            if round == 1 {
                XCTAssertTrue(eventually { VMSocket.idleLinkCount == 1 && listener.parkedLinkCount > 0 }, "not parked")
            }
            var options = VMSocketOptions(transport: transport)
            let source = try XCTUnwrap(IPEndpoint(numericHost: "127.0.0.1", port: freePort()))
            options.sourceAddress = source
            let accepted = Background { try listener.accept() }
            let client = try VMSocket.connect(to: listener.address, options: options)
            let server = try XCTUnwrap(accepted.wait(timeout: 10)).get()
            XCTAssertEqual(client.transport, transport == .tcp ? .tcp : .sharedMemory)
            if round == 1 { XCTAssertEqual(VMSocket.idleLinkCount, 0, "the link was reopened") }
            XCTAssertEqual(client.localAddress, source)
            XCTAssertEqual(server.peerAddress, source)
            XCTAssertFalse(Self.canBind(source), "\(source) is held by the connection")
            XCTAssertErrno(EADDRINUSE, try VMSocket.connect(to: listener.address, options: options))
            client.close()
            server.close()
        }
        var anyPort = VMSocketOptions()
        anyPort.sourceAddress = IPEndpoint(numericHost: "127.0.0.1", port: 0)
        let accepted = Background { try listener.accept() }
        let client = try VMSocket.connect(to: listener.address, options: anyPort)
        let server = try XCTUnwrap(accepted.wait(timeout: 10)).get()
        XCTAssertEqual(client.localAddress.host, "127.0.0.1")
        XCTAssertNotEqual(client.localAddress.port, 0)
        XCTAssertEqual(server.peerAddress, client.localAddress)
        client.close()
        server.close()
        var portOnly = VMSocketOptions()  // nc -p without -s: the port, from the address the route gives
        let port = freePort()
        portOnly.sourceAddress = IPEndpoint(numericHost: "0.0.0.0", port: port)
        let acceptedToo = Background { try listener.accept() }
        let fromPort = try VMSocket.connect(to: listener.address, options: portOnly)
        let serverToo = try XCTUnwrap(acceptedToo.wait(timeout: 10)).get()
        XCTAssertEqual(fromPort.localAddress.description, "127.0.0.1:\(port)")
        XCTAssertEqual(serverToo.peerAddress, fromPort.localAddress)
        fromPort.close()
        serverToo.close()
        var otherFamily = VMSocketOptions()
        otherFamily.sourceAddress = IPEndpoint(numericHost: "::1", port: 0)
        XCTAssertErrno(EAFNOSUPPORT, try VMSocket.connect(to: listener.address, options: otherFamily))
    }

    /// Whether a plain TCP socket can bind `endpoint` (without SO_REUSEADDR) right now.
    private static func canBind(_ endpoint: IPEndpoint) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = endpoint.port.bigEndian
        address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        } == 0
    }

    func testErrorsATCPProgrammerExpects() throws {
        XCTAssertErrno(ECONNREFUSED, try VMSocket.connect(to: .port(freePortText())))
        XCTAssertErrno(EINVAL, try VMSocket.connect(to: .port("1"), options: VMSocketOptions(ringSize: 5000)))
        XCTAssertErrno(EINVAL, try VMListener(address: .port("0"), options: VMSocketOptions(ringSize: 128 << 20)))
        XCTAssertErrno(EINVAL, try VMSocket.connect(host: "no-such-host.invalid", port: 1))
        let port = freePortText()
        let listener = try VMListener(address: .port(port))
        XCTAssertErrno(EADDRINUSE, try VMListener(address: listener.address))
        listener.close()
        XCTAssertNoThrow(try VMListener(address: .port(port)), "a closed listener frees its port and registration at once")
        do {
            _ = try VMSocket.connect(to: .port(freePortText()), options: VMSocketOptions(transport: .auto))
        } catch {
            XCTAssertTrue(error.description.contains("nothing listens"), error.description)
        }
    }

    func testCloseFromAnotherThreadWakesABlockedRead() throws {
        let (server, client) = try connectedPair()
        defer { withExtendedLifetime(client) {} }
        let reader = Background { try server.read(upTo: 10) }
        usleep(100_000)
        server.close()
        guard let result = reader.wait(timeout: 2) else { return XCTFail("blocked read did not wake on close") }
        XCTAssertThrowsError(try result.get()) { XCTAssertEqual(($0 as? VMSockError)?.code, EBADF) }
    }

    /// Close wakes an accept asleep in poll(2), every time: closing the listener's sockets takes them out of the
    /// epoll set the accept sleeps on, and an accept not yet back from its wake-up used to find nothing ready and
    /// sleep on for ever (three times in four under AddressSanitizer, on 2 cores).
    func testCloseFromAnotherThreadWakesABlockedAccept() throws {
        for round in 1...30 {
            let listener = try VMListener(address: .port(freePortText()))
            let accepted = Background { try listener.accept() }
            usleep(2000)  // past accept's spin (`SpinPolicy`, 50 µs), asleep in poll
            listener.close()
            guard let result = accepted.wait(timeout: 5) else { return XCTFail("round \(round): accept did not wake on close") }
            XCTAssertThrowsError(try result.get()) { XCTAssertEqual(($0 as? VMSockError)?.code, EBADF) }
        }
    }
}
