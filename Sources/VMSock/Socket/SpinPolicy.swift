import Glibc

/// How long a blocked call spins on shared memory before it sleeps on its doorbell.
///
/// Sleeping costs the sleeper a wake-up (~70 µs on these VMs, measured by `tools/bench-wakeup.sh`) and the waker a
/// system call; spinning costs a core. Spinning for as long as one sleep-and-wake costs is within 2x of the best
/// possible choice whatever the peer does (the classic ski-rental bound), so the built-in budget is 50 µs, just below
/// the wake-up cost. A process can set its own with `VMSOCK_SPIN_US` (0 sleeps at once), and a socket with
/// `spinMicroseconds`.
enum SpinPolicy {
    static let builtInMicroseconds = 50
    static let maximumMicroseconds = 1_000_000

    /// The process-wide budget: `VMSOCK_SPIN_US` if set and valid, else the built-in one.
    static let processMicroseconds: Int = {
        guard let text = getenv("VMSOCK_SPIN_US").map({ String(cString: $0) }) else { return builtInMicroseconds }
        guard let value = Int(text), value >= 0, value <= maximumMicroseconds else {
            let warning = "vmsock: ignoring VMSOCK_SPIN_US=\(text): want microseconds from 0 to \(maximumMicroseconds)\n"
            _ = warning.withCString { write(2, $0, strlen($0)) }
            return builtInMicroseconds
        }
        return value
    }()
}
