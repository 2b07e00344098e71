import Foundation
import XCTest

/// `vmperf --connections N` as a user runs it: this process connects, a listener process it starts accepts.
final class ConnectionsTests: XCTestCase {
    static let count = 20

    /// The three rounds in order; the first shared-memory round makes a new link every time, the second reopens
    /// parked links (all but the first connection, or nearly: a link is parked once the listener's side is gone too).
    func testJSONRoundsAndReusedLinks() throws {
        let result = try VMPerf.run(["--connections", String(Self.count), "-J"])
        XCTAssertEqual(result.status, 0, "stderr: \(result.stderr)")
        XCTAssertTrue(result.stderr.isEmpty, "stderr: \(result.stderr)")
        let document = try XCTUnwrap(result.json()["connections"] as? [String: Any])
        for key in ["version", "system_info", "timestamp", "exchange"] { XCTAssertNotNil(document[key], key) }
        XCTAssertEqual(document["connections_per_round"] as? Int, Self.count)
        XCTAssertEqual(document["ring_size"] as? Int, 256 << 10, "the library's default ring unless -w")
        let rounds = try XCTUnwrap(document["rounds"] as? [[String: Any]])
        XCTAssertEqual(rounds.map { $0["policy"] as? String }, ["shm", "shm", "tcp"])
        XCTAssertEqual(rounds.map { $0["reuses_links"] as? Bool }, [false, true, true])
        XCTAssertEqual(rounds.map { $0["transport"] as? String }, ["shared memory", "shared memory", "TCP"])
        let reused = rounds.map { $0["reused"] as? Int }
        XCTAssertEqual(reused[0], 0, "a new link each: nothing reused")
        let second = try XCTUnwrap(reused[1])
        XCTAssertGreaterThan(second, 0, "the default round reopens parked links")
        XCTAssertLessThan(second, Self.count, "the first connection of the round has no link to reopen")
        XCTAssertEqual(reused[2], 0, "TCP reuses nothing")
        for round in rounds {
            XCTAssertEqual(round["connections"] as? Int, Self.count)
            let perSecond = try XCTUnwrap(round["connections_per_second"] as? Double)
            let each = try XCTUnwrap(round["usec_per_connection"] as? Double)
            XCTAssertGreaterThan(perSecond, 0)
            XCTAssertEqual(each, 1e6 / perSecond, accuracy: each * 1e-9)
        }
    }

    /// The human output: a line per round with the figures, as vmsock-demo --connections printed them; -w sizes
    /// the rings.
    func testHumanLines() throws {
        let result = try VMPerf.run(["--connections", String(Self.count), "-w", "64K"])
        XCTAssertEqual(result.status, 0, "stderr: \(result.stderr)")
        let lines = result.stdout.split(separator: "\n").map(String.init)
        XCTAssertTrue(lines.first?.contains("rings of 64 KiB") ?? false, result.stdout)
        let rounds = lines.filter { $0.hasPrefix("connections per second over ") }
        XCTAssertEqual(rounds.count, 3, result.stdout)
        guard rounds.count == 3 else { return }
        XCTAssertTrue(rounds[0].hasPrefix("connections per second over shared memory, a new link each: "), rounds[0])
        XCTAssertTrue(rounds[1].hasPrefix("connections per second over shared memory, "), rounds[1])
        XCTAssertTrue(rounds[1].contains(" on reused links: "), rounds[1])
        XCTAssertFalse(rounds[1].contains(", 0 on reused links"), rounds[1])
        XCTAssertTrue(rounds[2].hasPrefix("connections per second over TCP: "), rounds[2])
        for line in rounds {
            XCTAssertTrue(line.contains("µs each; connect, 1 byte each way, close; \(Self.count) connections)"), line)
        }
    }

    /// `--connection-rounds` runs the rounds it names, in its order (a profile of one kind of set-up alone), and
    /// the listener process serves exactly those.
    func testChosenRounds() throws {
        let result = try VMPerf.run(["--connections", String(Self.count), "--connection-rounds", "tcp,new", "-J"])
        XCTAssertEqual(result.status, 0, "stderr: \(result.stderr)")
        let document = try XCTUnwrap(result.json()["connections"] as? [String: Any])
        let rounds = try XCTUnwrap(document["rounds"] as? [[String: Any]])
        XCTAssertEqual(rounds.map { $0["policy"] as? String }, ["tcp", "shm"])
        XCTAssertEqual(rounds.map { $0["reuses_links"] as? Bool }, [true, false])
        XCTAssertEqual(rounds.map { $0["transport"] as? String }, ["TCP", "shared memory"])
    }

    func testBadCountsAndCombinations() throws {
        for (arguments, expected) in [
            (["--connections", "0"], "--connections 0 is out of range"),
            (["--connections", "-5"], "--connections -5 is out of range"),
            (["--connections", "10", "--compare"], "choose one of"),
            (["--connections", "10", "--connection-rounds", "new,fast"], "want a comma-separated list of new, reused and tcp"),
            (["--connections", "10", "--connection-rounds", ""], "want a comma-separated list"),
            (["--connections", "10", "--connection-rounds", "new,"], "want a comma-separated list"),
            (["--connections", "10", "--connection-rounds", "tcp,tcp"], "each at most once"),
            (["-s", "--connection-rounds", "new"], "use it with --connections"),
            (["-s", "--connection-rounds", "new,reused,tcp"], "use it with --connections"),
        ] {
            let result = try VMPerf.run(arguments, timeout: 20)
            XCTAssertEqual(result.status, 1, "\(arguments)")
            XCTAssertTrue(result.stderr.hasPrefix("vmperf: error - "), "\(arguments): \(result.stderr)")
            XCTAssertTrue(result.stderr.contains(expected), "\(arguments): \(result.stderr)")
        }
    }
}
