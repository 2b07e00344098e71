import Foundation
import XCTest

@testable import VMSock

/// vmsockd as a user runs it: its command line, and what it does with what it finds at the socket path.
final class DaemonTests: XCTestCase {
    /// Each bad command line: exit status 1, one line on stderr naming the problem, nothing on stdout, no trace.
    func testBadArgumentsGiveOneClearLine() throws {
        let directory = try temporaryDirectory(self)
        let socket = directory + "/sock"
        let cases: [([String], String)] = [
            ([], "Missing expected argument '--socket <socket> ...'"),
            (["--socket"], "Missing value for '--socket <socket>'"),
            (["--socket", ""], "--socket needs a path"),
            (["--socket", socket, "--size", "3M"], "region size 3145728 is invalid: use a power of two from 64 KiB to 64 GiB"),
            (["--socket", socket, "--size", "32K"], "region size 32768 is invalid"),
            (["--socket", socket, "--size", "128G"], "region size 137438953472 is invalid"),
            (["--socket", socket, "--size", "-1"], "The value '-1' is invalid for '--size <size>'"),
            (["--socket", socket, "--size", "64Q"], "The value '64Q' is invalid for '--size <size>'"),
            (["--socket", socket, "--size", "99999999999999999999"], "is invalid for '--size <size>'"),
            (["--socket", socket, "--vectors", "0"], "0 vectors: use 1 to 64"),
            (["--socket", socket, "--vectors", "65"], "65 vectors: use 1 to 64"),
            (["--socket", socket, "--vectors", "four"], "The value 'four' is invalid for '--vectors <vectors>'"),
            (["--socket", socket, "--frobnicate"], "Unknown option '--frobnicate'"),
            (["--socket", socket, "--socket", socket], "--socket \(socket) is given twice"),
            (["--socket", socket, "--socket", directory + "/missing/sock"], "bind(\(directory)/missing/sock): No such file or directory"),
            (["--socket", socket, "--host-alias", "10.0.2"], "The value '10.0.2' is invalid for '--host-alias <ipv4>'"),
            (["--socket", socket, "--host-alias", "::1"], "The value '::1' is invalid for '--host-alias <ipv4>'"),
            (["--socket", socket] + (1...5).flatMap { ["--host-alias", "10.0.2.\($0)"] }, "5 host aliases: at most 4"),
            (["--socket", directory + "/" + String(repeating: "x", count: 120)], "name too long for a Unix socket"),
            (["--socket", directory + "/missing/sock"], "bind(\(directory)/missing/sock): No such file or directory"),
        ]
        for (arguments, expected) in cases {
            let result = try runDaemon(arguments)
            XCTAssertEqual(result.status, 1, "\(arguments): \(result.stderr)")
            XCTAssertEqual(result.stdout, "", "\(arguments)")
            XCTAssertTrue(result.stderr.hasPrefix("vmsockd: "), "\(arguments): \(result.stderr)")
            XCTAssertTrue(result.stderr.contains(expected), "\(arguments): expected '\(expected)' in: \(result.stderr)")
            XCTAssertEqual(result.stderr.filter { $0 == "\n" }.count, 1, "\(arguments): one line: \(result.stderr)")
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory), [], "nothing left behind")
    }

    func testHelpExitsZero() throws {
        let result = try runDaemon(["--help"])
        XCTAssertEqual(result.status, 0)
        XCTAssertTrue(result.stdout.contains("USAGE: vmsockd --socket <socket>"), result.stdout)
        XCTAssertTrue(result.stdout.contains("--vectors"), result.stdout)
    }

    /// One vmsockd, two sockets: two regions, each with its own peers (groups that must not share one); SIGTERM
    /// ends both and removes both socket files.
    func testSeveralSocketsServeSeparateRegions() throws {
        let directory = try temporaryDirectory(self)
        let (first, second) = (directory + "/a", directory + "/b")
        let child = try Child("vmsockd", ["--socket", first, "--socket", second, "--size", "1M"])
        XCTAssertEqual(child.line(startingWith: "vmsockd: ready"), "vmsockd: ready on \(first), \(second) (1 MiB region, 4 vectors, each)")
        let a = try IvshmemClient.connect(path: first)
        let b = try IvshmemClient.connect(path: second)
        XCTAssertEqual(a.id, 0)
        XCTAssertEqual(b.id, 0, "each region counts its own peers")
        XCTAssertNotEqual(a.instance, b.instance, "two regions")
        XCTAssertTrue(a.peers.isEmpty && b.peers.isEmpty, "neither hears of the other's peer")
        a.region.base.storeBytes(of: 0x5A, toByteOffset: a.region.geometry.arenaOffset, as: UInt8.self)
        XCTAssertEqual(b.region.base.load(fromByteOffset: b.region.geometry.arenaOffset, as: UInt8.self), 0, "separate memory")
        kill(child.pid, SIGTERM)
        XCTAssertEqual(child.finish().status, 0)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory), [], "both socket files removed")
    }

    /// A second vmsockd on a path a live one serves is refused, and leaves the first one's socket alone.
    func testALiveSocketIsRefused() throws {
        let daemon = try Daemon(self)
        let second = try runDaemon(["--socket", daemon.socket])
        XCTAssertEqual(second.status, 1)
        XCTAssertEqual(second.stderr, "vmsockd: \(daemon.socket): a server is already running there (another vmsockd?)\n")
        XCTAssertTrue(FileManager.default.fileExists(atPath: daemon.socket))
        XCTAssertEqual(daemon.terminate().status, 0)
    }

    /// A socket file nobody answers on (its server died without removing it) is replaced.
    func testAStaleSocketIsReplaced() throws {
        let directory = try temporaryDirectory(self)
        let path = directory + "/sock"
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        XCTAssertEqual(bound, 0)
        close(fd)  // the file stays, with nobody behind it
        XCTAssertTrue(FileManager.default.fileExists(atPath: path))

        let child = try Child("vmsockd", ["--socket", path])
        XCTAssertNotNil(child.line(startingWith: "vmsockd: ready on \(path)"))
        kill(child.pid, SIGTERM)
        XCTAssertEqual(child.finish().status, 0)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path))
    }

    /// Something at the path that is not a socket is never removed.
    func testAFileThatIsNoSocketIsKept() throws {
        let directory = try temporaryDirectory(self)
        let path = directory + "/notes.txt"
        try "keep me".write(toFile: path, atomically: false, encoding: .utf8)
        let result = try runDaemon(["--socket", path])
        XCTAssertEqual(result.status, 1)
        XCTAssertEqual(result.stderr, "vmsockd: \(path) exists and is not a socket; not replacing it\n")
        XCTAssertEqual(try String(contentsOfFile: path, encoding: .utf8), "keep me")
    }
}
