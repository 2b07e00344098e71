import Glibc
import VMPerfSupport

/// The second process of `--paper`: a copy of this executable started with `--paper-peer fd=N`.
enum PeerProcess {
    /// Starts `/proc/self/exe --paper-peer fd=N`, where N is the shared page's memfd (inherited: it has no
    /// close-on-exec). Its stdout goes to /dev/null: only the parent writes the report (and -J must stay one JSON
    /// document); its stderr is ours.
    static func spawn(sharing fd: Int32) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        let words: [String] = ["vmperf", PaperBenchmark.peerOption, "fd=\(fd)"]
        let arguments = words.map { strdup($0) }
        defer { arguments.forEach { free($0) } }
        var argv = arguments + [nil]
        var pid: pid_t = 0
        let result = posix_spawn(&pid, "/proc/self/exe", &actions, nil, &argv, environ)
        guard result == 0 else {
            throw Failure("--paper: could not start the peer process (/proc/self/exe): \(String(cString: strerror(result)))")
        }
        return pid
    }

    /// Waits up to `seconds` for the peer to exit after it was told to quit, and kills it if it does not.
    /// `reaped` is its status when a watchdog reaped it already. Returns the wait status.
    @discardableResult
    static func finish(_ pid: pid_t, reaped: Int32?, seconds: Int = 5) -> Int32 {
        if let reaped { return reaped }
        var status: Int32 = 0
        for _ in 0..<(seconds * 1000) {
            if waitpid(pid, &status, WNOHANG) == pid { return status }
            usleep(1000)
        }
        return kill(pid, reaped: nil)
    }

    /// Kills the peer (SIGKILL: it may be in a busy wait) and reaps it, unless a watchdog reaped it already.
    @discardableResult
    static func kill(_ pid: pid_t, reaped: Int32?) -> Int32 {
        if let reaped { return reaped }
        _ = Glibc.kill(pid, SIGKILL)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return status
    }

    /// "exited with status 1", "was killed by signal 9": a wait status in words (WIFEXITED and friends are macros
    /// Swift cannot import).
    static func describe(_ status: Int32) -> String {
        let signal = status & 0x7f
        if signal == 0 { return "exited with status \((status >> 8) & 0xff)" }
        return "was killed by signal \(signal) (\(String(cString: strsignal(signal))))"
    }
}
