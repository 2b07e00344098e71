import Glibc

/// How long a blocked call spins on shared memory before it sleeps on its doorbell.
///
/// Sleeping costs the sleeper a wake-up and the waker a system call; spinning costs a core. A 64-byte round trip in
/// which every wait sleeps takes 57 µs here (`tools/bench.sh`, "spin 0 µs": two wake-ups, ~29 µs each; up to ~70 µs
/// has been measured on this machine kind), against 0.33 µs when both sides spin. Spinning for about as long as a
/// sleep-and-wake costs is within 2x of the best choice whatever the peer does (the ski-rental bound), so the
/// built-in budget is 50 µs: between the two wake-up costs seen. A process can set its own with `VMSOCK_SPIN_US` (0 sleeps at once), and a socket with
/// `spinMicroseconds`.
///
/// The spin yields the core (`sched_yield`) every 64 turns. With more busy threads than cores (both ends reading
/// and writing at once on 2 cores), a pure spin starves the very thread it waits for: 256 MiB each way through a
/// 4 KiB ring took 8.7 s with a 50 µs pure spin, 28 s with 200 µs, and 2.6 s with the yielding spin. With a core
/// each, the yield returns at once and the 64-byte round trip stays at 0.3 µs (release build, the former `vmsock-demo`).
enum SpinPolicy {
    static let builtInMicroseconds = 50
    static let maximumMicroseconds = 1_000_000

    /// The process-wide budget: `VMSOCK_SPIN_US` if set and valid, else the built-in one.
    static let processMicroseconds: Int = {
        guard let text = Sys.setting("VMSOCK_SPIN_US") else { return builtInMicroseconds }
        guard let value = Int(text), value >= 0, value <= maximumMicroseconds else {
            let warning = "vmsock: ignoring VMSOCK_SPIN_US=\(text): want microseconds from 0 to \(maximumMicroseconds)\n"
            Sys.writeToStandardError(warning)
            return builtInMicroseconds
        }
        return value
    }()

    /// The same budget in nanoseconds.
    static var processNanoseconds: Int64 { Int64(processMicroseconds) * 1000 }
}
