import CVMSock

/// The writing end of one ring: the data lives in our region; the consumer position we obey lives in the peer's.
///
/// `position` is our private producer position. It is only ever stored to shared memory, never read back.
/// `peerConsumed` is the last consumer position the peer published that we checked and accepted.
public struct RingProducer: @unchecked Sendable {
    @usableFromInline let data: UnsafeMutableRawPointer
    @usableFromInline let capacity: UInt64
    @usableFromInline let mirrored: Bool
    @usableFromInline let local: LocalHeader
    @usableFromInline let peer: PeerHeader
    /// Whether each position store is a full fence (see `WakeUpOrdering`).
    @usableFromInline let ordering: WakeUpOrdering

    @usableFromInline var _position: UInt64 = 0
    /// Our private position (see the type's notes).
    @inlinable public var position: UInt64 { _position }
    @usableFromInline var peerConsumed: UInt64 = 0

    /// Bytes of the ring.
    @inlinable public var capacityBytes: Int { Int(capacity) }

    /// - Parameters:
    ///   - data: the start of our data area (`capacity` bytes; `2 * capacity` readable and writable when `mirrored`).
    ///   - mirrored: the data area is mapped twice back to back, so any slice of up to `capacity` is contiguous.
    ///   - start: where the stream starts: 0 on a new link; on a reopened one, where the last connection left our
    ///     position, which the peer had consumed up to (`LinkReuse`).
    public init(data: UnsafeMutableRawPointer, capacity: Int, mirrored: Bool, local: LocalHeader, peer: PeerHeader,
        ordering: WakeUpOrdering = .fenced, start: UInt64 = 0
    ) {
        precondition(RingLayout.isValid(capacity: capacity))
        self.data = data
        self.capacity = UInt64(capacity)
        self.mirrored = mirrored
        self.local = local
        self.peer = peer
        self.ordering = ordering
        _position = start
        peerConsumed = start
    }

    /// Free bytes as of the last accepted peer consumer position (no shared-memory read).
    @inlinable @inline(__always)
    public var cachedFreeSpace: Int { Int(capacity &- (position &- peerConsumed)) }

    /// Reads the peer's consumer position, checks it, and returns the free space.
    /// - Throws: `RingViolation.consumerOutOfRange` when the peer's position went backwards or past ours.
    @inlinable @inline(__always)
    public mutating func refreshFreeSpace() throws(RingViolation) -> Int {
        let seen = vms_load_acquire_u64(peer.consumerPosition)
        try Self.check(peerConsumed: seen, lastSeen: peerConsumed, produced: position)
        peerConsumed = seen
        return cachedFreeSpace
    }

    /// The peer's consumer position must stay in [lastSeen, produced]. Unsigned wrapping differences make this one
    /// comparison, and keep it right across the (theoretical) 2^64 wrap.
    @inlinable @inline(__always)
    public static func check(peerConsumed seen: UInt64, lastSeen: UInt64, produced: UInt64) throws(RingViolation) {
        guard seen &- lastSeen <= produced &- lastSeen else {
            throw .consumerOutOfRange(seen: seen, lastSeen: lastSeen, limit: produced)
        }
    }

    /// Copies `count` bytes (at most `cachedFreeSpace`) into the ring after `position`. Does not publish.
    @inlinable @inline(__always)
    public func copyIn(_ source: UnsafeRawPointer, count: Int, skipping skip: Int = 0) {
        let (offset, first) = RingLayout.segments(
            at: position &+ UInt64(skip), count: count, capacity: capacity, mirrored: mirrored)
        (data + offset).copyMemory(from: source, byteCount: first)
        if first < count { data.copyMemory(from: source + first, byteCount: count - first) }
    }

    /// The free space after `position` that is contiguous in memory: all of it when mirrored, otherwise up to
    /// the end of the data area.
    @inlinable @inline(__always)
    public var contiguousFreeSpace: UnsafeMutableRawBufferPointer {
        let (offset, first) = RingLayout.segments(
            at: position, count: cachedFreeSpace, capacity: capacity, mirrored: mirrored)
        return UnsafeMutableRawBufferPointer(start: data + offset, count: first)
    }

    /// Makes `count` more bytes visible to the peer: the publish half of the need-wakeup handshake, whose caller
    /// reads the peer's "waiting for data" flag next. See `WakeUpOrdering` for why that read cannot be ordered
    /// before this store in either mode.
    @inlinable @inline(__always)
    public mutating func publish(_ count: Int) {
        precondition(count >= 0 && count <= cachedFreeSpace, "publish beyond free space")
        _position &+= UInt64(count)  // positions only grow; wrapping after 2^64 bytes is meant
        ordering.storePosition(local.producerPosition, position)
    }
}
