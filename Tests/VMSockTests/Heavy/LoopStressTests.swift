import Foundation
@_spi(Testing) import VMSock
import XCTest

/// Randomized, time-bounded: both ends of many small-ring connections stop and start at random, so each sees the
/// other asleep and awake by turns. A lost wake-up shows as a connection that stops moving (nothing spins).
final class LoopStressTests: XCTestCase {
    func testRandomPausesLoseNoWakeUp() throws {
        // VMSOCK_STRESS_SECONDS runs it longer, to hunt a rare hang (tools/soak.sh).
        let seconds = ProcessInfo.processInfo.environment["VMSOCK_STRESS_SECONDS"].flatMap(Double.init) ?? 5
        let deadline = Date().addingTimeInterval(seconds)
        var rounds = 0
        var bytes = 0
        repeat {
            bytes += try stressRound(connections: 16)
            rounds += 1
        } while Date() < deadline
        print("LoopStressTests: \(rounds) rounds, \(bytes) bytes echoed with random pauses, no lost wake-up")
    }

    /// Loop clients pause reading and writing at random; half the servers are loop echoes, half are blocking
    /// threads that sleep at random and never spin (so every wait of theirs goes through a doorbell).
    private func stressRound(connections: Int) throws -> Int {
        let pairs = try makePairs(connections)
        let serverLoop = try LoopThread()
        let clientLoop = try LoopThread()
        let tally = Tally(expecting: 2 * connections)
        let sizes = (0..<connections).map { _ in Int.random(in: 1...300_000) }
        for (i, pair) in pairs.enumerated() {
            pair.client.isNonBlocking = true
            if i % 2 == 0 {
                pair.server.isNonBlocking = true
                try onLoop(serverLoop.loop) { [loop = serverLoop.loop] in _ = try EchoServer(pair.server, loop: loop, tally: tally) }
            } else {
                pair.server.spinMicroseconds = 0
                _ = Background { Self.sleepyBlockingEcho(pair.server, tally: tally) }
            }
        }
        let clientSockets = pairs.map(\.client) as [VMSocket]
        let clients = try onLoop(clientLoop.loop) { [loop = clientLoop.loop] in
            try clientSockets.enumerated().map { i, socket in
                try EchoClient(socket, loop: loop, total: sizes[i], seed: UInt64(i), pauses: 0.2, tally: tally)
            }
        }
        guard tally.wait(timeout: 40) else {
            // Print where every unfinished connection stands before failing: which side waits, on what.
            let report = try onLoop(clientLoop.loop) {
                zip(clients, pairs).enumerated().filter { !$1.0.isFinished }.map { i, entry in
                    "#\(i) \(i % 2 == 0 ? "loop" : "blocking") server; client \(entry.0.progress)\n"
                        + "  client: \(entry.1.client._debugSnapshot)\n  server: \(entry.1.server._debugSnapshot)"
                }
            }
            XCTFail("lost wake-up? only \(tally.done) of \(2 * connections) ends finished:\n" + report.joined(separator: "\n"))
            return 0
        }
        XCTAssertEqual(tally.failures, [], "\(tally.failures.prefix(5))")
        return sizes.reduce(0, +)
    }

    private static func sleepyBlockingEcho(_ socket: VMSocket, tally: Tally) {
        var buffer = [UInt8](repeating: 0, count: 3000)
        do {
            while true {
                let chunk = try socket.read(upTo: Int.random(in: 1...buffer.count))
                if chunk.isEmpty { break }
                if Int.random(in: 0..<8) == 0 { usleep(UInt32.random(in: 0...1500)) }
                try socket.writeAll(chunk)
                buffer[0] = chunk[0]
            }
            try socket.shutdown(.write)
            socket.close()
            tally.finished()
        } catch {
            tally.finished("blocking echo: \(error)")
        }
    }
}
