import CVMSock
import Glibc
import VMSock

/// Why a side stopped waiting for the other.
enum Stop: Error, CustomStringConvertible {
    /// The peer process is gone; the wait status says how it ended (parent side).
    case peerExited(Int32)
    /// The peer gave up and wrote why into the page (parent side).
    case peerFailed
    /// The other side made no progress for `Watchdog.patience` seconds.
    case noProgress
    /// The parent is gone (peer side).
    case parentGone

    var description: String {
        switch self {
        case .peerExited(let status): "the peer process \(PeerProcess.describe(status))"
        case .peerFailed: "the peer failed"
        case .noProgress: "the other process made no progress for \(Watchdog.patience) s"
        case .parentGone: "the parent process is gone"
        }
    }
}

/// Keeps a busy wait from spinning forever when the other process is dead, failed or stuck.
///
/// It runs once every 2^16 spins of a wait: a healthy turn takes a few dozen spins, so the measured loops only
/// pay an increment and a test per spin, and the system calls here happen only when the other side is already
/// late (descheduled, or gone).
struct Watchdog {
    let page: PaperPage
    /// 0 in the parent, 1 in the peer.
    let me: Int
    /// The child's pid (parent side) or the parent's (peer side).
    let otherPid: pid_t
    /// The child's wait status once this watchdog has reaped it (parent side).
    private(set) var peerStatus: Int32?
    private var waitStarted: Int64 = 0

    /// Seconds one wait may last before the other side counts as stuck: far above any healthy turn, TCP included.
    static let patience: Int64 = 20

    init(page: PaperPage, me: Int, otherPid: pid_t) {
        self.page = page
        self.me = me
        self.otherPid = otherPid
    }

    /// Counts one spin of a wait and looks at the other side every 2^16 of them.
    @inline(__always) mutating func spun(_ spins: inout Int) throws(Stop) {
        spins &+= 1
        if spins & 0xFFFF == 0 { try check(spins) }
    }

    @inline(never) mutating func check(_ spins: Int) throws(Stop) {
        try checkPeer()
        // The other side is late: it may be waiting for this very CPU (unpinned, one CPU, or a busy machine).
        // Without this, each turn would wait out a whole scheduler time slice.
        sched_yield()
        let now = MonotonicClock.nanoseconds()
        if spins == 1 << 16 {
            waitStarted = now
        } else if now - waitStarted > Self.patience * 1_000_000_000 {
            throw .noProgress
        }
    }

    /// Throws when the other process is gone or has given up.
    mutating func checkPeer() throws(Stop) {
        if me == 1 {
            // Normally the parent-death signal has killed us already; this covers a parent gone before we set it.
            if getppid() != otherPid { throw .parentGone }
            return
        }
        if vms_load_seqcst_u32(page.failed) != 0 { throw .peerFailed }
        if peerStatus == nil {
            var status: Int32 = 0
            if waitpid(otherPid, &status, WNOHANG) == otherPid { peerStatus = status }
        }
        if let peerStatus { throw .peerExited(peerStatus) }
    }
}

/// One process's side of the benchmarks: which side it is, the shared page, its barrier count, its watchdog.
/// Side 0 is the parent, which starts the rows and times the runs; side 1 is the peer.
struct Side {
    let me: Int
    let page: PaperPage
    var watch: Watchdog
    /// Barriers passed so far; both sides pass the same sequence of barriers.
    private var epoch: UInt64 = 0

    init(me: Int, page: PaperPage, otherPid: pid_t) {
        self.me = me
        self.page = page
        watch = Watchdog(page: page, me: me, otherPid: otherPid)
    }

    var other: Int { 1 - me }

    /// Waits until the other side has reached the same barrier. Everything either side wrote before it is visible
    /// to the other after it (a sequentially consistent store of our count, an acquire load of theirs).
    mutating func barrier() throws(Stop) {
        epoch &+= 1
        vms_store_seqcst_u64(page.arrive(me), epoch)
        var spins = 0
        while vms_load_acquire_u64(page.arrive(other)) < epoch {
            vms_cpu_relax()
            try watch.spun(&spins)
        }
    }

    /// Busy-waits until `word` holds `value` (the paper's `while (turn != my_id);`). A bare spin, as in the paper:
    /// with a PAUSE in it, Raw measured about 20% slower here.
    @inline(__always) mutating func wait(_ word: UnsafeMutablePointer<UInt32>, equals value: UInt32) throws(Stop) {
        var spins = 0
        while vms_load_acquire_u32(word) != value { try watch.spun(&spins) }
    }
}

