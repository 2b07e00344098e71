import CLibevent

/// The event library vmsock's loop is built on (Debian libevent-dev 2.1). The loop itself arrives with the
/// event-loop issue; this proves at build and test time that libevent and libevent_pthreads link.
public enum Libevent {
    /// The linked libevent's version string, e.g. "2.1.12-stable".
    public static var version: String { String(cString: event_get_version()) }

    /// Turns on libevent's pthreads locking, so event bases may be touched from several threads. Idempotent.
    /// - Returns: false when libevent could not set up its locks.
    @discardableResult
    public static func enableThreads() -> Bool { evthread_use_pthreads() == 0 }
}
