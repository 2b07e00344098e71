import CVMSock

/// Our own region's header: the only place we ever store to shared memory.
///
/// Like liburing's private `sqe_head` against the kernel's `khead`, the values here are *published* copies of
/// positions we keep privately; we never read our own words back to make a decision.
public struct LocalHeader: @unchecked Sendable {
    public let base: UnsafeMutableRawPointer

    public init(base: UnsafeMutableRawPointer) { self.base = base }

    /// Writes magic, version, sizes and zero positions. Call once, before the peer can see the region.
    public func initialize(capacity: Int) {
        base.initializeMemory(as: UInt8.self, repeating: 0, count: RingLayout.headerSize)
        base.storeBytes(of: RingLayout.magic.littleEndian, toByteOffset: RingLayout.Offset.magic, as: UInt64.self)
        base.storeBytes(of: RingLayout.version.littleEndian, toByteOffset: RingLayout.Offset.version, as: UInt32.self)
        base.storeBytes(
            of: UInt32(RingLayout.headerSize).littleEndian, toByteOffset: RingLayout.Offset.headerSize, as: UInt32.self)
        base.storeBytes(of: UInt64(capacity).littleEndian, toByteOffset: RingLayout.Offset.capacity, as: UInt64.self)
    }

    /// Starts connection `generation` on a reopened link (see `LinkReuse` in VMSock): no waiting words, our
    /// consumer position moved to `consumed` when given (skipping what the last connection left unread), and no
    /// shutdown bits, under the new generation, stored last. Positions otherwise carry on from the last
    /// connection, so that what the peer reads of ours before it has seen the new generation is still in range.
    public func reopen(generation: UInt32, consumed: UInt64?) {
        vms_store_seqcst_u64(word(RingLayout.Offset.waitingForData), 0)
        vms_store_seqcst_u64(word(RingLayout.Offset.waitingForSpace), 0)
        if let consumed { vms_store_seqcst_u64(word(RingLayout.Offset.consumerPosition), consumed) }
        let bits = (generation & RingLayout.Shutdown.generationMask) << RingLayout.Shutdown.generationShift
        vms_store_seqcst_u32(word32(RingLayout.Offset.shutdownFlags), bits)
    }

    @usableFromInline var producerPosition: UnsafeMutablePointer<UInt64> { word(RingLayout.Offset.producerPosition) }
    @usableFromInline var consumerPosition: UnsafeMutablePointer<UInt64> { word(RingLayout.Offset.consumerPosition) }

    /// Stores our "waiting for data" word (a `WaitWord` value: odd announces that our reader is about to sleep
    /// until the peer publishes, and asks for one ring). Sequentially consistent: the caller re-reads the peer's
    /// producer position right after an announcement.
    @inlinable public func setWaitingForData(_ word: UInt64) {
        vms_store_seqcst_u64(self.word(RingLayout.Offset.waitingForData), word)
        // The caller's re-check of the peer's position is an acquire load, which may (on arm64 with RCpc) be
        // ordered before the store above without a full fence: the need-wakeup handshake would lose a wake-up.
        // SharedMemoryStream.close relies on this fence too (its sleepers re-check `closed` after it), whatever
        // the link's ordering mode.
        if word & 1 != 0 { vms_fence_seqcst() }
    }

    /// Stores our "waiting for space" word: odd announces that our writer is about to sleep until the peer
    /// consumes.
    @inlinable public func setWaitingForSpace(_ word: UInt64) {
        vms_store_seqcst_u64(self.word(RingLayout.Offset.waitingForSpace), word)
        if word & 1 != 0 { vms_fence_seqcst() }  // as in setWaitingForData
    }

    /// Adds shutdown bits (any thread may; the peer only ever sees bits added, within a generation). Returns the
    /// word now stored (generation and bits).
    @discardableResult
    public func addShutdown(_ bits: UInt32) -> UInt32 {
        vms_fetch_or_u32(word32(RingLayout.Offset.shutdownFlags), bits)
    }

    @usableFromInline func word(_ offset: Int) -> UnsafeMutablePointer<UInt64> {
        (base + offset).assumingMemoryBound(to: UInt64.self)
    }
    @usableFromInline func word32(_ offset: Int) -> UnsafeMutablePointer<UInt32> {
        (base + offset).assumingMemoryBound(to: UInt32.self)
    }
}

/// The peer's region header, mapped read-only. Every value read here is untrusted: it is read once into a local,
/// checked, and then used; never read twice for one decision.
public struct PeerHeader: @unchecked Sendable {
    public let base: UnsafeRawPointer
    /// The connection's generation on its link (see `RingLayout`): shutdown bits of another count as none.
    public let generation: UInt32

    public init(base: UnsafeRawPointer, generation: UInt32 = 0) {
        self.base = base
        self.generation = generation & RingLayout.Shutdown.generationMask
    }

    /// Checks the fixed fields the peer wrote before the handshake.
    public func validate(expectedCapacity: Int) throws(RingViolation) {
        let magic = UInt64(littleEndian: base.load(fromByteOffset: RingLayout.Offset.magic, as: UInt64.self))
        guard magic == RingLayout.magic else { throw .badMagic(magic) }
        let version = UInt32(littleEndian: base.load(fromByteOffset: RingLayout.Offset.version, as: UInt32.self))
        guard version == RingLayout.version else { throw .versionMismatch(version) }
        let header = UInt32(littleEndian: base.load(fromByteOffset: RingLayout.Offset.headerSize, as: UInt32.self))
        guard header == RingLayout.headerSize else { throw .badHeaderSize(header) }
        let capacity = UInt64(littleEndian: base.load(fromByteOffset: RingLayout.Offset.capacity, as: UInt64.self))
        guard capacity == UInt64(expectedCapacity) else { throw .capacityMismatch(capacity) }
    }

    @usableFromInline var producerPosition: UnsafePointer<UInt64> { word(RingLayout.Offset.producerPosition) }
    @usableFromInline var consumerPosition: UnsafePointer<UInt64> { word(RingLayout.Offset.consumerPosition) }

    /// The peer's "waiting for data" word: odd while its reader sleeps until we publish, and new at each
    /// announcement (see `WaitWord`). Sequentially consistent: read right after publishing.
    @inlinable public var waitingForData: UInt64 { vms_load_seqcst_u64(word(RingLayout.Offset.waitingForData)) }
    /// The peer's "waiting for space" word: odd while its writer sleeps until we consume.
    @inlinable public var waitingForSpace: UInt64 { vms_load_seqcst_u64(word(RingLayout.Offset.waitingForSpace)) }
    /// Whether the peer's reader announced that it sleeps (for whoever rings whatever was rung before).
    @inlinable public var isWaitingForData: Bool { waitingForData & 1 != 0 }
    /// Whether the peer's writer announced that it sleeps.
    @inlinable public var isWaitingForSpace: Bool { waitingForSpace & 1 != 0 }
    /// The peer's shutdown bits for our generation (none while the peer's word is of another: a reopened link
    /// whose peer has not started the new connection yet). Callers test only the bits they need; unknown bits
    /// mean nothing.
    @inlinable public var shutdownFlags: UInt32 {
        let word = shutdownWord
        return word >> RingLayout.Shutdown.generationShift == generation ? word & 0xFF : 0
    }
    /// The peer's published positions, each read once (acquire) and unchecked: the caller checks them.
    public var positions: (produced: UInt64, consumed: UInt64) {
        (vms_load_acquire_u64(producerPosition), vms_load_acquire_u64(consumerPosition))
    }
    /// The peer's whole shutdown word, generation and bits, read once (acquire).
    @inlinable public var shutdownWord: UInt32 { vms_load_acquire_u32(word32(RingLayout.Offset.shutdownFlags)) }
    /// The same, sequentially consistent: for a decision that must see the peer's store or have the peer see ours.
    public var shutdownWordOrdered: UInt32 { vms_load_seqcst_u32(word32(RingLayout.Offset.shutdownFlags)) }

    @usableFromInline func word(_ offset: Int) -> UnsafePointer<UInt64> {
        (base + offset).assumingMemoryBound(to: UInt64.self)
    }
    @usableFromInline func word32(_ offset: Int) -> UnsafePointer<UInt32> {
        (base + offset).assumingMemoryBound(to: UInt32.self)
    }
}
