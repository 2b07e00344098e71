import Foundation
import XCTest

/// The `vmperf` executable, next to the test bundle in the build folder, run as a real process.
enum VMPerf {
    static var executable: URL {
        URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
            .deletingLastPathComponent().appendingPathComponent("vmperf")
    }

    struct Finished {
        var status: Int32
        var stdout: String
        var stderr: String

        /// stdout parsed as a JSON object.
        func json(file: StaticString = #filePath, line: UInt = #line) throws -> [String: Any] {
            let parsed = try JSONSerialization.jsonObject(with: Data(stdout.utf8))
            return try XCTUnwrap(parsed as? [String: Any], "not a JSON object: \(stdout.prefix(200))", file: file, line: line)
        }
    }

    /// Starts vmperf; `wait` collects its output and status, killing it after `timeout` seconds.
    final class Running: @unchecked Sendable {  // the two readers each write one field, read after group.wait()
        let process = Process()
        private let out = Pipe()
        private let err = Pipe()
        private var outData = Data()
        private var errData = Data()
        private let group = DispatchGroup()

        init(_ arguments: [String]) throws {
            process.executableURL = VMPerf.executable
            process.arguments = arguments
            process.standardOutput = out
            process.standardError = err
            process.standardInput = FileHandle(forReadingAtPath: "/dev/null")
            try process.run()
            group.enter()
            DispatchQueue.global().async {
                self.outData = self.out.fileHandleForReading.readDataToEndOfFile()
                self.group.leave()
            }
            group.enter()
            DispatchQueue.global().async {
                self.errData = self.err.fileHandleForReading.readDataToEndOfFile()
                self.group.leave()
            }
        }

        // Waited for even when it has exited: until waitUntilExit, Foundation's Process and its run-loop source
        // hold each other, and LeakSanitizer reports both.
        deinit {
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
        }

        func wait(timeout: Double = 60) -> Finished {
            let deadline = Date().addingTimeInterval(timeout)
            while process.isRunning && Date() < deadline { usleep(10_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
            group.wait()
            return Finished(status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
                            stderr: String(decoding: errData, as: UTF8.self))
        }
    }

    /// A shell pipeline (for what only a shell sets up, like a reader that leaves early), run to its end.
    struct ShellCommand {
        let stdout: String
        let stderr: String

        init(_ command: String) throws {
            let process = Process()
            let out = Pipe(), err = Pipe()
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = ["-c", command]
            process.standardOutput = out
            process.standardError = err
            try process.run()
            let errData = err.fileHandleForReading.readDataToEndOfFile()
            stdout = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            stderr = String(decoding: errData, as: UTF8.self)
            process.waitUntilExit()
        }
    }

    static func run(_ arguments: [String], timeout: Double = 60) throws -> Finished {
        try Running(arguments).wait(timeout: timeout)
    }

    /// A one-off server on a free port and a client against it; returns the client's result.
    static func clientAgainstServer(_ clientArguments: [String], serverArguments: [String] = [], timeout: Double = 60) throws
        -> (client: Finished, server: Finished)
    {
        let port = String(freePort())
        let server = try Running(["-s", "-1", "-p", port] + serverArguments)
        waitForListener(port: port)
        let client = try run(["-c", "127.0.0.1", "-p", port] + clientArguments, timeout: timeout)
        return (client, server.wait(timeout: 15))
    }

    /// Waits until the server's TCP port accepts (up to 10 s).
    static func waitForListener(port: String) {
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = loopback(port: UInt16(port)!)
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            close(fd)
            if connected == 0 { return }
            usleep(20_000)
        }
    }

    static func freePort() -> Int {
        let (fd, port) = boundSocket()
        close(fd)
        return port
    }

    /// The first of two consecutive ports that are free now, below the kernel's ephemeral range, so that no
    /// socket bound to port 0 (this test's other connections, another program's) takes one before it is used.
    static func freePortPair() -> Int {
        for _ in 0..<100 {
            let first = Int.random(in: 10_000..<30_000)
            let probes = [first, first + 1].map { boundSocket(port: UInt16($0)) }
            probes.forEach { close($0.fd) }
            if probes.allSatisfy({ $0.port != 0 }) { return first }
        }
        return 0
    }

    /// A TCP socket that listens on a free loopback port and never accepts nor answers (the kernel completes
    /// connections into its backlog): a server that is not vmperf. Close the descriptor when done.
    static func silentListener() -> (fd: Int32, port: Int) {
        let (fd, port) = boundSocket()
        listen(fd, 8)
        return (fd, port)
    }

    /// A socket bound to the loopback port given (0: one the kernel picks) and its port, 0 if the bind failed.
    private static func boundSocket(port: UInt16 = 0) -> (fd: Int32, port: Int) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = loopback(port: port)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        return (fd, bound ? Int(UInt16(bigEndian: address.sin_port)) : 0)
    }

    private static func loopback(port: UInt16) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = in_addr_t(INADDR_LOOPBACK).bigEndian
        return address
    }
}
