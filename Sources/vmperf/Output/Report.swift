import Foundation

/// Where the human-readable lines and the JSON document go: stdout, or `--logfile` (appended, as iperf3 does).
final class Report: @unchecked Sendable {  // lines come from one thread at a time: the interval timer or the main thread
    private let handle: FileHandle
    private let lock = NSLock()
    let json: Bool

    init(logfile: String?, json: Bool) throws {
        self.json = json
        guard let logfile else {
            handle = FileHandle.standardOutput
            return
        }
        if !FileManager.default.fileExists(atPath: logfile) {
            guard FileManager.default.createFile(atPath: logfile, contents: nil) else {
                throw Failure("unable to open log file \(logfile): cannot create it (check the directory and permissions)")
            }
        }
        guard let opened = FileHandle(forWritingAtPath: logfile) else {
            throw Failure("unable to open log file \(logfile) for writing (check its permissions)")
        }
        opened.seekToEndOfFile()
        handle = opened
    }

    /// A human-readable line; nothing in JSON mode (the document carries everything).
    func line(_ text: String = "") {
        guard !json else { return }
        write(text + "\n")
    }

    /// The JSON document, printed once at the end.
    func document(_ value: JSON) {
        write(value.rendered() + "\n")
    }

    private func write(_ text: String) {
        lock.lock()
        defer { lock.unlock() }
        handle.write(Data(text.utf8))
    }
}

/// A failure the user sees as one line, `vmperf: error - <message>` (iperf3's wording), with exit status 1.
struct Failure: Error, CustomStringConvertible {
    let message: String
    init(_ message: String) { self.message = message }
    var description: String { message }
}
