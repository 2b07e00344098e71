/// The peer broke the rules of the shared ring. The connection cannot continue; callers report EPROTO.
public enum RingViolation: Error, Equatable, Sendable, CustomStringConvertible {
    case badMagic(UInt64)
    case versionMismatch(UInt32)
    case badHeaderSize(UInt32)
    case capacityMismatch(UInt64)
    /// The peer's producer position left the window [last seen, our consumer position + capacity].
    case producerOutOfRange(seen: UInt64, lastSeen: UInt64, limit: UInt64)
    /// The peer's consumer position left the window [last seen, our producer position].
    case consumerOutOfRange(seen: UInt64, lastSeen: UInt64, limit: UInt64)

    public var description: String {
        switch self {
        case .badMagic(let m): "peer region has bad magic 0x\(String(m, radix: 16)) (not a vmsock ring)"
        case .versionMismatch(let v): "peer ring layout version \(v), we speak \(RingLayout.version)"
        case .badHeaderSize(let h): "peer ring header size \(h), expected \(RingLayout.headerSize)"
        case .capacityMismatch(let c): "peer ring capacity \(c) differs from the handshake"
        case .producerOutOfRange(let s, let l, let lim):
            "peer producer position \(s) outside [\(l), \(lim)]: it went backwards or past the ring"
        case .consumerOutOfRange(let s, let l, let lim):
            "peer consumer position \(s) outside [\(l), \(lim)]: it went backwards or past what we wrote"
        }
    }
}
