import Foundation

/// Where the human-readable lines and the JSON document go: stdout, or `--logfile` (appended, as iperf3 does).
///
/// Written with write(2), not FileHandle: FileHandle.write traps when the reader has gone (`vmperf ... | head`),
/// and a closed pipe must end us quietly, not with a crash report.
public final class Report: @unchecked Sendable {  // lines come from the interval timer and the main thread, under `lock`
    private let fd: Int32
    /// Where the output goes: standard output, or the log file's descriptor.
    public var descriptor: Int32 { fd }
    private let lock = NSLock()
    /// -J: one JSON document at the end instead of lines.
    public let json: Bool
    /// -T: every line begins with it and a colon (after the time, with --timestamps), as iperf3's.
    private let title: String?
    /// --timestamps: every line begins with the local time in this strftime(3) format.
    private let timestampFormat: String?

    /// What `line` and `document` wrote while capturing (--get-server-output), without the lines' prefixes.
    private var captured: String?

    /// The most a capture keeps (then it stops growing).
    public static let captureLimit = 2 << 20

    /// iperf3's format for a bare --timestamps: "Thu Dec  3 16:01:19 2026 ".
    public static let defaultTimestampFormat = "%c "

    /// Output to stdout, or appended to `logfile`; with `json`, lines are dropped and only `document` writes.
    public init(logfile: String?, json: Bool, title: String? = nil, timestampFormat: String? = nil) throws {
        self.json = json
        self.title = title
        self.timestampFormat = timestampFormat
        guard let logfile else {
            fd = STDOUT_FILENO
            return
        }
        fd = open(logfile, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw Failure("unable to open log file \(logfile): \(errorText()) (check the directory and permissions)")
        }
    }

    /// A human-readable line; nothing in JSON mode (the document carries everything).
    public func line(_ text: String = "") {
        guard !json else { return }
        write(prefix() + text + "\n", capturing: text + "\n")
    }

    /// Text written as it is: no prefix, nothing added (another program's output, such as the server's).
    public func verbatim(_ text: String) {
        guard !json else { return }
        write(text)
    }

    /// From now on, keeps a copy of what `line` and `document` write, until `endCapture`.
    public func beginCapture() {
        lock.withLock { captured = "" }
    }

    /// What was written since `beginCapture`; capturing stops.
    public func endCapture() -> String {
        lock.withLock {
            defer { captured = nil }
            return captured ?? ""
        }
    }

    private func prefix() -> String {
        var out = ""
        if let timestampFormat {
            var now = time(nil)
            var local = tm()
            localtime_r(&now, &local)
            var buffer = [CChar](repeating: 0, count: 256)
            let count = strftime(&buffer, buffer.count, timestampFormat, &local)  // 0: too long, or an empty result
            out += String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
        if let title { out += title + ":  " }
        return out
    }

    /// The JSON document, printed once at the end.
    public func document(_ value: JSON) {
        let text = value.rendered() + "\n"
        write(text, capturing: text)
    }

    private func write(_ text: String, capturing copy: String? = nil) {
        lock.lock()
        defer { lock.unlock() }
        // Kept up to a limit: more than a control message can carry would not be sent anyway (a day's test with
        // 0.1 s intervals prints about 70 MB).
        if let copy, captured != nil, captured!.utf8.count < Self.captureLimit { captured! += copy }
        guard Self.writeAll(fd, text) else {
            // The reader of our output is gone (EPIPE) or the disk is full: nothing more can be reported.
            if errno != EPIPE { Self.standardError("vmperf: error - cannot write the output: \(errorText())\n") }
            exit(1)
        }
    }

    /// A message for the user (an error, a warning): into the log file with --logfile, as iperf3 does (where a
    /// daemon's stderr goes nowhere), else on stderr.
    public func message(_ text: String) {
        guard fd != STDOUT_FILENO else { return Self.standardError(text) }
        write(text)
    }

    /// One message on stderr; if even that fails, there is nobody left to tell.
    public static func standardError(_ text: String) {
        _ = writeAll(STDERR_FILENO, text)
    }

    private static func writeAll(_ fd: Int32, _ text: String) -> Bool {
        var bytes = Array(text.utf8)[...]
        while !bytes.isEmpty {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                return false
            }
            bytes = bytes.dropFirst(n)
        }
        return true
    }
}

/// A failure the user sees as one line, `vmperf: error - <message>` (iperf3's wording), with exit status 1.
public struct Failure: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// strerror's text for an errno (the current one unless given).
public func errorText(_ code: Int32 = errno) -> String { String(cString: strerror(code)) }
