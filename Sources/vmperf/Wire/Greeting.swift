/// The first 48 bytes on every connection a client opens: which test it belongs to and what it is for.
///
/// ```
///  offset  size  field
///       0     8  magic "vmperf" 0 1 (the last byte is the protocol version)
///       8     4  kind: 0 control, 1 data (little-endian)
///      12     4  stream index, for data connections (little-endian)
///      16    32  cookie: the test's random name, ASCII letters and digits
/// ```
struct Greeting: Equatable {
    enum Kind: UInt32 { case control = 0, data = 1 }

    static let size = 48
    static let magic: [UInt8] = Array("vmperf".utf8) + [0, 1]

    let kind: Kind
    let index: Int
    let cookie: [UInt8]

    static func newCookie() -> [UInt8] {
        let letters = Array("abcdefghijklmnopqrstuvwxyz234567".utf8)
        return (0..<32).map { _ in letters.randomElement()! }
    }

    var bytes: [UInt8] {
        var out = Self.magic
        withUnsafeBytes(of: kind.rawValue.littleEndian) { out += $0 }
        withUnsafeBytes(of: UInt32(index).littleEndian) { out += $0 }
        return out + cookie
    }

    /// Checks what a client sent; nil for anything that is not a greeting of this version.
    init?(_ bytes: [UInt8]) {
        guard bytes.count == Self.size, Array(bytes[0..<8]) == Self.magic else { return nil }
        let word = { (at: Int) in bytes[at..<at + 4].reversed().reduce(UInt32(0)) { $0 << 8 | UInt32($1) } }
        guard let kind = Kind(rawValue: word(8)), word(12) < 1024 else { return nil }
        self.kind = kind
        index = Int(word(12))
        cookie = Array(bytes[16...])
    }

    init(kind: Kind, index: Int, cookie: [UInt8]) {
        self.kind = kind
        self.index = index
        self.cookie = cookie
    }
}
