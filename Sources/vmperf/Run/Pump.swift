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

/// -O: the warm-up, ended once on the loop thread (at once when there is none).
final class WarmUp: Sendable {
    private let endNanos = Atomic<Int64>(0)  // 0 while it runs

    @inline(__always) var isOver: Bool { endNanos.load(ordering: .acquiring) != 0 }
    /// When it ended (MonotonicClock), or nil while it runs.
    var end: Int64? {
        let nanos = endNanos.load(ordering: .acquiring)
        return nanos == 0 ? nil : nanos
    }

    func finish(at nanos: Int64) { endNanos.store(max(nanos, 1), ordering: .releasing) }
}

/// -b: holds a sending stream to a rate, on average since it started (as iperf3's throttle): before a block,
/// every `burst` blocks, it sleeps while the bytes sent are ahead of the rate.
struct Pacer {
    let bytesPerSecond: Double
    let burst: Int
    let startNanos: Int64

    init?(bitsPerSecond: Int?, burst: Int?, startNanos: Int64) {
        guard let bitsPerSecond, bitsPerSecond > 0 else { return nil }
        bytesPerSecond = Double(bitsPerSecond) / 8
        self.burst = burst ?? 1
        self.startNanos = startNanos
    }

    /// Returns once `sent` bytes are within the rate, or the test stops. Sleeps at most 10 ms at a time, so
    /// that a slow rate does not outlast the test's end.
    func wait(sent: Int, stop: StopFlag) {
        while !stop.isSet {
            let ahead = Double(sent) / bytesPerSecond - Double(MonotonicClock.nanoseconds() &- startNanos) / 1e9
            guard ahead > 0 else { return }
            var pause = timespec(tv_sec: 0, tv_nsec: Int(min(ahead, 0.01) * 1e9))
            nanosleep(&pause, nil)
        }
    }
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
    /// Writes `block` until the limit (counted from the warm-up's end), at most at the pacer's rate, then shuts
    /// down writing. Returns the bytes sent, and those of them sent in the warm-up.
    static func send<S: ByteStream>(
        _ stream: S, block: UnsafeRawBufferPointer, limit: Limit, pacer: Pacer?, warmUp: WarmUp, stop: StopFlag,
        counter: StreamCounter
    ) throws -> (sent: Int, warmUp: Int) {
        var sent = 0
        if !warmUp.isOver {  // -O: no limit yet; it counts from where this pump saw the warm-up end
            try sendBlocks(stream, block: block, until: nil, pacer: pacer, warmUp: warmUp, sent: &sent, stop: stop, counter: counter)
        }
        let base = sent  // all of it, if the test stopped in the warm-up
        let end: Int? = switch limit {  // no overflow: -k 2^62 of 128 MiB blocks is "for ever"
        case .time: nil
        case .bytes(let total): base.addingReportingOverflow(total).overflow ? .max : base + total
        case .blocks(let total):
            total.multipliedReportingOverflow(by: block.count).overflow || (total * block.count).addingReportingOverflow(base).overflow
                ? .max : base + total * block.count
        }
        // Called with nil where there is no pacer, so that the inlined loop has no pacing in it at all.
        if let pacer {
            try sendBlocks(stream, block: block, until: end, pacer: pacer, warmUp: nil, sent: &sent, stop: stop, counter: counter)
        } else {
            try sendBlocks(stream, block: block, until: end, pacer: nil, warmUp: nil, sent: &sent, stop: stop, counter: counter)
        }
        try stream.shutdownWrite()
        return (sent, base)
    }

    /// Writes blocks until `end` bytes in all (nil: no end), the stop flag, or, given `warmUp`, its end.
    @inline(__always)
    private static func sendBlocks<S: ByteStream>(
        _ stream: S, block: UnsafeRawBufferPointer, until end: Int?, pacer: Pacer?, warmUp: WarmUp?, sent: inout Int,
        stop: StopFlag, counter: StreamCounter
    ) throws {
        var blocks = 0
        while !stop.isSet {
            if let warmUp, warmUp.isOver { return }
            var chunk = block
            if let end {
                if sent >= end { return }
                if end - sent < block.count { chunk = UnsafeRawBufferPointer(rebasing: block[..<(end - sent)]) }  // -n need not be whole blocks
            }
            if let pacer {
                if blocks == 0 {
                    pacer.wait(sent: sent, stop: stop)
                    if let warmUp, warmUp.isOver { return }  // it may have ended in the pause: the block is the test's
                }
                blocks = blocks + 1 == pacer.burst ? 0 : blocks + 1
            }
            try stream.send(block: chunk)
            sent &+= chunk.count
            counter.bytes.store(sent, ordering: .relaxed)
        }
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

    /// Round trips of `block`: write it, wait for it to come back, record the time. Those made in the warm-up
    /// are left out of the histogram and the limit. Returns the round trips, and how many of them were the
    /// warm-up's.
    static func ping<S: ByteStream>(
        _ stream: S, block: UnsafeRawBufferPointer, scratch: UnsafeMutableRawBufferPointer, limit: Limit,
        warmUp: WarmUp, stop: StopFlag, counter: StreamCounter, histogram: inout Histogram<UInt64>
    ) throws -> (trips: Int, warmUp: Int) {
        let reply = UnsafeMutableRawBufferPointer(rebasing: scratch[..<block.count])
        var trips = 0
        var base = 0  // round trips in the warm-up
        var counting = warmUp.isOver
        while !stop.isSet {
            if !counting && warmUp.isOver {
                counting = true
                base = trips  // its own count, so that the histogram and the limit agree
                histogram.reset()
            }
            if counting, case .blocks(let total) = limit, trips - base >= total { break }
            if counting, case .bytes(let total) = limit, (trips - base) * block.count >= total { break }
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
        return (trips, base)
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
