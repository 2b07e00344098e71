import ArgumentParser
import Foundation

/// A byte or block count as iperf3 takes it: a number with an optional K, M, G or T suffix (powers of 1024).
struct ByteCount: ExpressibleByArgument, Equatable {
    let value: Int

    init(_ value: Int) { self.value = value }

    init?(argument: String) {
        var digits = Substring(argument)
        var scale = 1
        if let last = digits.last, let power = "kmgt".firstIndex(of: Character(last.lowercased())) {
            scale = 1 << (10 * ("kmgt".distance(from: "kmgt".startIndex, to: power) + 1))
            digits = digits.dropLast()
        }
        guard let number = Double(digits), number.isFinite, number >= 0, number * Double(scale) < 0x1p62 else { return nil }
        value = Int(number * Double(scale))
    }

    static var defaultCompletionKind: CompletionKind { .default }
}

/// `-f`: iperf3's report formats. Lower case is bits (powers of 1000), upper case bytes (powers of 1024);
/// `a`/`A` pick the unit by size.
struct RateFormat: ExpressibleByArgument, Equatable {
    let letter: Character

    static let adaptiveBits = RateFormat(letter: "a")

    private init(letter: Character) { self.letter = letter }

    /// What --help shows as the default.
    var defaultValueDescription: String { String(letter) }

    init?(argument: String) {
        guard argument.count == 1, let letter = argument.first, "kmgtKMGTaAbB".contains(letter) else { return nil }
        self.letter = letter
    }

    var isBits: Bool { letter.isLowercase }
}

/// iperf3's `unit_snprintf`: four significant places and a unit, e.g. "9.41 Gbits" or "1.10 GBytes".
enum Units {
    private static let bitLabels = ["bits", "Kbits", "Mbits", "Gbits", "Tbits"]
    private static let byteLabels = ["Bytes", "KBytes", "MBytes", "GBytes", "TBytes"]

    /// `amount` is in bytes; `format` picks bits or bytes and the unit.
    static func format(_ amount: Double, _ format: RateFormat) -> String {
        let bits = format.isBits
        let value = bits ? amount * 8 : amount
        let base = bits ? 1000.0 : 1024.0
        var power = "bkmgt".firstIndex(of: Character(format.letter.lowercased()))
            .map { "bkmgt".distance(from: "bkmgt".startIndex, to: $0) } ?? 0
        if format.letter == "a" || format.letter == "A" {
            while value / pow(base, Double(power)) >= base && power < 4 { power += 1 }
        }
        let number = value / pow(base, Double(power))
        let digits = number < 9.995 ? 2 : number < 99.95 ? 1 : 0
        return String(format: "%4.\(digits)f", number) + " " + (bits ? bitLabels : byteLabels)[power]
    }

    /// A transfer: always bytes, adaptive, whatever -f says (iperf3 prints transfers with 'A'; -f picks the unit
    /// of the rate only).
    static func transfer(_ bytes: Double) -> String {
        Self.format(bytes, RateFormat(argument: "A")!)
    }

    /// A rate: `bytesPerSecond` in the -f unit, with "/sec".
    static func rate(_ bytesPerSecond: Double, _ format: RateFormat) -> String {
        Self.format(bytesPerSecond, format) + "/sec"
    }
}

/// `-b`: iperf3's target bitrate, `#[KMGT][/#]`: bits per second with powers of 1000 (a rate, not a size), and
/// after a slash how many blocks go out back to back between two looks at the clock (1 to 1000).
struct Bitrate: ExpressibleByArgument, Equatable {
    /// Bits per second; 0 for unlimited.
    let bitsPerSecond: Int
    let burst: Int?

    init?(argument: String) {
        let parts = argument.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let bitsPerSecond = Self.bitsPerSecond(parts[0]) else { return nil }
        self.bitsPerSecond = bitsPerSecond
        if parts.count == 2 {
            guard let burst = Int(parts[1]), (1...1000).contains(burst) else { return nil }
            self.burst = burst
        } else {
            burst = nil
        }
    }

    /// `#[KMGT]`: bits per second, powers of 1000; nil for anything else.
    static func bitsPerSecond(_ text: Substring) -> Int? {
        var digits = text
        var scale = 1.0
        if let last = digits.last, let power = "kmgt".firstIndex(of: Character(last.lowercased())) {
            scale = pow(1000, Double("kmgt".distance(from: "kmgt".startIndex, to: power) + 1))
            digits = digits.dropLast()
        }
        guard let number = Double(digits), number.isFinite, number >= 0, number * scale < 0x1p62 else { return nil }
        return Int(number * scale)
    }

    static var defaultCompletionKind: CompletionKind { .default }
}

/// `--server-bitrate-limit`: iperf3's `#[KMGT][/#]`, the most bits per second all of a test's streams may carry
/// together on the server (0: no limit), averaged over the seconds after the slash (0.1 to 60; default 5).
struct ServerBitrateLimit: ExpressibleByArgument, Equatable {
    let bitsPerSecond: Int
    let seconds: Double

    init(bitsPerSecond: Int, seconds: Double = 5) {
        self.bitsPerSecond = bitsPerSecond
        self.seconds = seconds
    }

    init?(argument: String) {
        let parts = argument.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let bitsPerSecond = Bitrate.bitsPerSecond(parts[0]) else { return nil }
        self.bitsPerSecond = bitsPerSecond
        seconds = parts.count == 2 ? Double(parts[1]) ?? .nan : 5
        guard seconds >= 0.1 && seconds <= 60 else { return nil }
    }

    static var defaultCompletionKind: CompletionKind { .default }
}
