/// The memory that one side of a connection owns and writes: its half of the connection.
///
/// Each side creates one region, maps it read-write, and hands it to the peer, who maps it read-only. Everything a
/// side writes lives in its own region, so a peer can never write into ours. The region carries this side's
/// outgoing bytes (it is the *producer* of its ring) and this side's progress through the peer's ring (it is the
/// *consumer* of the peer's ring).
///
/// ```
///  offset  size  field                  read by the peer
///  ------  ----  ---------------------  --------------------------------------------------------------
///       0     8  magic "vmsockR\u{1}"   once, at attach
///       8     4  layout version         once, at attach
///      12     4  header size (4096)     once, at attach
///      16     8  data capacity          once, at attach (must equal what the handshake said)
///      24   104  reserved, zero
///     128     8  producer position      peer reader: bytes of our data it may read, up to here
///     136   120  padding                (two cache lines per hot word: adjacent-line prefetch)
///     256     8  consumer position      peer writer: how far we have consumed the peer's ring
///     264   120  padding
///     384     8  waiting for data       peer writer: after publishing, ring our data bell if odd and not
///                                         rung for yet (a new value per announcement: `WaitWord`)
///     392   120  padding
///     512     8  waiting for space      peer reader: after consuming, ring our space bell, likewise
///     520   120  padding
///     640     4  shutdown flags         peer: bit 0 write side shut (producer position is final),
///                                             bit 1 read side shut, bit 2 closed, bit 3 parked (the
///                                             connection is gone on this side, which keeps the link
///                                             for the next connection between the same two processes),
///                                             bit 4 retired (a side that does not keep the link: do
///                                             not reopen it); bits 8-31 the connection's generation on
///                                             its link (0 on a new link, one more at each reopen): bits
///                                             of another generation are not this connection's
///     644   124  padding
///     768     8  bell word (vmsock-run) peer reader: (reader generation rung << 32) | wake-up bytes
///                                       sent on the TCP socket; only vmsock-run's C data path uses it
///     776  3320  reserved, zero
///    4096   cap  data                   peer reader; mapped twice back to back where the mapper can
/// ```
///
/// Positions are 64-bit byte counters that only grow; a position maps to `data[position & (capacity - 1)]`.
public enum RingLayout {
    /// "vmsockR" and a 1, read as a little-endian 64-bit word.
    public static let magic: UInt64 = 0x0152_6b63_6f73_6d76
    /// 2: the waiting words are 64-bit announcement counters, rung for once each (1: 32-bit flags, rung for at
    /// every publish).
    public static let version: UInt32 = 2
    public static let headerSize = 4096

    public static let minimumCapacity = 4 << 10
    public static let maximumCapacity = 64 << 20
    public static let defaultCapacity = 256 << 10

    public enum Offset {
        public static let magic = 0
        public static let version = 8
        public static let headerSize = 12
        public static let capacity = 16
        public static let producerPosition = 128
        public static let consumerPosition = 256
        public static let waitingForData = 384
        public static let waitingForSpace = 512
        public static let shutdownFlags = 640
        /// vmsock-run's writer: which reader generation it last sent a wake-up byte for, and how many it sent
        /// (`Sources/CVMSockPreload/stream.c`; that data path keeps its own 32-bit words at `waitingForData`, a
        /// reader generation, and `waitingForSpace`, a flag: a vmsock-run link never meets this library's engine).
        public static let preloadBell = 768
    }

    /// Bits of the shutdown word.
    public enum Shutdown {
        public static let write: UInt32 = 1 << 0
        public static let read: UInt32 = 1 << 1
        public static let closed: UInt32 = 1 << 2
        /// Set after `closed`, once nothing in this process touches the connection any more: the connector may
        /// ask to reopen the link (see `HandshakeMessage.Kind.reopen`).
        public static let parked: UInt32 = 1 << 3
        /// Set by a side that does not keep the link (its time is up, its listener closes, or it could not park
        /// it): a connector that sees it must not reopen the link, and frees its copy (see `LinkReuse`).
        public static let retired: UInt32 = 1 << 4
        /// Set with `closed` by a listener that ends a connection it never served (a reopen it refuses): the
        /// connector's reads and writes fail with ECONNRESET, as a TCP connection reset in a backlog does.
        public static let reset: UInt32 = 1 << 5
        /// The bits above this shift are the generation of the connection the bits below belong to.
        public static let generationShift: UInt32 = 8
        /// Generations count modulo 2^24.
        public static let generationMask: UInt32 = 0xFF_FFFF
    }

    /// A data capacity is valid when it is a power of two from 4 KiB to 64 MiB (so it is also a whole number
    /// of pages, which the double mapping needs).
    public static func isValid(capacity: Int) -> Bool {
        capacity >= minimumCapacity && capacity <= maximumCapacity && capacity & (capacity - 1) == 0
    }

    /// Bytes of the whole region: header and one copy of the data.
    public static func regionSize(capacity: Int) -> Int { headerSize + capacity }

    /// Where `count` bytes from stream position `position` lie in a data area: `first` bytes from `offset`, and
    /// the rest (if any) from the start of the area. With the double mapping (`mirrored`) it is one piece.
    @inlinable @inline(__always)
    static func segments(
        at position: UInt64, count: Int, capacity: UInt64, mirrored: Bool
    ) -> (offset: Int, first: Int) {
        let offset = Int(position & (capacity &- 1))
        return (offset, mirrored ? count : min(count, Int(capacity) - offset))
    }
}
