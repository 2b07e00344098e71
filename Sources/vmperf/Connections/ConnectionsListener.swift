import CVMSock
import Foundation
import VMPerfSupport
import VMSock

/// The other process of `--connections`: a copy of this program (`--connections N --connections-listener`) that
/// listens on a port the kernel picks, tells it on its stdout (a pipe to us), accepts the rounds' connections one
/// after another, answers each one's byte, and exits.
final class ConnectionsListener {
    let port: UInt16
    private let process = Process()

    init(count: Int, ringSize: Int, rounds: String) throws {
        let portPipe = Pipe()
        process.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        process.arguments = [
            "--connections", String(count), "--connections-listener", "--ring-size", String(ringSize), "--connection-rounds", rounds,
        ]
        process.standardInput = FileHandle(forReadingAtPath: "/dev/null")
        process.standardOutput = portPipe
        do {
            try process.run()
        } catch {
            throw Failure("unable to start the listener process (\(process.executableURL!.path)): \(error)")
        }
        try? portPipe.fileHandleForWriting.close()
        // One line, the port; end of file first means it failed (its message is on stderr). A listener that
        // says nothing for 10 s is stuck: we give up on it rather than wait for ever.
        var text = ""
        let deadline = Date().addingTimeInterval(10)
        while !text.hasSuffix("\n") {
            var pfd = pollfd(fd: portPipe.fileHandleForReading.fileDescriptor, events: Int16(POLLIN), revents: 0)
            let left = Int32(max(0, deadline.timeIntervalSinceNow * 1000))
            if poll(&pfd, 1, left) <= 0 {  // nothing yet, or a signal
                if Date() >= deadline { break }
                continue
            }
            let data = portPipe.fileHandleForReading.availableData
            if data.isEmpty { break }
            text += String(decoding: data, as: UTF8.self)
        }
        guard let port = UInt16(text.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            if process.isRunning { process.terminate() }
            process.waitUntilExit()
            throw Failure("the listener process did not start (exit status \(process.terminationStatus))")
        }
        self.port = port
    }

    /// Waits (up to 10 s) for the listener to exit after the last round; fails when it did not exit cleanly.
    func finish() throws {
        let deadline = Date().addingTimeInterval(10)
        while process.isRunning && Date() < deadline { usleep(1000) }
        if process.isRunning {
            stop()
            throw Failure("the listener process did not exit after the last connection")
        }
        guard process.terminationStatus == 0 else {
            throw Failure("the listener process exited with status \(process.terminationStatus)")
        }
    }

    func stop() {
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
    }

    /// The listener process's side: serves `count` connections for each of `rounds` rounds, then returns.
    static func serve(count: Int, rounds: Int, ringSize: Int) throws {
        // The kernel ends us when the process that measures goes, even in the middle of an accept.
        _ = vms_set_parent_death_signal(SIGKILL)
        var options = VMSocketOptions(transport: .auto)
        options.ringSize = ringSize
        let listener: VMListener
        do {
            listener = try VMListener(host: "127.0.0.1", port: 0, options: options)
        } catch {
            throw Failure("unable to start listener for connections: \(error)")
        }
        defer { listener.close() }
        FileHandle.standardOutput.write(Data("\(listener.localAddress.port)\n".utf8))
        var byte: [UInt8] = [0]
        for index in 0..<(count * rounds) {
            do {
                let connection = try listener.accept()
                defer { connection.close() }
                guard try connection.read(upTo: 1).count == 1 else { throw Failure("the connector sent nothing") }
                try connection.writeAll(byte)
                byte[0] &+= 1
            } catch {
                throw Failure("connection \(index + 1): \(error)")
            }
        }
    }
}
