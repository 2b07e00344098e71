import Foundation
import XCTest

/// An executable next to the test bundle in the build folder.
func builtExecutable(_ name: String) -> URL {
    if name.hasPrefix("/") { return URL(fileURLWithPath: name) }  // a copy made elsewhere
    return URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        .deletingLastPathComponent().appendingPathComponent(name)
}

/// A TCP port on 127.0.0.1 that nothing listens on now (the kernel picks it), so two tests never collide.
func randomPort() -> UInt16 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
        }
    }
    return bound ? UInt16(bigEndian: address.sin_port) : UInt16.random(in: 20000...59000)
}

/// A fresh directory for sockets, removed by the test's teardown.
func temporaryDirectory(_ test: XCTestCase) throws -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("vmsockd-test.\(UUID().uuidString.prefix(8))").path
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
    test.addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
    return path
}

/// A process of ours (vmsockd, vmsock-testpeer), its stdout read line by line, its stderr kept.
final class Child {
    let process = Process()
    private let stdoutPipe = Pipe()
    private let stderrPipe = Pipe()
    private var lines: [String] = []
    private var pending = Data()
    /// Standard error, read to its end on another thread. Not `self`: the reader must not keep the child object
    /// (and so the process, which its deinit kills) alive.
    private let errorOutput = ErrorOutput()

    private final class ErrorOutput: @unchecked Sendable {  // `data` is written once, read after `done`
        var data = Data()
        let done = DispatchSemaphore(value: 0)
    }

    /// Starts `executable` with `arguments`, this process's environment plus `environment`, standard input from
    /// `input` (a file path; /dev/null when nil), and standard output to `output` (a file made now; when nil, a
    /// pipe that `line` reads).
    init(
        _ executable: String, _ arguments: [String], environment: [String: String] = [:], input: String? = nil,
        output: String? = nil
    ) throws {
        process.executableURL = builtExecutable(executable)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        if let output, FileManager.default.createFile(atPath: output, contents: nil),
            let file = FileHandle(forWritingAtPath: output)
        {
            process.standardOutput = file
        } else {
            process.standardOutput = stdoutPipe
        }
        process.standardError = stderrPipe
        process.standardInput = FileHandle(forReadingAtPath: input ?? "/dev/null")
        try process.run()
        let handle = stderrPipe.fileHandleForReading
        let output = errorOutput
        DispatchQueue.global().async {
            output.data = handle.readDataToEndOfFile()
            output.done.signal()
        }
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    var pid: pid_t { process.processIdentifier }

    /// The next line on stdout that starts with `prefix` (lines before it are passed over), or nil when the
    /// process ends or `timeout` seconds pass first.
    func line(startingWith prefix: String, timeout: TimeInterval = 20) -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        let handle = stdoutPipe.fileHandleForReading
        while true {
            if let index = lines.firstIndex(where: { $0.hasPrefix(prefix) }) {
                let found = lines[index]
                lines.removeSubrange(...index)
                return found
            }
            guard Date() < deadline else { return nil }
            var pfd = pollfd(fd: handle.fileDescriptor, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, 100) > 0 else { continue }
            let chunk = handle.availableData
            if chunk.isEmpty { return nil }
            pending.append(chunk)
            while let newline = pending.firstIndex(of: 10) {
                lines.append(String(decoding: pending[pending.startIndex..<newline], as: UTF8.self))
                pending.removeSubrange(...newline)
            }
        }
    }

    /// Waits (up to `timeout` seconds, then SIGKILL) for the process to end: its status and everything it wrote
    /// on stderr.
    func finish(timeout: TimeInterval = 20) -> (status: Int32, reason: Process.TerminationReason, stderr: String) {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        errorOutput.done.wait()
        return (process.terminationStatus, process.terminationReason, String(decoding: errorOutput.data, as: UTF8.self))
    }
}

/// A running vmsockd on a socket in a fresh directory.
final class Daemon {
    let child: Child
    let socket: String
    let directory: String
    let readyLine: String

    /// Starts `vmsockd --socket DIR/sock ARGS` and waits for its ready line.
    init(_ test: XCTestCase, _ arguments: [String] = [], file: StaticString = #filePath, line: UInt = #line) throws {
        directory = try temporaryDirectory(test)
        socket = directory + "/sock"
        child = try Child("vmsockd", ["--socket", socket] + arguments)
        guard let ready = child.line(startingWith: "vmsockd: ready") else {
            let end = child.finish(timeout: 1)
            XCTFail("vmsockd did not get ready (status \(end.status)): \(end.stderr)", file: file, line: line)
            throw CocoaError(.executableLoad)
        }
        readyLine = ready
    }

    /// SIGTERM, then its exit.
    func terminate() -> (status: Int32, reason: Process.TerminationReason, stderr: String) {
        kill(child.pid, SIGTERM)
        return child.finish()
    }
}

/// Runs vmsockd with `arguments` to its end (it is expected to fail at once).
func runDaemon(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
    let child = try Child("vmsockd", arguments)
    let end = child.finish(timeout: 20)
    var stdout: [String] = []
    while let line = child.line(startingWith: "", timeout: 1) { stdout.append(line) }
    return (end.status, stdout.joined(separator: "\n"), end.stderr)
}
