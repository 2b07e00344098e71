import Foundation
import Synchronization
import VMSock
import VMSockHandles
import XCTest

/// The handle table's lifetime rules under threads: what the C program (interop/capi.test.sh) cannot race.
final class HandleTableTests: XCTestCase {
    /// A connected shared-memory pair in the table: (client, server) handles.
    private func pair() throws -> (Int32, Int32) {
        let listener = try VMListener(host: "127.0.0.1", port: 0)
        // Handed over through an atomic (release, then acquire), which ThreadSanitizer follows; it does not see
        // a contended Synchronization.Mutex hand over (tools/tsan.supp says why).
        let accepted = Handover()
        let thread = Thread {
            accepted.result = Result { () throws(VMSockError) in try listener.accept() }
            accepted.ready.store(true, ordering: .releasing)
        }
        thread.start()
        var options = VMSocketOptions()
        options.transport = .shm
        let client = try VMSocket.connect(host: "127.0.0.1", port: listener.localAddress.port, options: options)
        XCTAssertTrue(eventually { accepted.ready.load(ordering: .acquiring) })
        let server = try XCTUnwrap(accepted.result).get()
        listener.close()
        return (try XCTUnwrap(HandleTable.insert(client)), try XCTUnwrap(HandleTable.insert(server)))
    }

    func testClosedAndStaleHandlesAreBadDescriptors() throws {
        let before = HandleTable.openCount
        let (client, server) = try pair()
        XCTAssertEqual(HandleTable.openCount, before + 2)
        XCTAssertGreaterThanOrEqual(client, 1 << 20)
        try HandleTable.close(client)
        XCTAssertEqual(errnoOf { try HandleTable.close(client) }, EBADF)
        XCTAssertEqual(errnoOf { _ = try HandleTable.withConnection(client) { $0.transport } }, EBADF)
        XCTAssertEqual(errnoOf { _ = try HandleTable.withListener(server) { $0.localAddress } }, EINVAL)
        try HandleTable.close(server)
        XCTAssertEqual(HandleTable.openCount, before)
        for bad: Int32 in [-1, 0, 1, 1 << 20 | 0xFFFFF, Int32.max] {
            XCTAssertEqual(errnoOf { try HandleTable.close(bad) }, EBADF, "handle \(bad)")
        }
    }

    /// A freed slot comes back only after 1024 others wait to be reused, and under the next generation.
    func testFreedSlotsComeBackLateUnderANewGeneration() throws {
        var options = VMSocketOptions()
        options.transport = .tcp  // no registration: a listener is then a socket and little else
        let old = try XCTUnwrap(HandleTable.insert(try VMListener(host: "127.0.0.1", port: 0, options: options)))
        try HandleTable.close(old)
        var made = 0
        var reused: Int32? = nil
        while reused == nil && made < 3000 {
            let handle = try XCTUnwrap(HandleTable.insert(try VMListener(host: "127.0.0.1", port: 0, options: options)))
            made += 1
            if handle & 0xFFFFF == old & 0xFFFFF { reused = handle } else { try HandleTable.close(handle) }
        }
        let handle = try XCTUnwrap(reused, "the slot never came back")
        XCTAssertGreaterThanOrEqual(made, 1024)
        XCTAssertEqual(handle >> 20, (old >> 20) + 1, "the next generation")
        XCTAssertEqual(errnoOf { _ = try HandleTable.kind(of: old) }, EBADF)
        XCTAssertEqual(try HandleTable.kind(of: handle), .listener)
        try HandleTable.close(handle)
    }

    /// Threads reading and writing while another closes: every call ends (EBADF, or success before the close),
    /// nothing touches freed memory (run it under AddressSanitizer: tools/sanitize.sh), and the slot is freed once.
    func testCloseRacesWithReadersAndWriters() throws {
        let before = HandleTable.openCount
        for round in 0..<50 {
            let (client, server) = try pair()
            let done = Atomic<Int>(0)
            let reader = Thread {
                var buffer = [UInt8](repeating: 0, count: 256)
                while true {
                    let result = buffer.withUnsafeMutableBytes { bytes in
                        Result { () throws(VMSockError) in
                            try HandleTable.withConnection(server) { (socket) throws(VMSockError) in try socket.read(into: bytes) }
                        }
                    }
                    if case .failure = result { break }
                    if case .success(0) = result { break }
                }
                done.add(1, ordering: .sequentiallyConsistent)
            }
            let writer = Thread {
                let bytes = [UInt8](repeating: 7, count: 100)
                while true {
                    let result = bytes.withUnsafeBytes { bytes in
                        Result { () throws(VMSockError) in
                            try HandleTable.withConnection(client) { (socket) throws(VMSockError) in try socket.write(bytes) }
                        }
                    }
                    if case .failure = result { break }
                }
                done.add(1, ordering: .sequentiallyConsistent)
            }
            reader.start()
            writer.start()
            usleep(UInt32(round % 5) * 1000)
            // Both ends closed from this thread, and one of them from a second thread at once: one close wins.
            let second = Atomic<Int32>(-2)  // -2 until the second close returns
            let closer = Thread { second.store(errnoOf { try HandleTable.close(server) }, ordering: .sequentiallyConsistent) }
            closer.start()
            let mine = errnoOf { try HandleTable.close(server) }
            try HandleTable.close(client)
            XCTAssertTrue(eventually { done.load(ordering: .sequentiallyConsistent) == 2 }, "round \(round)")
            XCTAssertTrue(eventually { second.load(ordering: .sequentiallyConsistent) != -2 })
            XCTAssertEqual(
                [mine, second.load(ordering: .sequentiallyConsistent)].sorted(), [0, EBADF], "one close wins, round \(round)")
        }
        XCTAssertTrue(eventually { HandleTable.openCount == before })
    }
}

private func eventually(_ condition: () -> Bool) -> Bool {
    for _ in 0..<500 {
        if condition() { return true }
        usleep(10_000)
    }
    return false
}

/// 0 when `body` succeeds, else the errno of the VMSockError it throws (-1 for any other error).
private func errnoOf(_ body: () throws -> Void) -> Int32 {
    do {
        try body()
        return 0
    } catch {
        return (error as? VMSockError)?.code ?? -1
    }
}

/// The accepted socket, written once by the accepting thread before `ready` is stored.
private final class Handover: @unchecked Sendable {
    var result: Result<VMSocket, VMSockError>?
    let ready = Atomic<Bool>(false)
}
