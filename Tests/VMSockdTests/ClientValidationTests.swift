import CVMSock
import Foundation
import VMSockRing
import XCTest

@testable import VMSock

/// `IvshmemClient` against a fake server that breaks the protocol in one way each: a clean error every time
/// (EPROTO for what is not the protocol), never a crash.
final class ClientValidationTests: XCTestCase {
    /// A listening socket that plays vmsockd with a script.
    private final class FakeServer {
        let path: String
        let listener: Int32

        init(_ test: XCTestCase) throws {
            path = try temporaryDirectory(test) + "/fake"
            listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            guard bound == 0, listen(listener, 4) == 0 else { throw VMSockError.system("bind or listen") }
        }

        deinit { close(listener) }

        /// Connects a client (on another thread), runs `script` on the accepted socket, and returns what the
        /// client's connect gave. The socket stays open until the client is done, unless the script closes it.
        func join(timeoutMs: Int32 = 5000, _ script: (Int32) throws -> Void) throws -> Result<IvshmemClient, VMSockError> {
            final class Box: @unchecked Sendable { var result: Result<IvshmemClient, VMSockError>? }
            let box = Box()
            let done = DispatchSemaphore(value: 0)
            let path = self.path
            Thread {
                box.result = Result { () throws(VMSockError) in try IvshmemClient.connect(path: path, timeoutMs: timeoutMs) }
                done.signal()
            }.start()
            let fd = accept(listener, nil, nil)
            XCTAssertGreaterThanOrEqual(fd, 0)
            try script(fd)
            XCTAssertEqual(done.wait(timeout: .now() + 20), .success, "the client's connect did not return")
            close(fd)
            return box.result!
        }
    }

    private func send(_ fd: Int32, _ value: Int64, _ descriptor: Int32? = nil) throws {
        XCTAssertEqual(try IvshmemWire.send(fd, value, descriptor: descriptor), .sent)
    }

    /// A real vmsockd region of 64 KiB (64 slots), with slot `live` marked live (epoch 1).
    private func region(vectors: Int = 1, live: Int? = 0) throws -> (IvshmemRegion, Descriptor) {
        let (region, fd) = try IvshmemRegion.create(size: 64 << 10, vectors: vectors)
        if let live {
            IvshmemHeaderWriter(base: region.base, geometry: region.geometry).markJoined(id: live, epoch: 1, pid: 1, uid: 0, gid: 0)
        }
        return (region, fd)
    }

    private func eventFD() throws -> Descriptor { try Sys.eventFD(flags: Int32(EFD_CLOEXEC) | Int32(EFD_NONBLOCK)) }

    private func memfd(size: Int, seals: Int32) throws -> Descriptor {
        let fd = try Sys.memfdCreate("fake", flags: VMS_MFD_CLOEXEC | VMS_MFD_ALLOW_SEALING)
        try Sys.truncate(fd.raw, to: size, "ftruncate")
        if seals != 0 { try Sys.addSeals(fd.raw, seals) }
        return fd
    }

    private func expect(
        _ result: Result<IvshmemClient, VMSockError>, _ code: Int32, _ text: String,
        file: StaticString = #filePath, line: UInt = #line
    ) {
        switch result {
        case .success: XCTFail("the client joined; expected \(VMSockError.name(of: code)): \(text)", file: file, line: line)
        case .failure(let error):
            XCTAssertEqual(error.code, code, "\(error)", file: file, line: line)
            XCTAssertTrue(error.message.contains(text), "expected '\(text)' in: \(error.message)", file: file, line: line)
        }
    }

    func testTheJoinsFirstMessagesAreChecked() throws {
        let server = try FakeServer(self)
        let sealed = VMS_F_SEAL_GROW | VMS_F_SEAL_SHRINK
        let stray = try eventFD()
        var ends: [Int32] = [-1, -1]
        XCTAssertEqual(pipe(&ends), 0)
        defer { close(ends[0]); close(ends[1]) }
        let unsealed = try memfd(size: 64 << 10, seals: 0)
        let odd = try memfd(size: 100_000, seals: sealed)
        let blank = try memfd(size: 64 << 10, seals: sealed)
        let (_, good) = try region()
        // A region sealed against writing: mapping it writable failed with EPERM, not EPROTO (Fuzz/ivshmem-client).
        let readOnly = try memfd(size: 64 << 10, seals: sealed | VMS_F_SEAL_FUTURE_WRITE)
        let writeSealed = try memfd(size: 64 << 10, seals: sealed | VMS_F_SEAL_WRITE)
        let descriptors = openDescriptors()

        expect(try server.join { try send($0, 1) }, EPROTO, "protocol version 1, we speak 0")
        expect(try server.join { try send($0, 0, stray.raw) }, EPROTO, "protocol version 0 with a descriptor")
        expect(try server.join { try send($0, 0); try send($0, -5) }, EPROTO, "invalid id message (-5)")
        expect(try server.join { try send($0, 0); try send($0, 70_000) }, EPROTO, "invalid id message (70000)")
        expect(try server.join { try send($0, 0); try send($0, 0, stray.raw) }, EPROTO, "invalid id message (0, with a descriptor)")
        expect(try server.join { try send($0, 0); try send($0, 0); try send($0, 3) }, EPROTO, "sent 3 where the shared memory belongs")
        expect(try server.join { try send($0, 0); try send($0, 0); try send($0, -1) }, EPROTO, "where the shared memory belongs")
        expect(try server.join { try send($0, 0); try send($0, 0); try send($0, -1, ends[0]) }, EPROTO, "not a regular file")
        expect(try server.join { try send($0, 0); try send($0, 0); try send($0, -1, unsealed.raw) }, EPROTO, "not sealed against resizing")
        expect(try server.join { try send($0, 0); try send($0, 0); try send($0, -1, odd.raw) }, EPROTO, "100000 bytes, not a power of two")
        expect(try server.join { try send($0, 0); try send($0, 0); try send($0, -1, blank.raw) }, EPROTO, "bad magic 0x0 (not a vmsockd region)")
        expect(try server.join { try send($0, 0); try send($0, 0); try send($0, -1, readOnly.raw) }, EPROTO, "sealed against writing")
        expect(try server.join { try send($0, 0); try send($0, 0); try send($0, -1, writeSealed.raw) }, EPROTO, "sealed against writing")
        expect(try server.join { try send($0, 0); try send($0, 32); try send($0, -1, good.raw) }, EPROTO, "id 32, beyond its 32 peer ids (the rest are process slots)")
        expect(try server.join { try send($0, 0); try send($0, 1); try send($0, -1, good.raw) }, EPROTO, "our slot 1 in vmsockd's region is not marked live")

        XCTAssertEqual(openDescriptors(), descriptors, "every descriptor received on a failed join is closed")
    }

    /// Open descriptors of this process, once the count has stopped changing (a client thread may still be ending).
    private func openDescriptors() -> Int {
        func count() -> Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1 }
        var last = count()
        for _ in 0..<100 {
            usleep(20_000)
            let now = count()
            if now == last { break }
            last = now
        }
        return last
    }

    func testVectorsAndLeavesAreChecked() throws {
        let server = try FakeServer(self)
        let (_, memory) = try region(vectors: 2)
        func start(_ fd: Int32) throws {
            try send(fd, 0)
            try send(fd, 0)
            try send(fd, -1, memory.raw)
        }
        let bell = try eventFD()
        var ends: [Int32] = [-1, -1]
        XCTAssertEqual(pipe(&ends), 0)
        defer { close(ends[0]); close(ends[1]) }
        expect(try server.join { try start($0); try send($0, 3, ends[0]) }, EPROTO, "peer 3's vector as something other than an eventfd (pipe:")
        expect(try server.join { try start($0); try send($0, 3) }, EPROTO, "peer 3 left, which never joined")
        expect(try server.join { try start($0); try send($0, 0) }, EPROTO, "that we (peer 0) left")
        expect(try server.join { try start($0); try send($0, 64, bell.raw) }, EPROTO, "sent 64, which is no peer id")
        expect(try server.join { try start($0); for _ in 0..<3 { try send($0, 5, bell.raw) } }, EPROTO, "peer 5 more than 2 vectors")
        expect(try server.join { try start($0); try ControlSocket.send($0, [0, 0, 0, 0, 0, 0, 0, 0], descriptors: [bell.raw, bell.raw]) },
               EPROTO, "more than one descriptor")
        expect(try server.join { try send($0, 0); shutdown($0, Int32(SHUT_RDWR)) }, ECONNRESET, "vmsockd closed the connection")
        expect(try server.join(timeoutMs: 200) { try start($0) }, ETIMEDOUT, "did not send the join within 200 ms")

        // A whole join, then faults that come later: `update` throws them, and keeps throwing.
        var script: Int32 = -1
        let result = try server.join {
            try start($0)
            for _ in 0..<2 { try send($0, 3, bell.raw) }  // peer 3, both vectors
            for _ in 0..<2 { try send($0, 0, bell.raw) }  // ours
            script = dup($0)
        }
        defer { close(script) }
        let client = try result.get()
        XCTAssertEqual(client.id, 0)
        XCTAssertEqual(Array(client.peers.keys), [3])
        XCTAssertEqual(client.peers[3]?.epoch, 0, "its slot never said live: epoch 0, not a failure")
        try send(script, 3)
        XCTAssertEqual(try client.waitForEvents(timeoutMs: 20_000), [.left(3)])
        try send(script, 0, bell.raw)
        XCTAssertThrowsError(try client.waitForEvents(timeoutMs: 20_000)) {
            XCTAssertEqual(($0 as? VMSockError)?.code, EPROTO)
            XCTAssertTrue("\($0)".contains("more than 2 vectors"), "\($0)")
        }
        XCTAssertThrowsError(try client.update()) { XCTAssertEqual(($0 as? VMSockError)?.code, EPROTO) }
    }

    /// Nothing listening: ECONNREFUSED, as for a TCP connect.
    func testNothingListening() throws {
        let directory = try temporaryDirectory(self)
        XCTAssertThrowsError(try IvshmemClient.connect(path: directory + "/none")) {
            XCTAssertEqual(($0 as? VMSockError)?.code, ECONNREFUSED)
            XCTAssertTrue("\($0)".contains("is vmsockd running?"), "\($0)")
        }
    }
}
