import CLibevent
import Glibc

/// The event library vmsock's loop is built on (Debian libevent-dev 2.1), and what we tell it once per process.
public enum Libevent {
    /// The linked libevent's version string, e.g. "2.1.12-stable".
    public static var version: String { String(cString: event_get_version()) }

    /// Turns on libevent's pthreads locking, so event bases may be touched from several threads, and routes its
    /// messages through ours (see `routeMessages`). Idempotent.
    /// - Returns: false when libevent could not set up its locks.
    @discardableResult
    public static func enableThreads() -> Bool {
        routeMessages
        return evthread_use_pthreads() == 0
    }

    /// libevent prints "[warn]" and "[err]" lines to stderr by itself, and a library must not. Its messages are
    /// dropped unless `VMSOCK_DEBUG=1`, when they go to stderr prefixed "vmsock: libevent". Its fatal errors end
    /// the process whatever the callback does (`event_exit` calls exit after it): the callback only says so in
    /// words, and `EventLoop.init` checks beforehand for the one such error a user can cause (no descriptors).
    private static let routeMessages: Void = {
        event_set_log_callback { severity, message in
            guard Libevent.printsMessages, let message else { return }
            let level = severity >= EVENT_LOG_ERR ? "error" : severity >= EVENT_LOG_WARN ? "warning" : "note"
            Sys.writeToStandardError("vmsock: libevent \(level): \(String(cString: message))\n")
        }
        event_set_fatal_callback { code in
            Sys.writeToStandardError("vmsock: libevent failed beyond recovery (error \(code)) and ends the process\n")
        }
    }()

    private static let printsMessages: Bool = Sys.setting("VMSOCK_DEBUG") == "1"
}
