// Compiled into every fuzz target (tools/fuzz.sh): reads the fuzzer's bytes as a little program.

/// The fuzzer's input, read front to back. Past the end every read gives zero, so every input, however short,
/// is a complete program: the fuzzer never wastes a run on an input the harness refuses.
struct FuzzInput {
    let bytes: UnsafeRawBufferPointer
    private(set) var offset = 0

    init(_ data: UnsafeRawPointer?, _ count: Int) {
        bytes = UnsafeRawBufferPointer(start: count > 0 ? data : nil, count: count)
    }

    var isEmpty: Bool { offset >= bytes.count }
    var remaining: Int { max(0, bytes.count - offset) }

    mutating func byte() -> UInt8 {
        guard offset < bytes.count else { return 0 }
        defer { offset += 1 }
        return bytes[offset]
    }

    mutating func bool() -> Bool { byte() & 1 != 0 }

    /// A little-endian integer from the next `T.bitWidth / 8` bytes (zero-padded past the end).
    mutating func integer<T: FixedWidthInteger>(_: T.Type = T.self) -> T {
        var value: T = 0
        for i in 0..<(T.bitWidth / 8) { value |= T(truncatingIfNeeded: byte()) << (8 * i) }
        return value
    }

    /// The next `count` bytes (fewer at the end).
    mutating func take(_ count: Int) -> [UInt8] {
        let n = max(0, min(count, remaining))
        defer { offset += n }
        return Array(bytes[offset..<offset + n])
    }

    mutating func rest() -> [UInt8] { take(remaining) }

    /// One of `choices`, picked by the next byte.
    mutating func pick<T>(_ choices: [T]) -> T { choices[Int(byte()) % choices.count] }

    /// The rest as an argument vector: words separated by zero bytes, decoded as UTF-8 (invalid bytes become
    /// U+FFFD, as a shell would pass them through to a Swift program's CommandLine.arguments).
    mutating func words() -> [String] {
        rest().split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
    }
}

/// Stops the run with a message libFuzzer reports as a crash, and saves the input: an invariant did not hold.
func require(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String, line: UInt = #line) {
    if !condition() { fatalError("invariant broken: \(message())", line: line) }
}
