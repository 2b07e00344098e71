import Foundation
import XCTest

/// `vmperf --paper` as a user runs it: a real process (which starts its own peer process), its output parsed.
final class PaperTests: XCTestCase {
    /// The vmperf executable sits next to the test bundle in the build folder.
    static var executable: URL {
        URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
            .deletingLastPathComponent().appendingPathComponent("vmperf")
    }

    func testJSONHasEveryKeyAndFiveRows() throws {
        let (status, stdout, stderr) = try run(["--paper", "--runs", "2", "--iterations", "2000", "-J"])
        XCTAssertEqual(status, 0, "stderr: \(stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(stdout.utf8))
        let document = try XCTUnwrap(object as? [String: Any], "not a JSON object: \(stdout)")
        for key in ["paper", "system_info", "cpu_model", "runs", "iterations", "pinned", "cpus", "rows", "tcp_over_raw"] {
            XCTAssertNotNil(document[key], "missing key \(key)")
        }
        let paper = try XCTUnwrap(document["paper"] as? [String: Any])
        XCTAssertNotNil(paper["title"] as? String)
        XCTAssertNotNil(paper["machine"] as? String)
        XCTAssertEqual(document["runs"] as? Int, 2)
        XCTAssertEqual(document["iterations"] as? Int, 2000)
        let pinned = try XCTUnwrap(document["pinned"] as? Bool)
        let cpus = try XCTUnwrap(document["cpus"] as? [Int])
        XCTAssertEqual(cpus.count, pinned ? 2 : 0)
        if !pinned { XCTAssertNotNil(document["pinning_note"] as? String, "unpinned without saying why") }

        let rows = try XCTUnwrap(document["rows"] as? [[String: Any]])
        XCTAssertEqual(rows.map { $0["name"] as? String }, ["Raw", "Sync", "Sync1k", "TCP", "vmsock"])
        var means: [String: Double] = [:]
        for row in rows {
            let name = try XCTUnwrap(row["name"] as? String)
            let mean = try XCTUnwrap(row["mean_us"] as? Double, "\(name): mean_us")
            XCTAssertGreaterThan(mean, 0, name)
            XCTAssertNotNil(row["stddev_us"] as? Double, "\(name): stddev_us")
            XCTAssertEqual((row["runs_us"] as? [Double])?.count, 2, "\(name): runs_us")
            if name == "vmsock" {
                XCTAssertTrue(row["paper"] is NSNull, "vmsock is ours: no paper figure")
            } else {
                let figures = try XCTUnwrap(row["paper"] as? [String: Any], "\(name): paper")
                let native = try XCTUnwrap(figures["native"] as? [String: Any], "\(name): paper.native")
                XCTAssertNotNil(native["mean_us"] as? Double)
                XCTAssertNotNil(native["stddev_us"] as? Double)
            }
            means[name] = mean
        }
        let raw = try XCTUnwrap(means["Raw"])
        let tcp = try XCTUnwrap(means["TCP"])
        XCTAssertLessThan(raw, tcp, "a shared-memory round trip should beat a TCP one")
        let ratio = try XCTUnwrap(document["tcp_over_raw"] as? Double)
        XCTAssertEqual(ratio, tcp / raw, accuracy: ratio * 1e-9)
        XCTAssertTrue(stderr.isEmpty, "stderr: \(stderr)")
    }

    func testHumanOutputIsATable() throws {
        let (status, stdout, stderr) = try run(["--paper", "--runs", "1", "--iterations", "1000"])
        XCTAssertEqual(status, 0, "stderr: \(stderr)")
        for word in ["Raw ", "Sync ", "Sync1k ", "TCP ", "vmsock* ", "TCP / Raw:", "Pentium D", "1 runs of 1000 round trips"] {
            XCTAssertTrue(stdout.contains(word), "no '\(word)' in:\n\(stdout)")
        }
    }

    func testZeroRunsIsAnError() throws {
        let (status, stdout, stderr) = try run(["--paper", "--runs", "0"])
        XCTAssertEqual(status, 1)
        XCTAssertTrue(stderr.hasPrefix("vmperf: error - "), "stderr: \(stderr)")
        XCTAssertTrue(stderr.contains("--runs"), "stderr: \(stderr)")
        XCTAssertTrue(stdout.isEmpty)
    }

    func testPeerModeAloneFailsCleanly() throws {
        let (status, _, stderr) = try run(["--paper-peer", "nonsense"])
        XCTAssertEqual(status, 1)
        XCTAssertTrue(stderr.hasPrefix("vmperf: error - --paper-peer is started by --paper"), "stderr: \(stderr)")
    }

    /// Kills the peer in the middle of a long run: the parent must say so and exit, not spin forever.
    func testPeerKilledMidRunIsReported() throws {
        let process = Process()
        process.executableURL = Self.executable
        process.arguments = ["--paper", "--runs", "1000", "--iterations", "100000"]
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        defer {
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()  // else Foundation's Process and its run-loop source keep each other (a leak)
        }
        // Wait until the peer exists, then let the Raw row get going.
        let children = "/proc/\(process.processIdentifier)/task/\(process.processIdentifier)/children"
        guard FileManager.default.fileExists(atPath: children) else {
            throw XCTSkip("this kernel has no /proc/PID/task/TID/children (CONFIG_PROC_CHILDREN) to find the peer by")
        }
        let peer = try XCTUnwrap(waitForChild(of: process.processIdentifier), "no peer process appeared")
        usleep(300_000)
        kill(peer, SIGKILL)
        let deadline = Date().addingTimeInterval(30)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        XCTAssertFalse(process.isRunning, "the parent kept running after its peer died")
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertEqual(process.terminationStatus, 1)
        XCTAssertTrue(stderr.contains("the peer process was killed by signal 9"), "stderr: \(stderr)")
    }

    // MARK: Helpers

    private func run(_ arguments: [String]) throws -> (Int32, String, String) {
        let process = Process()
        process.executableURL = Self.executable
        process.arguments = arguments
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        // Read before waiting: a full pipe would block the child.
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: stdout, as: UTF8.self), String(decoding: stderr, as: UTF8.self))
    }

    /// The first child of `parent`, from /proc (`children` of its main thread), within 10 s.
    private func waitForChild(of parent: Int32) -> Int32? {
        let path = "/proc/\(parent)/task/\(parent)/children"
        for _ in 0..<1000 {
            if let text = try? String(contentsOfFile: path, encoding: .utf8),
               let first = text.split(separator: " ").first, let pid = Int32(first) {
                return pid
            }
            usleep(10_000)
        }
        return nil
    }
}
