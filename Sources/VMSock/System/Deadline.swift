/// The point on the monotonic clock by which a wait must end, or never. Every bounded wait in the library keeps
/// one, made when the wait starts, so that a wait interrupted and resumed (EINTR, a spurious wake-up) never
/// stretches its bound.
struct Deadline: Sendable, Equatable {
    /// CLOCK_MONOTONIC nanoseconds; `Int64.max` for never.
    let nanoseconds: Int64

    static let never = Deadline(nanoseconds: .max)

    /// `timeout` nanoseconds from now; a negative timeout means never.
    static func after(nanoseconds timeout: Int64) -> Deadline {
        timeout < 0 ? .never : Deadline(nanoseconds: monotonicNanos() &+ timeout)
    }

    /// `timeout` milliseconds from now; a negative timeout (as poll takes it) means never.
    static func after(milliseconds timeout: Int32) -> Deadline {
        after(nanoseconds: timeout < 0 ? -1 : Int64(timeout) * 1_000_000)
    }

    var isNever: Bool { nanoseconds == .max }

    var hasPassed: Bool { !isNever && monotonicNanos() >= nanoseconds }

    /// The time left as poll(2) takes it: -1 for never, milliseconds rounded up (a wait never ends early), and
    /// nil once the deadline has passed.
    var pollTimeout: Int32? {
        if isNever { return -1 }
        let left = nanoseconds - monotonicNanos()
        return left <= 0 ? nil : Int32(clamping: (left + 999_999) / 1_000_000)
    }

    /// The time left, for an async wait: nil for never, zero once passed.
    var remaining: Duration? {
        isNever ? nil : .nanoseconds(max(0, nanoseconds - monotonicNanos()))
    }
}
