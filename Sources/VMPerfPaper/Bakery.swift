import CVMSock

/// A counting semaphore in shared memory for the two processes: Dijkstra's P (`wait`) and V (`signal`), its value
/// guarded by Lamport's bakery lock, as in the paper's Sync benchmark (Fig. 2b). No hardware read-modify-write
/// and no library: only loads and stores.
///
/// The bakery algorithm is correct only if no access is reordered with another. x86 lets a load pass an earlier
/// store to another address, which would let both sides see the other's `number` as 0 and enter together; so every
/// access to the lock's words is sequentially consistent (stores are XCHG on x86, loads plain MOV).
struct BakerySemaphore {
    let base: UnsafeMutableRawPointer

    @inline(__always) private func choosing(_ side: Int) -> UnsafeMutablePointer<UInt32> {
        (base + PaperLayout.Semaphore.choosing + 128 * side).assumingMemoryBound(to: UInt32.self)
    }

    @inline(__always) private func number(_ side: Int) -> UnsafeMutablePointer<UInt64> {
        (base + PaperLayout.Semaphore.number + 128 * side).assumingMemoryBound(to: UInt64.self)
    }

    @inline(__always) private var value: UnsafeMutablePointer<UInt32> {
        (base + PaperLayout.Semaphore.value).assumingMemoryBound(to: UInt32.self)
    }

    /// Value 0, lock free. Only while neither side uses the semaphore (the parent, before it starts a row).
    func reset() {
        for side in 0...1 {
            vms_store_seqcst_u32(choosing(side), 0)
            vms_store_seqcst_u64(number(side), 0)
        }
        vms_store_seqcst_u32(value, 0)
    }

    /// Lamport's bakery lock for two: take a ticket one above the other's, then wait while the other is choosing
    /// or holds a smaller ticket (ties go to side 0).
    @inline(__always) private func lock(_ me: Int, _ watch: inout Watchdog) throws(Stop) {
        let other = 1 - me
        vms_store_seqcst_u32(choosing(me), 1)
        // max(number[0], number[1]) + 1; ours is 0 outside the lock.
        let ticket = vms_load_seqcst_u64(number(other)) &+ 1
        vms_store_seqcst_u64(number(me), ticket)
        vms_store_seqcst_u32(choosing(me), 0)
        var spins = 0
        while vms_load_seqcst_u32(choosing(other)) != 0 { try watch.spun(&spins) }
        while true {
            let theirs = vms_load_seqcst_u64(number(other))
            if theirs == 0 || theirs > ticket || (theirs == ticket && me < other) { return }
            try watch.spun(&spins)
        }
    }

    @inline(__always) private func unlock(_ me: Int) {
        vms_store_seqcst_u64(number(me), 0)
    }

    /// P: waits until the value is positive and takes one.
    @inline(__always) func wait(_ me: Int, _ watch: inout Watchdog) throws(Stop) {
        var spins = 0
        while true {
            // Look without the lock first: only the other side's V can make the value positive, and taking the
            // lock just to look would slow that V down.
            while vms_load_seqcst_u32(value) == 0 { try watch.spun(&spins) }
            try lock(me, &watch)
            let current = vms_load_seqcst_u32(value)
            if current > 0 {
                vms_store_seqcst_u32(value, current - 1)
                unlock(me)
                return
            }
            unlock(me)
        }
    }

    /// V: adds one to the value.
    @inline(__always) func signal(_ me: Int, _ watch: inout Watchdog) throws(Stop) {
        try lock(me, &watch)
        vms_store_seqcst_u32(value, vms_load_seqcst_u32(value) &+ 1)
        unlock(me)
    }
}
