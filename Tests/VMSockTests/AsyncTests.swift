import CVMSock
import Foundation
import Synchronization
@_spi(Testing) import VMSock
import XCTest

/// The async API: read, write, accept, the chunk and connection sequences, cancellation.
final class AsyncTests: XCTestCase {
    /// An async echo server (a task per connection, `for try await` over chunks) and async clients checking
    /// every byte, with a small ring so that both sides wait for each other often.
    func testAsyncEchoServerAndClients() async throws {
        let thread = try LoopThread()
        let options = VMSocketOptions(ringSize: 4096)
        let listener = try AsyncListener(VMListener(address: .port(freePortText()), options: options), on: thread.loop)
        let server = Task {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for try await connection in listener.connections {
                    group.addTask {
                        for try await chunk in connection.chunks() { try await connection.writeAll(chunk) }
                        try connection.shutdown(.write)
                    }
                }
                try await group.waitForAll()
            }
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for seed in 0..<(Int(ProcessInfo.processInfo.environment["NCLIENTS"] ?? "20") ?? 20) {
                group.addTask {
                    let socket = try await AsyncSocket.connect(to: listener.listener.address, options, on: thread.loop)
                    try await Self.streamAndCheck(socket, total: Int.random(in: 1...200_000), seed: UInt64(seed))
                }
            }
            try await group.waitForAll()
        }
        listener.close()
        try await server.value
    }

    /// Writes `total` pattern bytes in random pieces while reading the echo back in another task, checking it.
    private static func streamAndCheck(_ socket: AsyncSocket, total: Int, seed: UInt64) async throws {
        async let written: Void = {
            var sent = 0
            while sent < total {
                var piece = [UInt8](repeating: 0, count: min(total - sent, Int.random(in: 1...10_000)))
                vms_pattern_fill(&piece, piece.count, UInt64(sent), seed)
                try await socket.writeAll(piece)
                sent += piece.count
                if Int.random(in: 0..<10) == 0 { try await Task.sleep(for: .microseconds(Int.random(in: 0...500))) }
            }
            try socket.shutdown(.write)
        }()
        var received = 0
        for try await chunk in socket.chunks(maximumSize: 5000) {
            let good = vms_pattern_check(chunk, chunk.count, UInt64(received), seed)
            XCTAssertEqual(good, chunk.count, "seed \(seed): byte \(received + good) differs")
            received += chunk.count
            if Int.random(in: 0..<10) == 0 { try await Task.sleep(for: .microseconds(Int.random(in: 0...500))) }
        }
        try await written
        XCTAssertEqual(received, total, "seed \(seed)")
    }

    /// Cancelling a read that waits returns promptly with ECANCELED, consumes nothing, and leaves the socket
    /// usable.
    func testCancelledReadReturnsPromptlyAndLeavesTheSocketUsable() async throws {
        let thread = try LoopThread()
        let (server, client) = try connectedPair()
        let socket = try AsyncSocket(server, on: thread.loop)
        let reader = Task { try await socket.read(upTo: 10) }
        try await Task.sleep(for: .milliseconds(50))
        let start = ContinuousClock.now
        reader.cancel()
        do {
            _ = try await reader.value
            XCTFail("a cancelled read must throw")
        } catch let error as VMSockError {
            XCTAssertEqual(VMSockError.name(of: error.code), VMSockError.name(of: ECANCELED), "\(error)")
        }
        XCTAssertLessThan(ContinuousClock.now - start, .seconds(1))
        XCTAssertFalse(client._peerWaits.data, "a cancelled read withdraws its announcement")
        try client.writeAll([7, 8])
        let bytes = try await socket.read(upTo: 10)
        XCTAssertEqual(bytes, [7, 8], "nothing was lost to the cancelled read")
    }

    /// A write waiting on a full ring is cancelled the same way; a cancelled writeAll says how far it got.
    func testCancelledWriteAllSaysHowMuchWasWritten() async throws {
        let thread = try LoopThread()
        let (server, client) = try connectedPair(options: VMSocketOptions(ringSize: 4096))
        let socket = try AsyncSocket(client, on: thread.loop)
        let writer = Task { try await socket.writeAll([UInt8](repeating: 1, count: 10_000)) }
        try await Task.sleep(for: .milliseconds(50))
        writer.cancel()
        do {
            try await writer.value
            XCTFail("a cancelled write must throw")
        } catch let error as VMSockError {
            XCTAssertEqual(error.code, ECANCELED)
            XCTAssertTrue(error.message.contains("after 4096 of 10000"), error.message)
        }
        withExtendedLifetime(server) {}
    }

    func testCancelledAcceptReturnsPromptly() async throws {
        let thread = try LoopThread()
        let listener = try AsyncListener(VMListener(address: .port(freePortText())), on: thread.loop)
        let acceptor = Task { try await listener.accept() }
        try await Task.sleep(for: .milliseconds(50))
        acceptor.cancel()
        do {
            _ = try await acceptor.value
            XCTFail("a cancelled accept must throw")
        } catch let error as VMSockError {
            XCTAssertEqual(error.code, ECANCELED)
        }
        async let client = AsyncSocket.connect(to: listener.listener.address, on: thread.loop)
        _ = try await listener.accept()  // still listening, and the connector was not lost
        _ = try await client
    }

    /// The async connect reaches the same listener over either transport, as the policy says, and the stream
    /// works both ways.
    func testAsyncConnectOverBothTransports() async throws {
        let thread = try LoopThread()
        let listener = try AsyncListener(VMListener(address: .port(freePortText())), on: thread.loop)
        for transport in [TransportPolicy.tcp, .shm] {
            async let accepted = listener.accept()
            let client = try await AsyncSocket.connect(
                host: "127.0.0.1", port: listener.listener.localAddress.port,
                options: VMSocketOptions(transport: transport), on: thread.loop)
            let server = try await accepted
            XCTAssertEqual(client.socket.transport, transport == .tcp ? .tcp : .sharedMemory, "\(transport)")
            XCTAssertEqual(server.socket.transport, client.socket.transport, "\(transport)")
            try await client.writeAll([1, 2, 3])
            let there = try await server.read(upTo: 10)
            XCTAssertEqual(there, [1, 2, 3], "\(transport)")
            try await server.writeAll([4])
            let back = try await client.read(upTo: 10)
            XCTAssertEqual(back, [4], "\(transport)")
        }
        listener.close()
    }

    /// A connect waiting for a handshake answer (the listener never accepts) is cancelled promptly, with
    /// ECANCELED, and closes what it made.
    func testCancelledAsyncConnectReturnsPromptly() async throws {
        let thread = try LoopThread()
        let listener = try VMListener(address: .port(freePortText()))  // never accepts: the hello is never answered
        VMSocket.closeIdleLinks()  // what earlier tests left for later connections is not this test's
        let fdsBefore = settledDescriptorCount()
        let connector = Task { try await AsyncSocket.connect(to: listener.address, on: thread.loop) }
        try await Task.sleep(for: .milliseconds(100))
        let start = ContinuousClock.now
        connector.cancel()
        do {
            _ = try await connector.value
            XCTFail("a cancelled connect must throw")
        } catch let error as VMSockError {
            XCTAssertEqual(VMSockError.name(of: error.code), VMSockError.name(of: ECANCELED), "\(error)")
        }
        XCTAssertLessThan(ContinuousClock.now - start, .seconds(2))
        XCTAssertEqual(settledDescriptorCount(), fdsBefore, "the half-made connection leaked descriptors")
        withExtendedLifetime(listener) {}
    }

    func testTwoReadsAtOnceIsEBUSY() async throws {
        let thread = try LoopThread()
        let (server, client) = try connectedPair()
        let socket = try AsyncSocket(server, on: thread.loop)
        let first = Task { try await socket.read(upTo: 10) }
        try await Task.sleep(for: .milliseconds(50))
        do {
            _ = try await socket.read(upTo: 10)
            XCTFail("a second read must throw")
        } catch {
            XCTAssertEqual(error.code, EBUSY)
        }
        try client.writeAll([1])
        let bytes = try await first.value
        XCTAssertEqual(bytes, [1])
    }

    func testClosingWakesAWaitingReadWithEBADF() async throws {
        let thread = try LoopThread()
        let (server, client) = try connectedPair()
        let socket = try AsyncSocket(server, on: thread.loop)
        let reader = Task { try await socket.read(upTo: 10) }
        try await Task.sleep(for: .milliseconds(50))
        socket.close()
        do {
            _ = try await reader.value
            XCTFail("a read on a closed socket must throw")
        } catch let error as VMSockError {
            XCTAssertEqual(error.code, EBADF)
        }
        withExtendedLifetime(client) {}
    }
}

extension AsyncSocket {
    /// Connects over shared memory only (unless `options` say otherwise), as `VMSocket.connect(to:)` in the tests.
    static func connect(
        to address: LoopbackPort, _ options: VMSocketOptions = .init(), on loop: EventLoop
    ) async throws(VMSockError) -> AsyncSocket {
        var options = options
        if options.transport == nil { options.transport = .shm }
        return try await connect(host: "127.0.0.1", port: address.port, options: options, on: loop)
    }
}
