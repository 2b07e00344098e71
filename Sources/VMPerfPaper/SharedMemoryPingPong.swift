import CVMSock
import VMPerfSupport
import VMSock

/// One row's loop as one side runs it. Both sides call `run` with the same count; side 0's calls are timed.
/// `run` must make no allocation, no ARC traffic, no lock and (shared-memory rows) no system call.
protocol PingPong {
    /// `iterations` round trips.
    mutating func run(_ side: inout Side, _ iterations: Int) throws
    /// Outside the timing, after each run: checks that the run really did what it claims.
    mutating func verify(_ side: inout Side, _ iterations: Int) throws
}

extension PingPong {
    mutating func verify(_ side: inout Side, _ iterations: Int) throws {}
}

extension Side {
    /// A warm-up, then `runs` timed runs, each started by both sides together through the barrier. Returns the
    /// runs' figures in µs per round trip (the parent's clock; the peer's figures mean nothing).
    mutating func measure(_ bench: inout some PingPong) throws -> [Double] {
        let (runs, iterations, warmup) = (page.runs, page.iterations, page.warmup)
        try bench.run(&self, warmup)
        try bench.verify(&self, warmup)
        var figures: [Double] = []
        figures.reserveCapacity(runs)
        for _ in 0..<runs {
            try barrier()
            let start = MonotonicClock.nanoseconds()
            try bench.run(&self, iterations)
            let elapsed = MonotonicClock.nanoseconds() - start
            try bench.verify(&self, iterations)
            figures.append(Double(elapsed) / 1000 / Double(iterations))
        }
        return figures
    }
}

/// Raw (the paper's Fig. 2a): one shared word says whose turn it is; each side busy-waits for its id, then
/// hands the turn to the other. Starts with turn == 0.
struct RawPingPong: PingPong {
    mutating func run(_ side: inout Side, _ iterations: Int) throws {
        let turn = side.page.turn
        if side.me == 0 {
            // The same two steps, rotated: the parent holds the turn when a run starts, so it hands it over
            // first and its clock stops when the last round trip has come back.
            for _ in 0..<iterations {
                vms_store_release_u32(turn, 1)
                try side.wait(turn, equals: 0)
            }
        } else {
            for _ in 0..<iterations {
                try side.wait(turn, equals: 1)
                vms_store_release_u32(turn, 0)
            }
        }
    }
}

/// Sync (Fig. 2b): strict alternation through two bakery semaphores, one per side, each turn adding one to a
/// shared integer: P(mine); counter += 1; V(theirs). Starts with both semaphores at 0 and the parent's turn.
struct SyncPingPong: PingPong {
    /// What the counter must read after each run (parent side): two turns per round trip.
    private var expected: UInt64 = 0

    mutating func run(_ side: inout Side, _ iterations: Int) throws {
        let (mine, theirs, counter, me) = (side.page.semaphore(side.me), side.page.semaphore(side.other), side.page.counter, side.me)
        if me == 0 {
            // Rotated like Raw: the parent's first turn needs no P.
            for _ in 0..<iterations {
                counter.pointee &+= 1
                try theirs.signal(me, &side.watch)
                try mine.wait(me, &side.watch)
            }
        } else {
            for _ in 0..<iterations {
                try mine.wait(me, &side.watch)
                counter.pointee &+= 1
                try theirs.signal(me, &side.watch)
            }
        }
    }

    mutating func verify(_ side: inout Side, _ iterations: Int) throws {
        guard side.me == 0 else { return }
        expected &+= 2 &* UInt64(iterations)
        let counted = side.page.counter.pointee
        guard counted == expected else {
            throw Failure("Sync: the shared integer is \(counted) after the run, not \(expected): the semaphores let a turn through twice or lost one")
        }
    }
}

/// Sync1k: Sync passing 1000 bytes each turn instead of an integer. The turn's owner copies 1000 bytes out of the page (what the
/// other side wrote in its turn) and 1000 of its own in. The first 8 bytes carry the sender's turn number, the
/// rest a pattern the receiver checks after each run, so that every copy is real and a stale one would show.
struct Sync1kPingPong: PingPong {
    static let bytes = 1000
    private let outgoing: UnsafeMutableRawPointer
    private let incoming: UnsafeMutableRawPointer
    private let theirSeed: UInt64
    /// The turn numbers received this run; must add up to 0 + 1 + ... + (iterations - 1).
    private var stamps: UInt64 = 0

    init(me: Int) {
        outgoing = .allocate(byteCount: Self.bytes, alignment: 64)
        incoming = .allocate(byteCount: Self.bytes, alignment: 64)
        incoming.initializeMemory(as: UInt8.self, repeating: 0, count: Self.bytes)
        vms_pattern_fill(outgoing, Self.bytes, 0, UInt64(me + 1))
        theirSeed = UInt64(2 - me)
    }

    func close() {
        outgoing.deallocate()
        incoming.deallocate()
    }

    mutating func run(_ side: inout Side, _ iterations: Int) throws {
        let (mine, theirs, buffer, me) = (side.page.semaphore(side.me), side.page.semaphore(side.other), side.page.buffer, side.me)
        if me == 0 {
            for turn in 0..<iterations {
                send(turn, buffer)
                try theirs.signal(me, &side.watch)
                try mine.wait(me, &side.watch)
                receive(buffer)
            }
        } else {
            for turn in 0..<iterations {
                try mine.wait(me, &side.watch)
                receive(buffer)
                send(turn, buffer)
                try theirs.signal(me, &side.watch)
            }
        }
    }

    @inline(__always) private func send(_ turn: Int, _ buffer: UnsafeMutableRawPointer) {
        outgoing.storeBytes(of: UInt64(turn), as: UInt64.self)
        buffer.copyMemory(from: outgoing, byteCount: Self.bytes)
    }

    @inline(__always) private mutating func receive(_ buffer: UnsafeMutableRawPointer) {
        incoming.copyMemory(from: buffer, byteCount: Self.bytes)
        stamps &+= incoming.load(as: UInt64.self)
    }

    mutating func verify(_ side: inout Side, _ iterations: Int) throws {
        let want = UInt64(iterations) &* UInt64(iterations - 1) / 2
        defer { stamps = 0 }
        guard stamps == want else {
            throw Failure("Sync1k: the turn numbers received add up to \(stamps), not \(want): a turn's bytes were lost or seen twice")
        }
        let good = vms_pattern_check(incoming + 8, Self.bytes - 8, 8, theirSeed)
        guard good == Self.bytes - 8 else {
            throw Failure("Sync1k: byte \(8 + good) of the last 1000-byte block read back differs from what the other side wrote")
        }
    }
}
