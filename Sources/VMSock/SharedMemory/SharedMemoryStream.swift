import CVMSock
import Glibc
import Synchronization
import VMSockRing

/// The engine of a shared-memory connection: two rings, four doorbells and a liveness socket.
///
/// Threads: like a TCP socket, one thread may read while another writes. The read side (`rx`, `readArmed`) is
/// touched only by reading calls, the write side (`tx`) only by writing calls; two threads reading at once (or
/// writing at once) is not supported. Everything shared between the two sides is atomic (`state`, the options).
///
/// The hot calls (`read`, `write`, `readInPlace`, `writeInPlace`) are inlinable, so that they compile into the
/// caller's loop: a check that the ring has what the call needs, the copy, the position store. Everything else
/// (waiting, refreshing from the peer, ringing a doorbell, errors) is an ordinary call. See
/// `SharedMemoryStream+FastPath.swift` for why that matters.
@usableFromInline
final class SharedMemoryStream: StreamEngine, @unchecked Sendable {  // see "Threads" above for why this is safe
    // Dynamic exclusivity checks are off for these: the threading contract above (one reader, one writer)
    // is what keeps their accesses apart, and the checks cost two runtime calls per access on the data path.
    @usableFromInline @exclusivity(unchecked) var rx: RingConsumer
    @usableFromInline @exclusivity(unchecked) var tx: RingProducer
    @usableFromInline @exclusivity(unchecked) var readArmed = false
    @usableFromInline @exclusivity(unchecked) var writeArmed = false
    // The need-wakeup words we announce with, and the peer's announcements we have rung for (one ring each): the
    // read side's pair belongs to the reading thread, the write side's to the writing thread, like `rx` and `tx`.
    // They belong to this connection: a reopened link starts a new stream, and both sides' words from zero
    // (`LocalHeader.reopen`).
    @exclusivity(unchecked) var readWait = WaitWord()
    @exclusivity(unchecked) var writeWait = WaitWord()
    @usableFromInline @exclusivity(unchecked) var rangForPeerReader = RingMemo()
    @usableFromInline @exclusivity(unchecked) var rangForPeerWriter = RingMemo()

    private let local: LocalHeader
    @usableFromInline let peer: PeerHeader
    let link: EstablishedLink
    /// The epoll sets pollers wait on, made on first use (most connections never need them, and they cost six
    /// system calls): `read` holds our data bell and the control socket (readable when data may have arrived or
    /// the peer left), `write` our space bell and the control socket (room may have appeared, or the peer left).
    private let readinessSets = Mutex<(read: Descriptor?, write: Descriptor?)>((nil, nil))

    /// `State` bits; 0 on a connection in use with nothing unusual about it.
    @usableFromInline let state: Atomic<UInt32>
    /// Our threads that may be asleep on one of our bells: blocking calls between their announcement and its
    /// withdrawal, and armed pollers. Private memory (our own header's words are writable by a region's peer), so
    /// that `close` rings our bells only when somebody of ours may sleep on them.
    private let ownSleepers = Atomic<Int>(0)
    let waits = WaitCounters()
    private let fault = Mutex<VMSockError?>(nil)
    /// The process's fork count when this connection started (`Sys.forkCount`). A fork since means a child may hold
    /// this connection too, and may write or close it later: its link must not carry another connection then.
    private let forksAtStart = Sys.forkCount()

    let settings = EngineSettings(spinNanos: SpinPolicy.processNanoseconds)
    /// Whether we may still write our half (`link.standing`; stored last, away from the hot words).
    private let standing: Standing
    var transport: Transport { link.lease == nil ? .sharedMemory : .ivshmem }

    enum State {
        static let peerGone: UInt32 = 1 << 0
        static let closed: UInt32 = 1 << 1
        static let readShut: UInt32 = 1 << 2
        static let writeShut: UInt32 = 1 << 3
        static let broken: UInt32 = 1 << 4
        /// Set by `close` when the link may serve another connection (`mayKeepLink`, decided once, there).
        static let keepsLink: UInt32 = 1 << 5
        /// Set for the whole life of a connection whose right to write our half can be withdrawn (`Standing`): it
        /// keeps every call off the fast path, onto the full one, which checks that right first. Costs other
        /// connections nothing.
        static let guarded: UInt32 = 1 << 6
    }

    var peerCredentials: PeerCredentials? { link.peer }
    /// Whether the peer announced it waits for our data, or for room in its ring (it wants a doorbell at our next
    /// publish or consume, once per announcement).
    var peerWaits: (data: Bool, space: Bool) { (peer.isWaitingForData, peer.isWaitingForSpace) }
    var sendCapacity: Int { link.localRegion.capacity }
    var receiveCapacity: Int { link.peerRegion.capacity }
    var retransmissions: Int? { 0 }  // nothing is ever sent twice
    var congestionWindow: Int? { sendCapacity }  // all we may have written and the peer not yet read
    var waitStatistics: WaitStatistics? { waits.snapshot }

    init(_ link: EstablishedLink) throws(VMSockError) {
        self.link = link
        standing = link.standing
        state = Atomic(link.standing.canBeWithdrawn ? State.guarded : 0)
        local = LocalHeader(base: link.localRegion.base)
        peer = PeerHeader(base: link.peerRegion.base, generation: link.generation)
        tx = RingProducer(
            data: link.localRegion.data, capacity: link.localRegion.capacity, mirrored: true, local: local, peer: peer,
            ordering: link.ordering, start: link.start.produced)
        rx = RingConsumer(
            data: link.peerRegion.data, capacity: link.peerRegion.capacity, mirrored: true, local: local, peer: peer,
            ordering: link.ordering, start: link.start.consumed)
    }

    /// The read-side epoll set, made now if need be (its descriptor is -1 when it cannot be made: arming throws
    /// then). It polls readable when data may have arrived or the peer left.
    var readInterest: PollInterest {
        PollInterest(descriptor: (try? readinessSet(write: false)) ?? -1, events: Int16(POLLIN))
    }

    /// The write-side epoll set: polls readable (POLLIN) when the peer made room, shut down or left.
    var writeInterest: PollInterest {
        PollInterest(descriptor: (try? readinessSet(write: true)) ?? -1, events: Int16(POLLIN))
    }

    private func readinessSet(write: Bool) throws(VMSockError) -> Int32 {
        try readinessSets.withLock { (sets) throws(VMSockError) -> Int32 in
            if let made = write ? sets.write : sets.read { return made.raw }
            let made = try Self.epollSet(write ? link.spaceBell.fd : link.dataBell.fd, link.control.raw)
            if write { sets.write = made } else { sets.read = made }
            return made.raw
        }
    }

    /// A level-triggered epoll set that polls readable when any of `fds` does (or hangs up).
    private static func epollSet(_ fds: Int32...) throws(VMSockError) -> Descriptor {
        let set = try Sys.epollCreate()
        for fd in fds {
            let events = EPOLLIN.rawValue | EPOLLRDHUP.rawValue
            try Sys.epollControl(set.raw, EPOLL_CTL_ADD, fd, events: events, data: UInt64(UInt32(bitPattern: fd)))
        }
        return set
    }

    // MARK: Reading

    /// Waits until at least one byte is readable (or end of stream) and returns how many are, refreshing from the
    /// peer when fewer than `wanted` are known. Returns 0 at end of stream.
    @usableFromInline
    func awaitReadable(wanted: Int) throws(VMSockError) -> Int {
        var deadline: Deadline? = nil
        while true {
            let flags = state.load(ordering: .relaxed)
            if flags & (State.closed | State.broken) != 0 { throw unusable(flags) }
            if !standing.holds { throw standingLost() }
            if flags & State.readShut != 0 { return endOfStream() }
            var available = rx.cachedAvailable
            if available < wanted { available = try refreshAvailable() }
            if available > 0 { return available }
            if peerFinishedWriting(flags) {
                // The peer's last position was published before its shutdown bit (or its death): read it once more.
                if try refreshAvailable() == 0 {
                    if peerReset(flags) {
                        _ = endOfStream()  // a poller armed for data that will never come, as at end of stream
                        throw resetByPeer()
                    }
                    return endOfStream()
                }
                continue
            }
            try sleepUntilReadable(&deadline)
        }
    }

    /// End of stream for the reading thread: a poller armed for data that will never come stops counting as a
    /// sleeper of ours (so that `close` need not ring our own bells for it).
    private func endOfStream() -> Int {
        if readArmed { disarmReadable() }
        return 0
    }

    @inlinable @inline(__always)
    func read(into buffer: UnsafeMutableRawBufferPointer) throws(VMSockError) -> Int {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        let count = buffer.count
        guard canRead(count) else { return try readFullPath(into: buffer) }
        rx.copyOut(base, count: count)
        consume(count)
        return count
    }

    /// `read` when the fast path's checks send it here: waits for bytes, and before our consumer position goes to
    /// our half checks that we may still write it (`Standing`: a guest may have stood still inside the copy).
    @usableFromInline
    func readFullPath(into buffer: UnsafeMutableRawBufferPointer) throws(VMSockError) -> Int {
        let count = min(try awaitReadable(wanted: buffer.count), buffer.count)
        guard count > 0 else { return 0 }
        rx.copyOut(buffer.baseAddress!, count: count)
        if !standing.holds { throw standingLost() }
        consume(count)
        return count
    }

    func readv(_ vectors: UnsafeBufferPointer<iovec>) throws(VMSockError) -> Int {
        let wanted = vectors.reduce(0) { $0 &+ $1.iov_len }  // the C API checked the sum against Int.max
        guard wanted > 0 else { return 0 }
        let count = min(try awaitReadable(wanted: wanted), wanted)
        var done = 0
        for vector in vectors where done < count && vector.iov_len > 0 {
            let n = min(vector.iov_len, count - done)
            rx.copyOut(vector.iov_base!, count: n, skipping: done)
            done += n
        }
        if !standing.holds { throw standingLost() }
        if count > 0 { consume(count) }
        return count
    }

    /// Zero-copy read: `body` sees the readable bytes in place (read-only) and returns how many it consumed.
    @inlinable @inline(__always)
    func readInPlace(_ body: (UnsafeRawBufferPointer) throws -> Int) throws -> Int {
        guard canRead(1) else { return try readInPlaceFullPath(body) }
        let view = rx.contiguousAvailable
        let used = try body(view)
        guard used >= 0 && used <= view.count else { throw VMSockError.inPlaceOverrun("readInPlace", used: used, given: view.count) }
        if used > 0 { consume(used) }
        return used
    }

    /// `readInPlace` off the fast path, as `readFullPath`.
    @usableFromInline
    func readInPlaceFullPath(_ body: (UnsafeRawBufferPointer) throws -> Int) throws -> Int {
        guard try awaitReadable(wanted: 1) > 0 else { return 0 }
        let view = rx.contiguousAvailable
        if !standing.holds { throw standingLost() }  // the bytes in view may be another connection's by now
        let used = try body(view)
        guard used >= 0 && used <= view.count else { throw VMSockError.inPlaceOverrun("readInPlace", used: used, given: view.count) }
        if !standing.holds { throw standingLost() }
        if used > 0 { consume(used) }
        return used
    }

    /// Gives bytes back to the peer, and wakes its writer if it sleeps waiting for space and we have not rung for
    /// that announcement yet. The peer's word is read once, and that reading decides (see `PeerHeader`).
    @inlinable @inline(__always)
    func consume(_ count: Int) {
        rx.consume(count)
        let word = peer.waitingForSpace
        let ringing = rangForPeerWriter.wantsRing(word)
        if ringing || readArmed { afterConsume(ringing: ringing, word: word) }
    }

    @usableFromInline
    func afterConsume(ringing: Bool, word: UInt64) {
        if ringing {
            rangForPeerWriter.rang(for: word)
            link.peerSpaceBell.ring()
            WaitCounters.count(waits.spaceRings)
        }
        if readArmed { disarmReadable() }
    }

    // MARK: Writing

    /// Waits until at least `minimum` bytes (capped at the ring size) are free and returns how many are.
    @usableFromInline
    func awaitWritable(wanted: Int, minimum: Int = 1) throws(VMSockError) -> Int {
        var deadline: Deadline? = nil
        let needed = min(minimum, tx.capacityBytes)
        while true {
            let flags = state.load(ordering: .relaxed)
            if flags & (State.closed | State.broken) != 0 { throw unusable(flags) }
            if !standing.holds { throw standingLost() }
            if flags & State.writeShut != 0 {
                if writeArmed { disarmWritable() }  // room will never matter again (as `endOfStream`)
                throw VMSockError(code: EPIPE, "socket is shut down for writing")
            }
            let peerFlags = peer.shutdownFlags
            if peerFlags & (LocalHeader.peerStopsReading) != 0 || flags & State.peerGone != 0 {
                if writeArmed { disarmWritable() }
                // A region connection that ended because vmsockd went (or took our slot back) says so.
                if flags & State.peerGone != 0, let failure = link.lease?.node.failure { throw failure }
                if peerReset(flags) { throw resetByPeer() }
                throw VMSockError(code: EPIPE, "peer closed the connection (or stopped reading); nothing more can be sent")
            }
            var free = tx.cachedFreeSpace
            if free < wanted { free = try refreshFreeSpace() }
            if free >= needed { return free }
            try sleepUntilWritable(&deadline, needed: needed)
        }
    }

    @inlinable @inline(__always)
    func write(_ buffer: UnsafeRawBufferPointer) throws(VMSockError) -> Int {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        let count = buffer.count
        guard canWrite(count) else { return try writeFullPath(buffer) }
        tx.copyIn(base, count: count)
        publish(count)
        return count
    }

    /// `write` when the fast path's checks send it here: waits for room, and before our producer position goes to
    /// our half checks that we may still write it (`Standing`: a guest may have stood still inside the copy).
    @usableFromInline
    func writeFullPath(_ buffer: UnsafeRawBufferPointer) throws(VMSockError) -> Int {
        let count = min(try awaitWritable(wanted: buffer.count), buffer.count)
        tx.copyIn(buffer.baseAddress!, count: count)
        if !standing.holds { throw standingLost() }
        publish(count)
        return count
    }

    func writev(_ vectors: UnsafeBufferPointer<iovec>) throws(VMSockError) -> Int {
        let wanted = vectors.reduce(0) { $0 &+ $1.iov_len }  // the C API checked the sum against Int.max
        guard wanted > 0 else { return 0 }
        let count = min(try awaitWritable(wanted: wanted), wanted)
        var done = 0
        for vector in vectors where done < count && vector.iov_len > 0 {
            let n = min(vector.iov_len, count - done)
            tx.copyIn(vector.iov_base!, count: n, skipping: done)
            done += n
        }
        if !standing.holds { throw standingLost() }
        publish(count)
        return count
    }

    /// Zero-copy write: `body` fills free ring space in place and returns how many bytes to publish.
    @inlinable @inline(__always)
    func writeInPlace(minimum: Int, _ body: (UnsafeMutableRawBufferPointer) throws -> Int) throws -> Int {
        let needed = min(max(minimum, 1), tx.capacityBytes)
        guard canWrite(needed) else { return try writeInPlaceFullPath(needed: needed, body) }
        let space = tx.contiguousFreeSpace
        let used = try body(space)
        guard used >= 0 && used <= space.count else { throw VMSockError.inPlaceOverrun("writeInPlace", used: used, given: space.count) }
        if used > 0 { publish(used) }
        return used
    }

    /// `writeInPlace` off the fast path, as `writeFullPath`.
    @usableFromInline
    func writeInPlaceFullPath(needed: Int, _ body: (UnsafeMutableRawBufferPointer) throws -> Int) throws -> Int {
        _ = try awaitWritable(wanted: needed, minimum: needed)
        let space = tx.contiguousFreeSpace
        if !standing.holds { throw standingLost() }  // the space may be another connection's by now
        let used = try body(space)
        guard used >= 0 && used <= space.count else { throw VMSockError.inPlaceOverrun("writeInPlace", used: used, given: space.count) }
        if !standing.holds { throw standingLost() }
        if used > 0 { publish(used) }
        return used
    }

    /// Makes bytes visible to the peer, and wakes its reader if it sleeps waiting for data and we have not rung
    /// for that announcement yet (the word read once, as in `consume`). While a sleeper wakes, its writer may
    /// publish hundreds of times: one ring per announcement, not one per publish.
    @inlinable @inline(__always)
    func publish(_ count: Int) {
        tx.publish(count)
        let word = peer.waitingForData
        let ringing = rangForPeerReader.wantsRing(word)
        if ringing || writeArmed { afterPublish(ringing: ringing, word: word) }
    }

    @usableFromInline
    func afterPublish(ringing: Bool, word: UInt64) {
        if ringing {
            rangForPeerReader.rang(for: word)
            link.peerDataBell.ring()
            WaitCounters.count(waits.dataRings)
        }
        if writeArmed { disarmWritable() }
    }

    // MARK: Checked positions

    @inline(__always)
    private func refreshAvailable() throws(VMSockError) -> Int {
        do throws(RingViolation) { return try rx.refreshAvailable() } catch { throw tearDown(.protocolFault(error)) }
    }

    @inline(__always)
    private func refreshFreeSpace() throws(VMSockError) -> Int {
        do throws(RingViolation) { return try tx.refreshFreeSpace() } catch { throw tearDown(.protocolFault(error)) }
    }

    @inline(__always)
    private func peerFinishedWriting(_ flags: UInt32) -> Bool {
        flags & State.peerGone != 0 || peer.shutdownFlags & LocalHeader.peerStopsWriting != 0
    }

    /// Whether the peer ended this connection without ever serving it, as a TCP listener resets a connection
    /// still in its backlog: it showed `reset` (a refused reopen), or it went (the control socket hung up) before
    /// it started this connection's generation (a reopen its listener never took; see `LinkReuse`).
    private func peerReset(_ flags: UInt32) -> Bool {
        if peer.shutdownFlags & RingLayout.Shutdown.reset != 0 { return true }
        return flags & State.peerGone != 0 && peer.shutdownWord >> RingLayout.Shutdown.generationShift != peer.generation
    }

    private func resetByPeer() -> VMSockError {
        VMSockError(
            code: ECONNRESET,
            "connection reset by peer: the listener ended this connection before accepting it (it closed or exited)")
    }

    /// Whether a blocked read has something to return: bytes, end of stream, or an error. Only the shutdown bits
    /// that end the peer's writing count: any other bit the peer sets must not stop us from sleeping.
    private func readWaitIsOver() throws(VMSockError) -> Bool {
        let flags = state.load(ordering: .relaxed)
        if flags & (State.closed | State.broken | State.readShut) != 0 || !standing.holds { return true }
        return try refreshAvailable() > 0 || peerFinishedWriting(flags)
    }

    /// Whether a blocked write has room for `needed` bytes, or must fail.
    private func writeWaitIsOver(needed: Int) throws(VMSockError) -> Bool {
        let flags = state.load(ordering: .relaxed)
        if flags & (State.closed | State.broken | State.writeShut | State.peerGone) != 0 || !standing.holds { return true }
        if peer.shutdownFlags & LocalHeader.peerStopsReading != 0 { return true }
        return try refreshFreeSpace() >= needed
    }

    // MARK: Waiting

    private func sleepUntilReadable(_ deadline: inout Deadline?) throws(VMSockError) {
        if settings.nonBlocking.load(ordering: .relaxed) {
            if try !controlSaysPeerGone() {
                throw VMSockError(code: EAGAIN, "no data to read yet (non-blocking socket)")
            }
            return
        }
        let end = deadline ?? .after(nanoseconds: settings.readTimeout.load(ordering: .relaxed))
        deadline = end
        if spin(until: end, { (try? readWaitIsOver()) ?? true }) { return }
        ownSleepers.add(1, ordering: .sequentiallyConsistent)
        announceWaiting(forData: true)
        defer {
            withdrawWaiting(forData: true)
            ownSleepers.subtract(1, ordering: .sequentiallyConsistent)
        }
        // Announce, then re-check: a publish that raced with the announcement is seen here, any later one rings.
        if try readWaitIsOver() { return }
        WaitCounters.count(waits.readSleeps)
        try sleep(on: link.dataBell, until: end, what: "read")
    }

    private func sleepUntilWritable(_ deadline: inout Deadline?, needed: Int) throws(VMSockError) {
        if settings.nonBlocking.load(ordering: .relaxed) {
            if try !controlSaysPeerGone() {
                throw VMSockError(code: EAGAIN, "no room to write yet (non-blocking socket); the peer is not reading")
            }
            return
        }
        let end = deadline ?? .after(nanoseconds: settings.writeTimeout.load(ordering: .relaxed))
        deadline = end
        if spin(until: end, { (try? writeWaitIsOver(needed: needed)) ?? true }) { return }
        ownSleepers.add(1, ordering: .sequentiallyConsistent)
        announceWaiting(forData: false)
        defer {
            withdrawWaiting(forData: false)
            ownSleepers.subtract(1, ordering: .sequentiallyConsistent)
        }
        if try writeWaitIsOver(needed: needed) { return }
        WaitCounters.count(waits.writeSleeps)
        try sleep(on: link.spaceBell, until: end, what: "write")
    }

    /// Announces anew in our "waiting for data" (or "for space") word, ordered before the re-check that follows:
    /// with asymmetric ordering the peer's position stores carry no fence, so the barrier is run here, on the way
    /// to sleep (see `WakeUpOrdering`). Every announcement is a new value, so the peer rings once for it.
    /// A guest region connection whose slot vmsockd took back stores nothing (`Standing`); its callers re-check and
    /// fail. The region's dispatcher learns of the sleeper from `SleepFlags`, which no peer can reach.
    private func announceWaiting(forData: Bool) {
        link.sleepFlags?.set(forData: forData, true)
        guard standing.holds else { return }
        if forData { local.setWaitingForData(readWait.announce()) } else { local.setWaitingForSpace(writeWait.announce()) }
        if link.ordering == .asymmetric { Membarrier.barrier() }
    }

    /// Withdraws the announcement, if there is one: the peer rings no more for it.
    @inline(__always)
    private func withdrawWaiting(forData: Bool) {
        link.sleepFlags?.set(forData: forData, false)
        let word = forData ? readWait.withdraw() : writeWait.withdraw()
        guard let word, standing.holds else { return }
        if forData { local.setWaitingForData(word) } else { local.setWaitingForSpace(word) }
    }

    /// Spins on shared memory until `ready` or the spin budget (or the deadline) runs out. The clock is read
    /// through the vDSO, only every 64 turns; then the core is yielded once, so that with more busy threads than
    /// cores the thread we wait for gets to run (see `SpinPolicy`). The budget starts at the first of those reads,
    /// not at entry: a reader that keeps up with its writer enters here once per catch-up, and a clock read each
    /// time (about 30 ns in this VM) was a quarter of its work at 64-byte writes. The spin is longer by 64 turns
    /// (about 2 µs) for it.
    @inline(__always)
    private func spin(until deadline: Deadline, _ ready: () -> Bool) -> Bool {
        let budget = settings.spinNanos
        guard budget > 0 else { return false }
        var end: Int64? = nil
        var turns = 0
        while true {
            if ready() { return true }
            turns &+= 1
            if turns & 63 == 0 {
                let now = monotonicNanos()
                let limit = end ?? min(deadline.nanoseconds, now &+ budget)
                if now >= limit { return false }
                end = limit
                Sys.yield()
            }
            vms_cpu_relax()
        }
    }

    /// One sleep on a bell and the liveness socket, bounded by the deadline. Returns after any wake-up; the caller
    /// re-checks the ring. Every way out of here ends the wait or leaves something new to re-check, so a waiting
    /// call never spins on a descriptor that stays readable.
    private func sleep(on bell: Doorbell, until deadline: Deadline, what: String) throws(VMSockError) {
        guard var timeoutMs = deadline.pollTimeout else { throw VMSockError(code: ETIMEDOUT, "\(what) timed out") }
        // In a vmsockd region a ring can be lost (another peer may read our eventfd, or clear the flag we wait
        // under): wake up at least at every dispatcher tick and re-check, so that costs latency, not a hang.
        if link.lease != nil && (timeoutMs < 0 || timeoutMs > IvshmemNode.tickMs) { timeoutMs = IvshmemNode.tickMs }
        var fds = [
            pollfd(fd: bell.fd, events: Int16(POLLIN), revents: 0),
            pollfd(fd: link.control.raw, events: Int16(POLLIN) | Int16(VMS_POLLRDHUP), revents: 0),
        ]
        _ = try Sys.poll(&fds, timeoutMs: timeoutMs)
        if fds[0].revents != 0 && !bell.drain() { markPeerGone() }
        if fds[1].revents != 0 { _ = try controlSaysPeerGone() }
    }

    /// Looks at the liveness socket without blocking. After the handshake nothing may arrive on it: a hang-up means
    /// the peer is gone (closed, exited, or killed); any message, even an empty one, means it broke the protocol.
    private func controlSaysPeerGone() throws(VMSockError) -> Bool {
        if state.load(ordering: .relaxed) & State.peerGone != 0 { return true }
        let revents = try Sys.poll(link.control.raw, Int16(POLLIN) | Int16(VMS_POLLRDHUP), timeoutMs: 0)
        if revents & (Int16(POLLHUP) | Int16(VMS_POLLRDHUP) | Int16(POLLERR)) != 0 {
            markPeerGone()
            return true
        }
        if revents & Int16(POLLIN) != 0 {
            throw tearDown(.protocolFault("peer sent a message on the control socket after the handshake"))
        }
        return false
    }

    private func markPeerGone() {
        state.bitwiseOr(State.peerGone, ordering: .acquiringAndReleasing)
    }

    // MARK: Readiness for pollers

    /// Arms `pollDescriptor` for readability: checks; only on the way to sleep clears stale rings, announces
    /// that we sleep and re-checks (so a socket that is ready costs no system call here).
    /// - Returns: true when the socket is readable right now (do not poll; read). When false, poll
    ///   `pollDescriptor`; once it fires, read until EAGAIN. A successful read disarms.
    func armReadable() throws(VMSockError) -> Bool {
        _ = try readinessSet(write: false)  // a poller is coming: fail here, not with a descriptor of -1
        if try readWaitIsOver() { return true }  // no need to announce anything (nor pay for the barrier)
        let ready = try armed(bell: link.dataBell) {
            if !readArmed { ownSleepers.add(1, ordering: .sequentiallyConsistent) }
            announceWaiting(forData: true)
            readArmed = true
        } isReady: { () throws(VMSockError) in try readWaitIsOver() }
        if !ready { WaitCounters.count(waits.readSleeps) }  // the caller goes to poll
        return ready
    }

    /// Withdraws the announcement of `armReadable`: the peer stops ringing for us. Reading thread only.
    func disarmReadable() {
        withdrawWaiting(forData: true)
        if readArmed { ownSleepers.subtract(1, ordering: .sequentiallyConsistent) }
        readArmed = false
    }

    /// Arms `writePollDescriptor` for writability, as `armReadable` does for reading.
    /// - Returns: true when a write would not wait: there is room, or it would fail at once (shut down, closed,
    ///   peer gone). When false, poll `writePollDescriptor`; once it fires, write until EAGAIN. A successful write
    ///   disarms.
    func armWritable() throws(VMSockError) -> Bool {
        _ = try readinessSet(write: true)
        if try writeWaitIsOver(needed: 1) { return true }
        let ready = try armed(bell: link.spaceBell) {
            if !writeArmed { ownSleepers.add(1, ordering: .sequentiallyConsistent) }
            announceWaiting(forData: false)
            writeArmed = true
        } isReady: { () throws(VMSockError) in try writeWaitIsOver(needed: 1) }
        if !ready { WaitCounters.count(waits.writeSleeps) }
        return ready
    }

    /// Withdraws the announcement of `armWritable`. Writing thread only.
    func disarmWritable() {
        withdrawWaiting(forData: false)
        if writeArmed { ownSleepers.subtract(1, ordering: .sequentiallyConsistent) }
        writeArmed = false
    }

    /// The second half of arming, once a check found the socket not ready: drain the bell, announce, re-check
    /// (`PollerArming` says why in that order: the peer rings once per announcement, and a ring for this one must
    /// stay in the bell), then look at the liveness socket, which the poller's set holds too.
    @inline(__always)
    private func armed(
        bell: Doorbell, announce: () -> Void, isReady: () throws(VMSockError) -> Bool
    ) throws(VMSockError) -> Bool {
        let ready = try PollerArming.arm(drain: { if !bell.drain() { markPeerGone() } }, announce: announce, isReady: isReady)
        if ready { return true }
        return try controlSaysPeerGone()
    }

    // MARK: Shutdown and close

    func shutdown(read: Bool, write: Bool) throws(VMSockError) {
        let flags = state.load(ordering: .relaxed)
        if flags & State.closed != 0 { throw unusable(flags) }
        var shared: UInt32 = 0
        if read {
            state.bitwiseOr(State.readShut, ordering: .acquiringAndReleasing)
            shared |= RingLayout.Shutdown.read
        }
        if write {
            state.bitwiseOr(State.writeShut, ordering: .acquiringAndReleasing)
            shared |= RingLayout.Shutdown.write
        }
        addShutdown(shared)
        wakeEveryone()
    }

    /// Tells the peer we are gone and wakes our own blocked calls. Mappings and descriptors are released when the
    /// last reference goes (a call blocked in another thread still holds one), so no call ever touches unmapped
    /// memory.
    func close() {
        let before = state.bitwiseOr(State.closed, ordering: .sequentiallyConsistent).oldValue
        guard before & State.closed == 0 else { return }
        addShutdown(RingLayout.Shutdown.write | RingLayout.Shutdown.read | RingLayout.Shutdown.closed)
        guard mayKeepLink else {
            // A link that both sides offered for reuse is retired too, so that a peer that parks its side frees it
            // at once (its pool does not watch the control socket).
            if link.reusable { addShutdown(RingLayout.Shutdown.retired) }
            // No doorbells: every sleeper, ours and the peer's, polls the control socket too, and shutting it
            // down wakes them all (our end hangs up, and so does the peer's). Four sends fewer per close.
            Sys.shutdown(link.control.raw)
            // In a vmsockd region the liveness socket is ours alone (the dispatcher's): ring the peer, whose
            // sleeper then re-checks our shutdown bits.
            if link.lease != nil { link.peerDataBell.ring() }
            return
        }
        // The link is kept for reuse, so its control socket stays up: ring instead. The peer only if it sleeps
        // (it re-checks our shutdown bits after announcing that, as for a publish); our own bells only if a
        // thread of ours may sleep on them. A sleeper counts itself before announcing and re-checks `state` after
        // the announcement's fence; `closed` went in above, sequentially consistent, before this count is read:
        // so either it sees `closed`, or this sees it. Two sends (and the reopen's two drains) fewer per close.
        state.bitwiseOr(State.keepsLink, ordering: .acquiringAndReleasing)
        let (peerWaitsForData, peerWaitsForSpace) = peerWaits
        if peerWaitsForData { link.peerDataBell.ring() }
        if peerWaitsForSpace { link.peerSpaceBell.ring() }
        if ownSleepers.load(ordering: .sequentiallyConsistent) > 0 {
            link.dataBell.ringSelf()
            link.spaceBell.ringSelf()
        }
    }

    /// The link, for another connection between the same two processes, once this one is closed and nothing in
    /// this process touches its rings any more (the owner above calls this when its socket is gone); nil when it
    /// cannot serve again (not reusable, not closed cleanly, the peer gone or a rule broken, or a forked child,
    /// which shares its rings with the parent). Whoever keeps it marks it `parked` (see `LinkReuse`).
    func detachForReuse() -> EstablishedLink? {
        let flags = state.load(ordering: .acquiring)
        guard flags & State.keepsLink != 0, flags & State.closed != 0, flags & (State.broken | State.peerGone) == 0,
            link.isOwnedByThisProcess, peer.shutdownFlags & RingLayout.Shutdown.retired == 0  // (refused)
        else { return nil }
        // An announcement left standing (a poller armed at close) goes: the peer's next connection, whose ring
        // memo starts afresh, would otherwise ring for it and then take our next connection's announcement of the
        // same value (`WaitWord` starts from zero) for one it rang for. Stored before `parked`, which the peer
        // acquires.
        local.setWaitingForData(0)
        local.setWaitingForSpace(0)
        var parked = link
        parked.start = (tx.position, rx.position)  // where the next connection on it carries on
        return parked
    }

    /// Whether the link may serve another connection once this one is closed: both sides said so, and the process
    /// has not forked since this connection started. A child that kept a copy of it could otherwise close it, or
    /// write, into the next connection on the link. Read once, by `close`, after `closed` is set: a fork after
    /// that look gives the child a closed copy, which touches nothing.
    private var mayKeepLink: Bool { link.reusable && Sys.forkCount() == forksAtStart }

    private func wakeEveryone() {
        link.peerDataBell.ring()
        link.peerSpaceBell.ring()
        link.dataBell.ringSelf()
        link.spaceBell.ringSelf()
    }

    /// The peer broke the rules: remember why, tell it we are gone, and make every later call fail with `error`.
    private func tearDown(_ error: VMSockError) -> VMSockError {
        fault.withLock { if $0 == nil { $0 = error } }
        let before = state.bitwiseOr(State.broken, ordering: .acquiringAndReleasing).oldValue
        if before & State.broken == 0 {
            addShutdown(RingLayout.Shutdown.write | RingLayout.Shutdown.read | RingLayout.Shutdown.closed)
            wakeEveryone()
            Sys.shutdown(link.control.raw)
        }
        return error
    }

    /// Shutdown bits in our half, unless we may no longer write it (`Standing`): the slot may carry another
    /// connection by now, whose peer would read them as its own.
    private func addShutdown(_ bits: UInt32) {
        if standing.holds { local.addShutdown(bits) }
    }

    /// vmsockd took our place in its region (we stood still too long): the connection ends, and nothing more is
    /// written to our half. Our own sleepers wake; the peer learnt of it from vmsockd already.
    private func standingLost() -> VMSockError {
        // Only a region link's standing can be lost, so there is a lease to name the slot we held.
        let error = link.lease.map { $0.node.failure ?? IvshmemNode.identityLost($0.owner) }
            ?? VMSockError(code: ECONNRESET, "connection reset: this process may no longer write its half")
        return tearDown(error)
    }

    private func unusable(_ flags: UInt32) -> VMSockError {
        if flags & State.broken != 0, let error = fault.withLock({ $0 }) { return error }
        return VMSockError(code: EBADF, "socket is closed")
    }
}

extension LocalHeader {
    /// Peer shutdown bits after which it will publish nothing more.
    static let peerStopsWriting = RingLayout.Shutdown.write | RingLayout.Shutdown.closed
    /// Peer shutdown bits after which it will read nothing more.
    /// (A computed property: a stored one is a lazily made global, reached through a call from inlined code.)
    @inlinable static var peerStopsReading: UInt32 { RingLayout.Shutdown.read | RingLayout.Shutdown.closed }
}

extension SharedMemoryStream {
    /// Everything a stuck connection's wake-up state is made of, for a test that timed out: our private
    /// positions, both headers' words, the armed flags, and whether each of our bells holds a ring.
    var debugSnapshot: String {
        func word(_ base: UnsafeRawPointer, _ offset: Int) -> UInt64 { base.load(fromByteOffset: offset, as: UInt64.self) }
        func word32(_ base: UnsafeRawPointer, _ offset: Int) -> UInt32 { base.load(fromByteOffset: offset, as: UInt32.self) }
        func header(_ base: UnsafeRawPointer) -> String {
            "produced \(word(base, RingLayout.Offset.producerPosition)) consumed \(word(base, RingLayout.Offset.consumerPosition))"
                + " waitsData \(word(base, RingLayout.Offset.waitingForData))"
                + " waitsSpace \(word(base, RingLayout.Offset.waitingForSpace))"
                + " shutdown \(word32(base, RingLayout.Offset.shutdownFlags))"
        }
        func rung(_ fd: Int32) -> Bool { (try? Sys.poll(fd, Int16(POLLIN), timeoutMs: 0)).map { $0 != 0 } ?? false }
        return "state \(state.load(ordering: .relaxed)) ordering \(link.ordering)"
            + " rx \(rx.position)/\(rx.cachedAvailable) tx \(tx.position)/\(tx.cachedFreeSpace)"
            + " armed r\(readArmed ? 1 : 0) w\(writeArmed ? 1 : 0) sleepers \(ownSleepers.load(ordering: .relaxed))"
            + " rang for peer's data \(rangForPeerReader.lastRung) space \(rangForPeerWriter.lastRung)"
            + " bells data \(rung(link.dataBell.fd)) space \(rung(link.spaceBell.fd))"
            + " | ours: \(header(link.localRegion.base)) | peer's: \(header(link.peerRegion.base))"
            + " | \(waits.snapshot)"
    }
}
