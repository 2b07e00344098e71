import Foundation
import VMSock
import XCTest

/// One loop thread serving many connections at once; idle connections costing nothing.
final class LoopScaleTests: XCTestCase {
    /// How many shared-memory pairs fit under the descriptor limit (one process holds both ends), at most `wanted`.
    private func pairsThatFit(_ wanted: Int, reserve: Int) throws -> Int {
        let limit = raiseDescriptorLimit()
        let before = openDescriptorCount()
        let perPair = try { () throws -> Int in
            let one = try makePairs(1)
            return withExtendedLifetime(one) { openDescriptorCount() - before }
        }()
        let fit = (limit - openDescriptorCount() - reserve) / perPair
        print("LoopScaleTests: \(perPair) descriptors per pair in one process; limit \(limit) fits \(fit) pairs")
        return min(wanted, fit)
    }

    /// 1,000 shared-memory connections and 100 TCP ones, all served by one loop thread, each echoing random data
    /// that the clients (on a second loop thread) check byte by byte.
    func testOneLoopServesAThousandSharedMemoryAndAHundredTCPConnections() throws {
        let count = try pairsThatFit(1000, reserve: 400)
        let start = Date()
        let pairs = try makePairs(count)
        let tcpPairs = try makeTCPPairs(100)
        print("LoopScaleTests: \(count) shared-memory + \(tcpPairs.count) TCP pairs made in \(Date().timeIntervalSince(start)) s")
        let server = try LoopThread()
        let clients = try LoopThread()
        let tally = Tally(expecting: 2 * (pairs.count + tcpPairs.count))
        for pair in pairs {
            pair.server.isNonBlocking = true
            pair.client.isNonBlocking = true
        }
        let servers = pairs.map(\.server) as [VMSocket]
        let tcpServers = tcpPairs.map(\.server)
        try onLoop(server.loop) { [loop = server.loop] in
            for socket in servers { _ = try EchoServer(socket, loop: loop, tally: tally) }
            for socket in tcpServers { _ = try EchoServer(socket, loop: loop, tally: tally) }
        }
        let sizes = (0..<(pairs.count + tcpPairs.count)).map { _ in Int.random(in: 1...40_000) }
        let clientSockets = pairs.map(\.client) as [VMSocket]
        let tcpClients = tcpPairs.map(\.client)
        let echoStart = Date()
        try onLoop(clients.loop) { [loop = clients.loop] in
            for (i, socket) in clientSockets.enumerated() {
                _ = try EchoClient(socket, loop: loop, total: sizes[i], seed: UInt64(i), tally: tally)
            }
            for (i, socket) in tcpClients.enumerated() {
                let n = clientSockets.count + i
                _ = try EchoClient(socket, loop: loop, total: sizes[n], seed: UInt64(n), tally: tally)
            }
        }
        XCTAssertTrue(tally.wait(timeout: 60), "only \(tally.done) of \(2 * (pairs.count + tcpPairs.count)) ends finished")
        print("LoopScaleTests: echoed \(sizes.reduce(0, +)) bytes each way over \(sizes.count) connections in \(Date().timeIntervalSince(echoStart)) s")
        XCTAssertEqual(tally.failures, [], "\(tally.failures.prefix(5))")
    }

    /// 1,000 idle shared-memory connections watched by one loop cost it (almost) no CPU: arming puts each to
    /// sleep for good, and nothing rings.
    func testAThousandIdleConnectionsCostTheLoopNoCPU() throws {
        let count = try pairsThatFit(1000, reserve: 200)
        let pairs = try makePairs(count)
        let loop = try LoopThread()
        let servers = pairs.map(\.server) as [VMSocket]
        let calls = try onLoop(loop.loop) { [loop = loop.loop] in
            var calls = 0
            let watches = try servers.map { socket in
                socket.isNonBlocking = true
                return try loop.watch(socket, for: .read) { calls += 1 }
            }
            return SendableBox((watches, { calls }))
        }
        _ = try onLoop(loop.loop) {}  // the first round after arming has run
        let before = try onLoop(loop.loop) { threadCPUSeconds() }
        usleep(2_000_000)
        let after = try onLoop(loop.loop) { threadCPUSeconds() }
        let share = (after - before) / 2.0
        print("LoopScaleTests: \(count) idle connections: loop thread used \(String(format: "%.3f", share * 100))% of a core over 2 s")
        XCTAssertLessThan(share, 0.02)
        XCTAssertEqual(try onLoop(loop.loop) { calls.value.1() }, 0, "no handler ran for an idle connection")
        try onLoop(loop.loop) { calls.value.0.forEach { $0.cancel() } }
        withExtendedLifetime(pairs) {}
    }
}
