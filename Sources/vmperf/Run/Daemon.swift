import Foundation
import VMPerfSupport

/// `-D` and `-I` for a server, as iperf3 takes them: into the background (daemon(3): a child of init in a session
/// of its own, standard streams on /dev/null, so only --logfile keeps its output and its errors; it stays in the
/// directory it was started in, as iperf3's, so that a relative -I or --logfile means what it meant), and a file
/// with its pid, removed again when it ends: at exit, and at SIGTERM, SIGINT or SIGHUP.
enum Daemon {
    /// The pid file's path, for the exit and signal handlers (which can capture nothing); set once, before them.
    nonisolated(unsafe) private static var pidPath: UnsafeMutablePointer<CChar>?

    /// Call first, before anything starts a thread: a fork keeps only the calling one. A daemon also closes
    /// every descriptor it inherited but `keeping` (the log file): one end of a pipe kept open would make its
    /// starter wait for ever (`x=$(vmperf -s -D)`, or a test harness that watches for the end of its child).
    static func start(daemon: Bool, pidFile: String?, keeping: Int32) throws {
        if let pidFile { try checkNoOther(pidFile) }  // while the terminal still hears us
        if daemon {
            guard Glibc.daemon(1, 0) == 0 else { throw Failure("unable to run as a daemon (-D): \(errorText())") }
            closeInherited(keeping: keeping)
        }
        guard let pidFile else { return }
        try write(pidFile)
        for signalNumber in [SIGTERM, SIGINT, SIGHUP] {
            signal(signalNumber) { number in
                Daemon.removePidFile()
                _exit(128 + number)
            }
        }
    }

    private static func closeInherited(keeping: Int32) {
        let listed = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        for fd in listed.compactMap({ Int32($0) }) where fd > 2 && fd != keeping {
            close(fd)  // the listing's own descriptor is among them, already closed: EBADF, nothing else
        }
    }

    /// Fails if the file names a process that is still running (another server, as iperf3 says).
    private static func checkNoOther(_ path: String) throws {
        let existing = open(path, O_RDONLY | O_CLOEXEC)
        if existing >= 0 {
            var bytes = [UInt8](repeating: 0, count: 32)
            let count = bytes.withUnsafeMutableBytes { read(existing, $0.baseAddress, $0.count) }
            close(existing)
            let text = String(decoding: bytes.prefix(max(0, count)), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            if let pid = Int32(text), pid > 0, pid != getpid(), kill(pid, 0) == 0 || errno == EPERM {
                throw Failure("another instance of vmperf appears to be running (pid \(pid) in \(path)); stop it or name another file with -I")
            }
        } else if errno != ENOENT {  // there, but not ours to read: it may be a live server's
            throw Failure("unable to read the pid file \(path) (-I): \(errorText()); name another file")
        }
    }

    /// Writes our pid. The file is removed at exit from the moment it is ours (opened), so that a write that
    /// fails half-way leaves nothing either; never before, so that a failed open cannot remove another's.
    private static func write(_ path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw Failure("unable to write the pid file \(path) (-I): \(errorText())") }
        pidPath = strdup(path)
        atexit { Daemon.removePidFile() }
        let text = Array("\(getpid())\n".utf8)
        let written = text.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        close(fd)
        guard written == text.count else { throw Failure("unable to write the pid file \(path) (-I): \(errorText())") }
    }

    /// Async-signal-safe: one unlink of a path made before the handlers were set.
    private static func removePidFile() {
        if let pidPath { unlink(pidPath) }
    }
}
