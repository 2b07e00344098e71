import CVMSock

/// The one page the two `--paper` processes share: a memfd the parent creates and the peer inherits.
///
/// ```
///  offset  size  written by   field
///  ------  ----  -----------  ---------------------------------------------------------------------------
///       0     8  parent       magic "vmPaper" and a 1 (the peer checks it: it is a separately started process)
///       8     4  parent       layout version
///      12     4  parent       parent pid (the peer checks getppid() against it)
///      16     4  parent       CPU to pin the peer to, or -1: do not pin                    } set before the
///      20     4  parent       runs per row                                                 } peer starts
///      24     8  parent       timed round trips per run                                   }
///      32     4  parent       warm-up round trips per row                                  }
///      36     4  peer         how pinning the peer went: 0, or the errno (before the hello barrier)
///      40     4  parent       1 when both processes are pinned (before the second barrier)
///      44     4  parent       task: the row the next barrier starts (PaperTask), or quit } before each
///      48     4  parent       TCP or vmsock port the peer connects to                   } task barrier
///      52    12  -            zero
///      64     4  peer         failed: 1 when the peer gave up; the message says why
///      68    60  -            zero
///     128   256  peer         message (UTF-8, NUL-terminated)
///     384   128  parent       arrive[0]: the last barrier the parent reached (u64)
///     512   128  peer         arrive[1]: the same for the peer
///     640   128  both         turn (Raw): whose turn it is, 0 or 1 (u32)
///     768   640  both         semaphore 0, the parent's (Sync, Sync1k): see `Semaphore` below
///    1408   640  both         semaphore 1, the peer's
///    2048   128  both         counter (Sync, Sync1k): the shared integer each turn adds one to (u64)
///    2176  1024  turn owner   buffer (Sync1k: the 1000 bytes of a turn)
///    3200   896  -            zero
/// ```
///
/// Each hot word has 128 bytes of its own (two cache lines: adjacent-line prefetch would otherwise drag a
/// neighbour's line along), so that what one side spins on is not invalidated by the other side's unrelated stores.
enum PaperLayout {
    /// "vmPaper" and a 1, read as a little-endian 64-bit word.
    static let magic: UInt64 = 0x0172_6570_6150_6d76
    static let version: UInt32 = 1
    static let size = 4096
    static let messageCapacity = 256
    static let bufferCapacity = 1024

    enum Offset {
        static let magic = 0
        static let version = 8
        static let parentPid = 12
        static let peerCPU = 16
        static let runs = 20
        static let iterations = 24
        static let warmup = 32
        static let peerPinResult = 36
        static let pinned = 40
        static let task = 44
        static let port = 48
        static let failed = 64
        static let message = 128
        static let arrive = 384  // + 128 * side
        static let turn = 640
        static let semaphore = 768  // + Semaphore.size * index
        static let counter = 2048
        static let buffer = 2176
    }

    /// One semaphore: Lamport's bakery words for the two processes, and the value they guard.
    ///
    /// ```
    ///  offset  size  written by  field
    ///       0     4  parent      choosing[0] (u32)
    ///     128     4  peer        choosing[1]
    ///     256     8  parent      number[0], the parent's ticket (u64)
    ///     384     8  peer        number[1]
    ///     512     4  lock owner  value (u32)
    /// ```
    enum Semaphore {
        static let choosing = 0  // + 128 * side
        static let number = 256  // + 128 * side
        static let value = 512
        static let size = 640
    }
}

/// What the next barrier starts. The raw values travel through the page.
enum PaperTask: UInt32 {
    case raw = 1, sync, sync1k, tcp, vmsock
    case quit = 255

    /// The rows of the table, in the paper's order, ours last.
    static let rows: [PaperTask] = [.raw, .sync, .sync1k, .tcp, .vmsock]

    var name: String {
        switch self {
        case .raw: "Raw"
        case .sync: "Sync"
        case .sync1k: "Sync1k"
        case .tcp: "TCP"
        case .vmsock: "vmsock"
        case .quit: "quit"
        }
    }
}

/// Typed pointers into the shared page. A plain value (a pointer), so the hot loops pay no ARC for it.
struct PaperPage {
    let base: UnsafeMutableRawPointer

    @inline(__always) func u32(_ offset: Int) -> UnsafeMutablePointer<UInt32> {
        (base + offset).assumingMemoryBound(to: UInt32.self)
    }

    @inline(__always) func u64(_ offset: Int) -> UnsafeMutablePointer<UInt64> {
        (base + offset).assumingMemoryBound(to: UInt64.self)
    }

    // MARK: Hot words

    @inline(__always) func arrive(_ side: Int) -> UnsafeMutablePointer<UInt64> { u64(PaperLayout.Offset.arrive + 128 * side) }
    var turn: UnsafeMutablePointer<UInt32> { u32(PaperLayout.Offset.turn) }
    func semaphore(_ index: Int) -> BakerySemaphore {
        BakerySemaphore(base: base + PaperLayout.Offset.semaphore + PaperLayout.Semaphore.size * index)
    }
    var counter: UnsafeMutablePointer<UInt64> { u64(PaperLayout.Offset.counter) }
    var buffer: UnsafeMutableRawPointer { base + PaperLayout.Offset.buffer }
    var failed: UnsafeMutablePointer<UInt32> { u32(PaperLayout.Offset.failed) }

    // MARK: Set-up words (plain: the barrier orders them)

    var magic: UInt64 { u64(PaperLayout.Offset.magic).pointee }
    var version: UInt32 { u32(PaperLayout.Offset.version).pointee }
    var parentPid: pid_t { pid_t(bitPattern: u32(PaperLayout.Offset.parentPid).pointee) }
    var peerCPU: Int32 { Int32(bitPattern: u32(PaperLayout.Offset.peerCPU).pointee) }
    var runs: Int { Int(u32(PaperLayout.Offset.runs).pointee) }
    var iterations: Int { Int(u64(PaperLayout.Offset.iterations).pointee) }
    var warmup: Int { Int(u32(PaperLayout.Offset.warmup).pointee) }

    var peerPinResult: Int32 {
        get { Int32(bitPattern: u32(PaperLayout.Offset.peerPinResult).pointee) }
        nonmutating set { u32(PaperLayout.Offset.peerPinResult).pointee = UInt32(bitPattern: newValue) }
    }

    var pinned: Bool {
        get { u32(PaperLayout.Offset.pinned).pointee != 0 }
        nonmutating set { u32(PaperLayout.Offset.pinned).pointee = newValue ? 1 : 0 }
    }

    var task: PaperTask? {
        get { PaperTask(rawValue: u32(PaperLayout.Offset.task).pointee) }
        nonmutating set { u32(PaperLayout.Offset.task).pointee = newValue?.rawValue ?? 0 }
    }

    var port: UInt16 {
        get { UInt16(truncatingIfNeeded: u32(PaperLayout.Offset.port).pointee) }
        nonmutating set { u32(PaperLayout.Offset.port).pointee = UInt32(newValue) }
    }

    /// The parent fills in the set-up words of a zeroed page before it starts the peer.
    func initialize(parentPid: pid_t, peerCPU: Int32, runs: Int, iterations: Int, warmup: Int) {
        base.initializeMemory(as: UInt8.self, repeating: 0, count: PaperLayout.size)
        u32(PaperLayout.Offset.version).pointee = PaperLayout.version
        u32(PaperLayout.Offset.parentPid).pointee = UInt32(bitPattern: parentPid)
        u32(PaperLayout.Offset.peerCPU).pointee = UInt32(bitPattern: peerCPU)
        u32(PaperLayout.Offset.runs).pointee = UInt32(runs)
        u64(PaperLayout.Offset.iterations).pointee = UInt64(iterations)
        u32(PaperLayout.Offset.warmup).pointee = UInt32(warmup)
        u32(PaperLayout.Offset.peerPinResult).pointee = UInt32(bitPattern: -1)
        // The magic last: a page with the magic is a page set up in full.
        vms_store_seqcst_u64(u64(PaperLayout.Offset.magic), PaperLayout.magic)
    }

    // MARK: The peer's failure

    /// Why the peer gave up, written by the peer before it sets `failed` and exits.
    var message: String {
        let bytes = UnsafeRawBufferPointer(start: base + PaperLayout.Offset.message, count: PaperLayout.messageCapacity)
        return String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
    }

    func fail(_ text: String) {
        let bytes = Array(text.utf8.prefix(PaperLayout.messageCapacity - 1)) + [0]
        (base + PaperLayout.Offset.message).copyMemory(from: bytes, byteCount: bytes.count)
        vms_store_seqcst_u32(failed, 1)
    }
}
