import Glibc
import Histogram
import Synchronization
import VMPerfSupport
import VMSock

/// Bytes a stream has moved so far: stored by its pump after every block, read by the interval timer.
/// Padded to two cache lines so that pumps on different cores never share a line.
final class StreamCounter: @unchecked Sendable {  // one writer (the pump), readers only load
    let bytes = Atomic<Int>(0)
    let roundTrips = Atomic<Int>(0)
    private let padding: (Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int) =
        (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
}

/// Set by the duration timer; the sending pumps check it between blocks.
final class StopFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    @inline(__always) var isSet: Bool { flag.load(ordering: .relaxed) }
    func set() { flag.store(true, ordering: .relaxed) }
}

/// When a sending pump stops: at the stop flag (-t), or after a number of bytes (-n) or blocks (-k).
enum Limit: Equatable {
    case time
    case bytes(Int)
    case blocks(Int)
}

/// The hot loops. Generic, and called with the concrete stream type, so each is specialized: per block there is
/// no allocation, no reference counting and no dynamic dispatch; over shared memory, no system call either.
enum Pump {
    /// Writes `block` until the limit, then shuts down writing. Returns the bytes sent.
    static func send<S: ByteStream>(
        _ stream: S, block: UnsafeRawBufferPointer, limit: Limit, stop: StopFlag, counter: StreamCounter
    ) throws -> Int {
        var sent = 0
        var blocks = 0
        while !stop.isSet {
            if case .bytes(let total) = limit, sent >= total { break }
            if case .blocks(let total) = limit, blocks >= total { break }
            var chunk = block
            if case .bytes(let total) = limit, total - sent < block.count {
                chunk = UnsafeRawBufferPointer(rebasing: block[..<(total - sent)])  // -n need not be whole blocks
            }
            try stream.send(block: chunk)
            sent &+= chunk.count
            blocks &+= 1
            counter.bytes.store(sent, ordering: .relaxed)
        }
        try stream.shutdownWrite()
        return sent
    }

    /// Reads until end of stream. Returns the bytes received.
    static func receive<S: ByteStream>(_ stream: S, scratch: UnsafeMutableRawBufferPointer, counter: StreamCounter) throws -> Int {
        var received = 0
        while true {
            let n = try stream.receive(scratch: scratch)
            if n == 0 { return received }
            received &+= n
            counter.bytes.store(received, ordering: .relaxed)
        }
    }

    /// Round trips of `block`: write it, wait for it to come back, record the time. Returns the round trips.
    static func ping<S: ByteStream>(
        _ stream: S, block: UnsafeRawBufferPointer, scratch: UnsafeMutableRawBufferPointer, limit: Limit,
        stop: StopFlag, counter: StreamCounter, histogram: inout Histogram<UInt64>
    ) throws -> Int {
        let reply = UnsafeMutableRawBufferPointer(rebasing: scratch[..<block.count])
        var trips = 0
        while !stop.isSet {
            if case .blocks(let total) = limit, trips >= total { break }
            if case .bytes(let total) = limit, trips * block.count >= total { break }
            let start = MonotonicClock.nanoseconds()
            try stream.send(block: block)
            guard try stream.readExactly(reply) else {
                throw Failure("the server closed the connection in the middle of a round trip")
            }
            _ = histogram.record(UInt64(MonotonicClock.nanoseconds() &- start))
            trips &+= 1
            counter.roundTrips.store(trips, ordering: .relaxed)
            counter.bytes.store(trips &* block.count, ordering: .relaxed)
        }
        try stream.shutdownWrite()
        while try stream.receive(scratch: scratch) > 0 {}  // the echo side's end of stream
        return trips
    }

    /// Sends back every `size`-byte message until end of stream. Returns the messages echoed.
    static func echo<S: ByteStream>(_ stream: S, size: Int, scratch: UnsafeMutableRawBufferPointer, counter: StreamCounter) throws -> Int {
        let message = UnsafeMutableRawBufferPointer(rebasing: scratch[..<size])
        var trips = 0
        while try stream.readExactly(message) {
            try stream.send(block: UnsafeRawBufferPointer(message))
            trips &+= 1
            counter.roundTrips.store(trips, ordering: .relaxed)
            counter.bytes.store(trips &* size, ordering: .relaxed)
        }
        try stream.shutdownWrite()
        return trips
    }
}
