import VMSockRing

/// The messages of the connect handshake: the "hypercall" of the design, one round trip at connect time.
///
/// Sent as single SOCK_SEQPACKET messages over the control socket. Fixed size, little-endian:
/// ```
///  offset  size  field
///       0     4  magic "VMSH"
///       4     2  protocol version (8)
///       6     2  kind: 1 hello (connector), 2 welcome (listener), 3 reject (listener), 4 reopen (connector)
///       8     4  ring capacity: bytes of the sender's outgoing ring (hello, welcome, reopen); 0 in a reject
///      12     4  reject reason (reject only, else 0)
///      16     2  hello, reopen: family of the address the connector dialed (4 or 6); else 0
///      18     2  hello, reopen: the port it dialed; else 0
///      20    16  hello, reopen: the address it dialed (IPv4 in the first 4 bytes); else zero
///      36     4  hello, welcome: flags; bit 0: the sender's process can use asymmetric fences (see
///                  `WakeUpOrdering`); bit 1: the sender keeps the link for reuse once the connection is closed
///                  (see `LinkReuse`; both must say so); other bits zero
///      40     2  hello, reopen: the connector's own port, a TCP port it holds for the connection so that no TCP
///                  connection on the host has it meanwhile (0 if it could not get one); else 0
///      42     6  reserved, zero
///      48    16  hello, reopen: the connector's own address, of the dialed address's family (IPv4 in the first
///                  4 bytes); zero if it has none; else zero
/// ```
/// The dialed address and the connector's own address and port are what make a shared-memory connection report
/// addresses like a TCP one: the listener reports the dialed address as its local address, and the connector's
/// as the peer's. They also pair a connection with its hello where the TCP connection is real (vmsock-run's
/// listener matches what accept(2) returns by the connector's address and port: the port alone could belong to
/// two sockets on different addresses). Protocol 6 added the connector's address (and the 16 bytes).
/// Hello and welcome carry exactly three descriptors with SCM_RIGHTS: the sender's ring memfd, and the ringing ends
/// of its two doorbells (the one it sleeps on waiting for data, the one it sleeps on waiting for space). A reject
/// carries none.
///
/// A reopen starts a new connection on a link whose previous connection both sides have closed and parked (see
/// `LinkReuse`): it travels on that link's control socket, carries no descriptors, and is not answered: the
/// listener starts the connector's new generation in its own header, or sends a reject and drops the link.
public struct HandshakeMessage: Equatable, Sendable {
    public static let magic: UInt32 = 0x4853_4d56  // "VMSH" little-endian
    /// 7: ring layout 2 (the waiting words are announcement counters, rung for once each); a peer speaking 6
    /// would wait for a ring at every publish that we no longer send, so the versions must match. 8: a reopen is
    /// not answered, and the shutdown word carries the connection's generation (`LinkReuse`); a peer speaking 7
    /// would wait for a welcome.
    public static let protocolVersion: UInt16 = 8
    public static let size = 64
    public static let descriptorCount = 3

    public enum Kind: UInt16, Sendable {
        case hello = 1
        case welcome = 2
        case reject = 3
        case reopen = 4
    }

    /// Why a listener turned a connector away; sent in a reject.
    public enum RejectReason: UInt32, Sendable, CustomStringConvertible {
        case versionMismatch = 1
        case notPermitted = 2
        case badRequest = 3
        case outOfResources = 4

        public var description: String {
            switch self {
            case .versionMismatch: "version mismatch"
            case .notPermitted: "refused by the listener's policy"
            case .badRequest: "malformed request"
            case .outOfResources: "listener out of resources"
            }
        }
    }

    public var version: UInt16
    public var kind: Kind
    public var ringCapacity: UInt32
    public var rejectReason: UInt32
    /// The address and port the connector dialed (hello and reopen).
    public var dialed: IPEndpoint?
    /// The connector's own address and port (hello and reopen), of the dialed address's family; nil if it has
    /// neither. Its port is 0 when it holds none, its address zero when it does not know it.
    public var source: IPEndpoint?
    /// How the sender can order wake-ups: `asymmetric` when its process registered for membarrier.
    public var ordering: WakeUpOrdering
    /// Whether the sender keeps the link for a later connection (hello, welcome).
    public var reusable: Bool

    public init(
        kind: Kind, ringCapacity: UInt32 = 0, rejectReason: UInt32 = 0, dialed: IPEndpoint? = nil,
        source: IPEndpoint? = nil, ordering: WakeUpOrdering = .fenced, reusable: Bool = false,
        version: UInt16 = protocolVersion
    ) {
        self.version = version
        self.kind = kind
        self.ringCapacity = ringCapacity
        self.rejectReason = rejectReason
        self.dialed = dialed
        self.source = source
        self.ordering = ordering
        self.reusable = reusable
    }

    static let asymmetricFlag: UInt32 = 1 << 0
    static let reusableFlag: UInt32 = 1 << 1

    public func encoded() -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Self.size)
        func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
            withUnsafeBytes(of: value.littleEndian) { bytes.replaceSubrange(offset..<offset + $0.count, with: $0) }
        }
        put(Self.magic, at: 0)
        put(version, at: 4)
        put(kind.rawValue, at: 6)
        put(ringCapacity, at: 8)
        put(rejectReason, at: 12)
        put((ordering == .asymmetric ? Self.asymmetricFlag : 0) | (reusable ? Self.reusableFlag : 0), at: 36)
        if let dialed {
            put(UInt16(dialed.family == .v4 ? 4 : 6), at: 16)
            put(dialed.port, at: 18)
            bytes.replaceSubrange(20..<20 + dialed.addressBytes.count, with: dialed.addressBytes)
            // The source only travels with a dialed address, whose family it shares.
            if let source, source.family == dialed.family {
                put(source.port, at: 40)
                bytes.replaceSubrange(48..<48 + source.addressBytes.count, with: source.addressBytes)
            }
        }
        return bytes
    }

    public enum DecodeError: Error, Equatable, CustomStringConvertible {
        case wrongSize(Int)
        case badMagic(UInt32)
        case unknownKind(UInt16)
        case nonZeroReserved
        case badAddressFamily(UInt16)

        public var description: String {
            switch self {
            case .wrongSize(let n): "handshake message of \(n) bytes, expected \(HandshakeMessage.size)"
            case .badMagic(let m): "handshake magic 0x\(String(m, radix: 16)), expected 0x\(String(HandshakeMessage.magic, radix: 16))"
            case .unknownKind(let k): "unknown handshake message kind \(k)"
            case .nonZeroReserved: "handshake message has non-zero reserved bytes"
            case .badAddressFamily(let f): "handshake message has address family \(f), expected 0, 4 or 6"
            }
        }
    }

    /// Decodes a message. The version is returned as sent, for the caller to compare (a different version is not
    /// malformed: the listener answers it with a reject saying which version it speaks).
    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(DecodeError) -> HandshakeMessage {
        guard bytes.count == size else { throw .wrongSize(bytes.count) }
        func get<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
            T(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: T.self))
        }
        let magic = get(UInt32.self, at: 0)
        guard magic == Self.magic else { throw .badMagic(magic) }
        let rawKind = get(UInt16.self, at: 6)
        guard let kind = Kind(rawValue: rawKind) else { throw .unknownKind(rawKind) }
        let flags = get(UInt32.self, at: 36)
        guard flags & ~(Self.asymmetricFlag | Self.reusableFlag) == 0, bytes[42..<48].allSatisfy({ $0 == 0 }) else {
            throw .nonZeroReserved
        }
        let dialed: IPEndpoint?
        var source: IPEndpoint? = nil
        let sourcePort = get(UInt16.self, at: 40)
        switch get(UInt16.self, at: 16) {
        case 0:
            guard bytes[18..<36].allSatisfy({ $0 == 0 }), sourcePort == 0, bytes[48..<64].allSatisfy({ $0 == 0 }) else {
                throw .nonZeroReserved
            }
            dialed = nil
        case 4:
            guard bytes[24..<36].allSatisfy({ $0 == 0 }), bytes[52..<64].allSatisfy({ $0 == 0 }) else { throw .nonZeroReserved }
            dialed = IPEndpoint(family: .v4, addressBytes: Array(bytes[20..<24]), port: get(UInt16.self, at: 18))
            source = IPEndpoint(family: .v4, addressBytes: Array(bytes[48..<52]), port: sourcePort)
        case 6:
            dialed = IPEndpoint(family: .v6, addressBytes: Array(bytes[20..<36]), port: get(UInt16.self, at: 18))
            source = IPEndpoint(family: .v6, addressBytes: Array(bytes[48..<64]), port: sourcePort)
        case let other:
            throw .badAddressFamily(other)
        }
        if let known = source, known.port == 0, known.isWildcard { source = nil }  // all zero: none
        return HandshakeMessage(
            kind: kind, ringCapacity: get(UInt32.self, at: 8), rejectReason: get(UInt32.self, at: 12),
            dialed: dialed, source: source,
            ordering: flags & Self.asymmetricFlag != 0 ? .asymmetric : .fenced,
            reusable: flags & Self.reusableFlag != 0, version: get(UInt16.self, at: 4))
    }
}
