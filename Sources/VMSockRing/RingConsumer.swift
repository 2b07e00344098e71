import CVMSock

/// The reading end of one ring: the data and its producer position live in the peer's region (read-only to us);
/// our consumer position lives in ours.
public struct RingConsumer: @unchecked Sendable {
    @usableFromInline let data: UnsafeRawPointer
    @usableFromInline let capacity: UInt64
    @usableFromInline let mirrored: Bool
    @usableFromInline let local: LocalHeader
    @usableFromInline let peer: PeerHeader
    /// Whether each position store is a full fence (see `WakeUpOrdering`).
    @usableFromInline let ordering: WakeUpOrdering

    @usableFromInline var _position: UInt64 = 0
    /// Our private position (see the type's notes).
    @inlinable public var position: UInt64 { _position }
    @usableFromInline var peerProduced: UInt64 = 0

    /// `start`: where the stream starts: 0 on a new link; on a reopened one, the peer's producer position when
    /// the connection began (`LinkReuse`).
    public init(data: UnsafeRawPointer, capacity: Int, mirrored: Bool, local: LocalHeader, peer: PeerHeader,
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
        peerProduced = start
    }

    /// Readable bytes as of the last accepted peer producer position (no shared-memory read).
    @inlinable @inline(__always)
    public var cachedAvailable: Int { Int(peerProduced &- position) }

    /// Reads the peer's producer position, checks it, and returns the readable bytes.
    /// - Throws: `RingViolation.producerOutOfRange` when the peer's position went backwards or ran more than a
    ///   whole ring ahead of what we consumed.
    @inlinable @inline(__always)
    public mutating func refreshAvailable() throws(RingViolation) -> Int {
        let seen = vms_load_acquire_u64(peer.producerPosition)
        try Self.check(peerProduced: seen, lastSeen: peerProduced, consumed: position, capacity: capacity)
        peerProduced = seen
        return cachedAvailable
    }

    /// The peer's producer position must stay in [lastSeen, consumed + capacity].
    @inlinable @inline(__always)
    public static func check(
        peerProduced seen: UInt64, lastSeen: UInt64, consumed: UInt64, capacity: UInt64
    ) throws(RingViolation) {
        let limit = consumed &+ capacity
        guard seen &- lastSeen <= limit &- lastSeen else {
            throw .producerOutOfRange(seen: seen, lastSeen: lastSeen, limit: limit)
        }
    }

    /// Copies `count` bytes (at most `cachedAvailable`) out of the ring from `position`. Does not consume.
    @inlinable @inline(__always)
    public func copyOut(_ destination: UnsafeMutableRawPointer, count: Int, skipping skip: Int = 0) {
        let (offset, first) = RingLayout.segments(
            at: position &+ UInt64(skip), count: count, capacity: capacity, mirrored: mirrored)
        destination.copyMemory(from: data + offset, byteCount: first)
        if first < count { (destination + first).copyMemory(from: data, byteCount: count - first) }
    }

    /// The readable bytes after `position` that are contiguous in memory.
    @inlinable @inline(__always)
    public var contiguousAvailable: UnsafeRawBufferPointer {
        let (offset, first) = RingLayout.segments(
            at: position, count: cachedAvailable, capacity: capacity, mirrored: mirrored)
        return UnsafeRawBufferPointer(start: data + offset, count: first)
    }

    /// Gives `count` bytes back to the peer: the caller reads the peer's "waiting for space" flag next (ordered
    /// as `RingProducer.publish` is).
    @inlinable @inline(__always)
    public mutating func consume(_ count: Int) {
        precondition(count >= 0 && count <= cachedAvailable, "consume beyond available")
        _position &+= UInt64(count)  // only grows; wrapping after 2^64 bytes is meant
        ordering.storePosition(local.consumerPosition, position)
    }
}
