import Foundation
import XCTest

/// A `vmsock-testpeer` process: the other side in tests whose behaviour crosses a process boundary.
final class TestPeer {
    let process = Process()
    private let stdoutPipe = Pipe()
    private let stderrPipe = Pipe()
    private var lines: [String] = []
    private var pending = Data()

    /// The helper sits next to the test bundle in the build folder.
    static var executable: URL {
        URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
            .deletingLastPathComponent().appendingPathComponent("vmsock-testpeer")
    }

    init(environment: [String: String] = [:], _ arguments: String...) throws {
        process.executableURL = Self.executable
        process.arguments = arguments
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        process.standardOutput = stdoutPipe
        process.standardError = stderrPipe
        try process.run()
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    /// Waits for the helper to print `word` on a line of its own.
    func expectLine(_ word: String, timeout: TimeInterval = 10, file: StaticString = #filePath, line: UInt = #line) {
        let deadline = Date().addingTimeInterval(timeout)
        let handle = stdoutPipe.fileHandleForReading
        while Date() < deadline {
            if let index = lines.firstIndex(of: word) {
                lines.removeSubrange(...index)
                return
            }
            var pfd = pollfd(fd: handle.fileDescriptor, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, 100) > 0 else { continue }
            let chunk = handle.availableData
            if chunk.isEmpty { break }
            pending.append(chunk)
            while let newline = pending.firstIndex(of: 10) {
                lines.append(String(decoding: pending[pending.startIndex..<newline], as: UTF8.self))
                pending.removeSubrange(...newline)
            }
        }
        XCTFail("test peer did not print '\(word)'; stderr: \(errorOutput())", file: file, line: line)
    }

    /// What the helper printed on stdout that `expectLine` has not consumed, once it has exited.
    func remainingOutput() -> String {
        let rest = stdoutPipe.fileHandleForReading.readDataToEndOfFile()
        return (lines + [String(decoding: pending + rest, as: UTF8.self)]).joined(separator: "\n")
    }

    /// Sends SIGKILL and returns at once (the process is reaped later, by `killHard` or deinit).
    func sendKill() {
        kill(process.processIdentifier, SIGKILL)
    }

    func killHard() {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    /// Waits for the helper to exit and returns its status.
    func wait() -> Int32 {
        process.waitUntilExit()
        return process.terminationStatus
    }

    func errorOutput() -> String {
        if process.isRunning { return "(still running)" }
        return String(decoding: stderrPipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    }
}

/// A loopback TCP port that nothing listens on right now, as text (the test peer takes ports as arguments).
func freePortText() -> String { String(freePort()) }

func freePort() -> UInt16 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length); return getsockname(fd, $0, &length) }
    }
    return UInt16(bigEndian: addr.sin_port)
}

/// Open descriptors and mappings of this process, to show that nothing leaks.
func openDescriptorCount() -> Int {
    (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1
}

/// The open descriptor count once it has stopped changing (up to 2 s): what an earlier test started may still be
/// winding down (a helper process's pipes, a thread holding its last socket), and a leak check must not count that.
func settledDescriptorCount() -> Int {
    var count = openDescriptorCount()
    for _ in 0..<100 {
        usleep(20_000)
        let now = openDescriptorCount()
        if now == count { break }
        count = now
    }
    return count
}

func mappingCount() -> Int {
    (try? String(contentsOfFile: "/proc/self/maps", encoding: .utf8))?.split(separator: "\n").count ?? -1
}

/// Runs `body` on a new thread and returns a way to wait for its result.
final class Background<T: Sendable>: @unchecked Sendable {  // result is written once before the semaphore signals
    private let done = DispatchSemaphore(value: 0)
    private var result: Result<T, Error>?

    init(_ body: @escaping @Sendable () throws -> T) {
        let thread = Thread { [self] in
            result = Result { try body() }
            done.signal()
        }
        thread.start()
    }

    /// The result, or nil when `body` did not finish within `timeout` seconds.
    func wait(timeout: TimeInterval = 30) -> Result<T, Error>? {
        done.wait(timeout: .now() + timeout) == .success ? result : nil
    }
}
