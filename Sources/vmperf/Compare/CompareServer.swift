import Foundation
import Glibc
import VMPerfSupport

/// The server `--compare` runs against: a copy of this program, `vmperf -s`, on a free port. Its standard input
/// is a pipe from us; when we exit, however we exit, the pipe closes and it ends too.
final class CompareServer {
    let port: Int
    private let process = Process()
    private let lifeline = Pipe()

    init(options: Options) throws {
        port = try Self.freePort()
        process.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        var arguments = ["-s", "-p", String(port), "--exit-on-stdin-eof"]
        arguments += ["--ring-size", String(options.effectiveRingSize)]
        process.arguments = arguments
        process.standardInput = lifeline
        process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        do {
            try process.run()
        } catch {
            throw Failure("unable to start the comparison's server (\(process.executableURL!.path)): \(error)")
        }
        try awaitListening()
    }

    func stop() {
        try? lifeline.fileHandleForWriting.close()
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
    }

    /// Knocks on the server's Unix socket until it answers (it opens that after its vmsock listener).
    private func awaitListening() throws {
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            guard process.isRunning else { throw Failure("the comparison's server exited at start (status \(process.terminationStatus))") }
            if let probe = try? UnixStream.connect(port: port) {
                probe.close()
                return
            }
            usleep(20_000)
        }
        stop()
        throw Failure("the comparison's server did not start listening within 10 s")
    }

    /// A TCP port nobody uses now: bound to port 0 and released (the server binds it with SO_REUSEADDR).
    private static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = in_addr_t(INADDR_LOOPBACK).bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard ok else { throw Failure("unable to find a free port: \(errorText())") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}
