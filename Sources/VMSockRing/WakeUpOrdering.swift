import CVMSock

/// How the two halves of the need-wakeup handshake are kept in order.
///
/// The handshake is Dekker's: a writer stores its new position and then reads the peer's "waiting for data" flag
/// (ringing if it is set); a reader about to sleep stores that flag and then re-reads the position. Each side's
/// store must be visible before its own load, or both can miss each other and the reader sleeps on data that is
/// there. Someone has to pay for that store-to-load order:
///
/// - `fenced`: every position store is a full fence (an XCHG on x86). Simple, and what a peer without
///   `membarrier(2)` needs, but the fence waits for the store to reach the cache: a 64-byte write costs about
///   three times what it does without (a C ring here: 1.0 against 2.5 GB/s).
/// - `asymmetric`: position stores are plain release stores, and the side about to sleep pays instead: after
///   storing its flag it runs `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`, a full barrier on every core that
///   runs a registered process, the peer's writer included. Either the writer's store was before that barrier
///   (the sleeper's re-check sees it) or its flag read is after it (the writer sees the flag and rings). Costs
///   about 12 µs per sleep here (an inter-processor interrupt in a VM), against a wake-up's 30 to 70 µs.
///
/// A connection is `asymmetric` only when both processes registered for the barrier and said so in the
/// handshake (for vmsockd's region: in the connection slot, with the same host key); a peer in another VM (a
/// guest through ivshmem) could not be reached by it and stays `fenced`.
public enum WakeUpOrdering: Sendable, Equatable {
    case fenced
    case asymmetric

    /// Stores a ring position (ours to write) as this ordering requires.
    @inlinable @inline(__always)
    func storePosition(_ word: UnsafeMutablePointer<UInt64>, _ value: UInt64) {
        switch self {
        case .fenced: vms_store_seqcst_u64(word, value)
        case .asymmetric: vms_store_release_u64(word, value)
        }
    }
}
