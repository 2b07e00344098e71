import Synchronization
import VMSockRing

/// The checks that let a hot call skip `awaitReadable` / `awaitWritable`: the connection is in use with nothing
/// unusual about it, and the ring already has what the call needs as of the last position we checked.
///
/// Why the hot calls are inlined into the caller: at 64-byte writes a writer is bound by its stores, not its
/// instructions. Its store to the ring and its position store miss in the cache (the reader's core has the lines),
/// stores leave the core in order, and every other store queues behind them: the return addresses and saved
/// registers of each call level. A bare C ring here streams 2.2 GB/s with 64-byte messages, and 1.6 GB/s with
/// 20 more stores per message that hit the cache. Four call levels between vmperf's loop and the ring cost
/// about that. Inlined, the loop makes the ring's stores and little else.
///
/// Everything these checks send away takes the full path, which checks it all again: a shut-down, closed or
/// broken connection, a peer that stopped reading, a ring that looks full or empty from here, and every call of a
/// connection whose right to write its half can be withdrawn (`State.guarded`).
extension SharedMemoryStream {
    /// Whether `count` bytes (at least 1) can be written now, without looking at the peer's consumer position.
    @inlinable @inline(__always)
    func canWrite(_ count: Int) -> Bool {
        state.load(ordering: .relaxed) == 0 && peer.shutdownFlags & LocalHeader.peerStopsReading == 0
            && tx.cachedFreeSpace >= count
    }

    /// Whether `count` bytes (at least 1) can be read now, without looking at the peer's producer position.
    @inlinable @inline(__always)
    func canRead(_ count: Int) -> Bool {
        state.load(ordering: .relaxed) == 0 && rx.cachedAvailable >= count
    }
}
