// What the command-line tools (vmperf, vmcat) take from the library besides the socket API: the library's own
// ring-size rule and its own clock, so that a tool agrees with the library instead of keeping a copy of either.

extension VMSocketOptions {
    /// Checks a ring size before it goes into `ringSize`: the check `VMListener` and `VMSocket.connect` make, so a
    /// command-line tool can reject a bad size while it parses its arguments, before anything is set up.
    ///
    /// - Parameter size: bytes of one ring.
    /// - Throws: `VMSockError` with `EINVAL`, its message naming the valid range, unless `size` is a power of two
    ///   from 4 KiB to 64 MiB.
    public static func validateRingSize(_ size: Int) throws(VMSockError) {
        try SharedRegion.checkCapacity(size)
    }
}

/// The clock the library's deadlines and timeouts run on, for callers that time what they do with it.
public enum MonotonicClock {
    /// Nanoseconds since an arbitrary point in the past (boot), never going back and not moved by changes to the
    /// wall clock. Read through the vDSO: no system call. The corresponding C call is
    /// `clock_gettime(CLOCK_MONOTONIC)`.
    @inlinable
    public static func nanoseconds() -> Int64 {
        monotonicNanos()
    }
}
