import CVMSock
import Glibc
import VMSock

/// How a C entry point reports a failure, as POSIX calls do: errno set, -1 (or NULL) returned, and the message
/// kept for `vmsock_last_error()` in the calling thread. Nothing is printed.
public enum Errno {
    /// Sets errno to the error's code and keeps its message for the thread.
    @inline(never)  // the failure path stays out of the inlined data path
    public static func record(_ error: VMSockError) {
        var message = error.message
        message.withUTF8 { text in
            text.withMemoryRebound(to: CChar.self) { vms_last_error_set($0.baseAddress, $0.count) }
        }
        Glibc.errno = error.code
    }

    /// Runs `body`; on failure records the error and returns -1.
    @inlinable @inline(__always)
    public static func returning(_ body: () throws(VMSockError) -> Int) -> Int {
        do throws(VMSockError) { return try body() } catch {
            record(error)
            return -1
        }
    }

    /// `returning` for calls whose C result is an int.
    @inlinable @inline(__always)
    public static func returning32(_ body: () throws(VMSockError) -> Int32) -> Int32 {
        do throws(VMSockError) { return try body() } catch {
            record(error)
            return -1
        }
    }

    /// What `vmsock_last_error()` returns: this thread's last message ("" before any).
    public static var lastMessage: UnsafePointer<CChar> { vms_last_error_get() }
}
