import Foundation
import VMSock
import XCTest

/// The TCP engine behind the same API: the calls, errors and options a shared-memory socket has, over real TCP.
final class TCPSemanticsTests: XCTestCase {
    private func tcpPair() throws -> (server: VMSocket, client: VMSocket) {
        let pair = try connectedPair(options: VMSocketOptions(transport: .tcp))
        XCTAssertEqual(pair.client.transport, .tcp)
        XCTAssertEqual(pair.server.transport, .tcp)
        return pair
    }

    func testBytesBothWaysAndHalfClose() throws {
        let (server, client) = try tcpPair()
        let payload = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let writer = Background { try client.writeAll(payload); try client.shutdown(.write) }
        XCTAssertEqual(try server.readExactly(payload.count), payload)
        XCTAssertEqual(try server.read(upTo: 10), [], "end of stream after the peer's shutdown(.write)")
        XCTAssertNoThrow(try writer.wait()?.get())
        try server.writeAll([1, 2, 3])  // the other direction still works after the half-close
        XCTAssertEqual(try client.readExactly(3), [1, 2, 3])
    }

    func testVectoredAndInPlaceCalls() throws {
        let (server, client) = try tcpPair()
        let a: [UInt8] = [1, 2, 3], b: [UInt8] = [4, 5]
        let written = try a.withUnsafeBytes { a in try b.withUnsafeBytes { b in try client.writev([a, b]) } }
        XCTAssertEqual(written, 5)
        let staged = try client.writeInPlace(minimum: 4) { space in
            for i in 0..<4 { space[i] = UInt8(10 + i) }
            return 4
        }
        XCTAssertEqual(staged, 4)
        var seen: [UInt8] = []
        while seen.count < 9 {
            _ = try server.readInPlace { bytes in
                let take = min(bytes.count, 2)  // consume little at a time: the rest must stay for the next call
                seen += bytes.prefix(take)
                return take
            }
        }
        XCTAssertEqual(seen, [1, 2, 3, 4, 5, 10, 11, 12, 13])
        try client.writeAll([7, 8, 9])
        var first = [UInt8](repeating: 0, count: 1), rest = [UInt8](repeating: 0, count: 8)
        let n = try first.withUnsafeMutableBytes { f in try rest.withUnsafeMutableBytes { r in try server.readv([f, r]) } }
        XCTAssertGreaterThanOrEqual(n, 1)
        XCTAssertEqual(first, [7])
    }

    func testTimeoutsAndNonBlockingMode() throws {
        let (server, client) = try tcpPair()
        server.readTimeout = .milliseconds(100)
        let start = Date()
        XCTAssertErrno(ETIMEDOUT, try server.read(upTo: 10))
        XCTAssertGreaterThanOrEqual(Date().timeIntervalSince(start), 0.09)
        server.isNonBlocking = true
        XCTAssertErrno(EAGAIN, try server.read(upTo: 10))
        XCTAssertFalse(try server.armReadable())
        try client.writeAll([42])
        var pfd = pollfd(fd: server.pollDescriptor, events: Int16(POLLIN), revents: 0)
        XCTAssertEqual(poll(&pfd, 1, 5000), 1)
        XCTAssertEqual(try server.read(upTo: 10), [42])

        client.writeTimeout = .milliseconds(100)
        XCTAssertErrno(ETIMEDOUT, try client.writeAll([UInt8](repeating: 0, count: 64 << 20)), "nobody reads: the buffers fill")
        client.isNonBlocking = true
        XCTAssertErrno(EAGAIN, try client.writeAll([UInt8](repeating: 0, count: 1 << 20)))
    }

    func testWritingToAClosedPeerFailsWithoutSIGPIPE() throws {
        let (server, client) = try tcpPair()
        server.close()
        XCTAssertEqual(try client.read(upTo: 10), [], "the peer's close reads as end of stream")
        var failure: VMSockError?
        for _ in 0..<100 where failure == nil {
            do { try client.writeAll([UInt8](repeating: 1, count: 4096)) } catch { failure = error }
            usleep(1000)
        }
        let code = try XCTUnwrap(failure).code
        XCTAssertTrue(code == EPIPE || code == ECONNRESET, "\(String(describing: failure))")
    }

    func testCloseFromAnotherThreadWakesABlockedRead() throws {
        let (server, client) = try tcpPair()
        let reader = Background { try client.read(upTo: 10) }
        usleep(100_000)
        client.close()
        guard let result = reader.wait(timeout: 5) else { return XCTFail("read still blocked after close") }
        XCTAssertErrno(EBADF, try result.get())
        XCTAssertErrno(EBADF, try client.writeAll([1]))
        withExtendedLifetime(server) {}  // its close would end the read with end of stream instead
    }

    func testClosedSocketsLeaveNoDescriptorBehind() throws {
        let before = openDescriptorCount()
        for _ in 0..<20 {
            let (server, client) = try tcpPair()
            server.close()
            client.close()
        }
        XCTAssertLessThanOrEqual(openDescriptorCount(), before + 2)  // + the Background threads' bookkeeping, if any
    }
}
