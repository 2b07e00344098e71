import CVMSock
import Glibc
import VMSockRing

/// The heavy half of `WakeUpOrdering.asymmetric`: `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`.
enum Membarrier {
    /// Whether this process registered for the global expedited barrier (once, at first use), so that a peer's
    /// barrier reaches our cores and ours can be used. False where the kernel or a seccomp filter refuses it, or
    /// when `VMSOCK_FENCED=1` asks for fenced connections (for measuring the difference).
    static let isRegistered: Bool = {
        if Sys.setting("VMSOCK_FENCED") == "1" { return false }
        // Refused (ENOSYS, EINVAL, EPERM: an old kernel or a seccomp filter): this process's connections are fenced.
        return (try? Sys.registerGlobalMembarrier()) != nil
    }()

    /// What this process offers in a handshake.
    static var offered: WakeUpOrdering { isRegistered ? .asymmetric : .fenced }

    /// A full barrier on every core running a registered process (`Sys.globalMembarrier`).
    @inline(__always)
    static func barrier() { Sys.globalMembarrier() }
}
