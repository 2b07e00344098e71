import CVMSock
import Glibc
import VMSockRing

/// An error from a vmsock call: the errno a TCP programmer would get, and a message that says what happened.
///
/// Match on `code` the way you would match on errno after a BSD socket call:
/// ```swift
/// do { _ = try VMSocket.connect(host: "db.internal", port: 5432) }
/// catch let error as VMSockError where error.code == ECONNREFUSED { ... }
/// ```
public struct VMSockError: Error, CustomStringConvertible, Sendable {
    /// The errno value: ECONNREFUSED, EAGAIN, ETIMEDOUT, EPIPE, ECONNRESET, EPROTO, EADDRINUSE, EINVAL, EBADF, ...
    public let code: Int32
    /// What happened, in words, without the errno name.
    public let message: String
    /// When a shared-memory connect failed: the reason `auto` falls back to TCP (set where the failure is known).
    var fallback: FallbackReason?

    public init(code: Int32, _ message: String) {
        self.code = code
        self.message = message
    }

    func because(_ reason: FallbackReason) -> VMSockError {
        var copy = self
        copy.fallback = reason
        return copy
    }

    /// An error from a failed system call: `what` failed, with the errno's text.
    static func system(_ what: String, errno code: Int32 = errno) -> VMSockError {
        VMSockError(code: code, "\(what): \(String(cString: strerror(code)))")
    }

    /// The peer broke the ring rules or the handshake: the connection is torn down.
    static func protocolFault(_ what: String) -> VMSockError { VMSockError(code: EPROTO, what) }

    /// Whether this process ran short of something (descriptors, memory, address space, the file size limit),
    /// rather than the peer breaking a rule: a connection refused for it says "out of resources".
    var isShortOfResources: Bool { [EMFILE, ENFILE, ENOMEM, ENOSPC, EFBIG].contains(code) }

    static func protocolFault(_ violation: RingViolation) -> VMSockError {
        VMSockError(code: EPROTO, "peer broke the shared ring: \(violation)")
    }

    /// A zero-copy call's body said it used more bytes than it was given, or a negative count.
    @usableFromInline
    static func inPlaceOverrun(_ call: String, used: Int, given: Int) -> VMSockError {
        VMSockError(code: EINVAL, "\(call) body returned \(used), but it was given \(given) bytes (0...\(given) is valid)")
    }

    public var description: String { "\(message) [\(Self.name(of: code))]" }

    /// The symbolic errno name ("ECONNREFUSED"), for messages and logs; "errno N" for a number the C library
    /// does not know.
    public static func name(of code: Int32) -> String {
        guard let name = vms_errno_name(code) else { return "errno \(code)" }
        return String(cString: name)
    }
}
