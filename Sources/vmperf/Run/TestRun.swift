import Foundation
import Synchronization
import Histogram
import VMPerfSupport
import VMSock

/// One side of a test: each connection pumped on a thread of its own (blocking calls, the fastest way to move
/// bytes), and the duration and interval timers on an event loop thread.
final class TestRun: @unchecked Sendable {  // the result slots are written under `lock`, once per stream
    enum Side { case client, server }

    enum Role { case send, receive, ping, echo }

    struct Outcome {
        var streams: [StreamResult]
        var intervals: [[StreamSpan]]
        var cpu: CPUUsage
        var histogram: Histogram<UInt64>?
    }

    let parameters: TestParameters
    let side: Side
    let connections: [Connection]
    let roles: [Role]
    private let stop = StopFlag()
    private let warmUp = WarmUp()
    private let counters: [StreamCounter]
    private let lock = NSLock()
    private var results: [StreamResult?]
    private var histograms: [Histogram<UInt64>] = []
    private var failure: Error?

    /// The CPU every pump thread is pinned to (-A), or nil to let the scheduler place them.
    let cpu: Int?

    /// Seconds a read waits for data before the test fails (--rcv-timeout).
    let receiveTimeout: Double
    /// The control connection, watched while the test runs (`waitForPumps`).
    private let control: (any ByteStream)?
    /// The server's --server-bitrate-limit, checked while the test runs (`waitForPumps`).
    private let rateLimit: ServerBitrateLimit?
    private let debug: DebugLog

    init(
        _ parameters: TestParameters, side: Side, connections: [Connection], cpu: Int? = nil, receiveTimeout: Double = 120,
        control: (any ByteStream)? = nil, rateLimit: ServerBitrateLimit? = nil, debug: DebugLog = .off
    ) {
        self.parameters = parameters
        self.cpu = cpu
        self.receiveTimeout = receiveTimeout
        self.control = control
        self.rateLimit = rateLimit
        self.debug = debug
        self.side = side
        self.connections = connections
        roles = connections.map { connection in
            if parameters.mode == .latency { return side == .client ? .ping : .echo }
            return parameters.clientSends(connection.index) == (side == .client) ? .send : .receive
        }
        counters = connections.map { _ in StreamCounter() }
        results = Array(repeating: nil, count: connections.count)
    }

    /// Runs the test to its end. `printInterval` gets each interval's spans (on the loop thread).
    func run(printInterval: @escaping ([StreamSpan]) -> Void) throws -> Outcome {
        for connection in connections {
            connection.setSpin(parameters.spinUs)
            connection.stream.setReadTimeout(receiveTimeout)
        }
        let loopThread = try LoopThread()
        let cpuStart = CPUUsage.Snapshot.now()
        if parameters.omitSeconds == 0 { warmUp.finish(at: cpuStart.wall) }
        let sampler = IntervalSampler(
            counters: counters, senders: roles.map { $0 == .send || $0 == .ping },
            sending: connections.map { connection in { (connection.retransmissions, connection.congestionWindow) } },
            startNanos: cpuStart.wall, warmingUp: parameters.omitSeconds > 0,
            print: printInterval)
        let timers = startTimers(on: loopThread.loop, sampler)
        let done = DispatchGroup()
        writers.store(roles.filter { $0 != .receive }.count, ordering: .relaxed)
        for index in connections.indices {
            done.enter()
            // Not retained by the thread: `run` holds the test until every pump has left the group, and a pump
            // thread still finishing when the process exits (a -1 server that ends at once after an aborted test)
            // must not hold it half released (LeakSanitizer caught one of its connections that way).
            let thread = Thread { [unowned(unsafe) self] in
                self.pump(index, startNanos: cpuStart.wall)
                done.leave()
            }
            thread.stackSize = 1 << 20
            thread.start()
        }
        let broken = waitForPumps(done, startNanos: cpuStart.wall)
        let cpu = CPUUsage(from: cpuStart, to: .now())
        // Once the loop thread has ended, its timers cannot fire again (dropping them is safe on any thread) and
        // the sampler is ours alone: the last, partial interval is taken here.
        loopThread.stop()
        withExtendedLifetime(timers) {}
        if let broken { throw broken }
        if let failure { throw failure }
        sampler.sample(final: true)
        leaveOutWarmUp(sampler.warmUpRetransmits, startNanos: cpuStart.wall)
        var merged: Histogram<UInt64>? = nil
        for histogram in histograms {
            if merged == nil { merged = histogram } else { merged!.add(histogram) }
        }
        return Outcome(streams: results.map { $0! }, intervals: sampler.intervals, cpu: cpu, histogram: merged)
    }

    /// Streams of this side that write (send, or echo round trips) and still run. The other side can end only
    /// after each of them has.
    private let writers = Atomic<Int>(0)

    /// How long the other side may have spoken (or gone) on the control connection while this side still writes.
    static let otherSideGrace: Int64 = 3_000_000_000
    /// How long after a timed test's end a stream of this side may still be writing (its last block waits for
    /// room only while the other side reads slower than it: milliseconds).
    static let lastWriteGrace: Int64 = 10_000_000_000

    /// Waits for the pumps and meanwhile watches the control connection, the end of a timed test and the
    /// server's rate; any of them may abort the test, and then the reason is returned (nil when the pumps ended
    /// by themselves).
    /// - The other side speaks on the control connection only once its own side has ended (its results), which
    ///   takes every stream this side writes to have ended first; so input there (or its end) for more than
    ///   `otherSideGrace` while this side still writes is a side that is gone or broke off. Without this, a
    ///   sender paced by -b, asleep between blocks, would wait for its time to be up (hours, at a low rate), the
    ///   other side long gone. (This side's receivers may still drain what the other's kernel buffered: they are
    ///   not counted.)
    /// - A stream of this side still writing `lastWriteGrace` after a timed test's end, with nothing moved for as
    ///   long (a huge block over a slow link still moves), waits for room that a stuck (or hostile) other side,
    ///   still connected, will never make.
    private func waitForPumps(_ done: DispatchGroup, startNanos: Int64) -> Error? {
        guard control != nil || rateLimit != nil else {
            done.wait()
            return nil
        }
        let timed = parameters.bytes == 0 && parameters.blocks == 0
        let end = startNanos + Int64((Double(parameters.omitSeconds) + parameters.duration) * 1e9)
        let other = side == .client ? "server" : "client"
        var spokeAt: Int64?
        var rate = rateLimit.map { RateCheck($0, slack: rateSlack, startNanos: startNanos) }
        var reported = startNanos
        var (lastSent, movedAt) = (0, startNanos)
        while done.wait(timeout: .now() + .milliseconds(100)) == .timedOut {
            let now = MonotonicClock.nanoseconds()
            let writing = writers.load(ordering: .relaxed) > 0
            if spokeAt == nil, control?.hasInput() == true { spokeAt = now }
            if let spokeAt, writing, now - spokeAt > Self.otherSideGrace {
                return abort(Failure("the \(other) ended the test while this side still ran (it left, or its side failed)"), done)
            }
            let sent = sending
            if sent != lastSent { (lastSent, movedAt) = (sent, now) }
            if timed, writing, now - end > Self.lastWriteGrace, now - movedAt > Self.lastWriteGrace {
                return abort(Failure("a stream of this side still could not write \(Self.lastWriteGrace / 1_000_000_000) s after the test's end: the \(other) stopped reading"), done)
            }
            guard let limit = rateLimit, let reading = rate?.observe(nanos: now, bytes: carried) else { continue }
            if reading.windowHasPassed && now - reported >= 1_000_000_000 {
                reported = now
                debug("throughput " + String(format: "%.0f", reading.average)
                      + " bits/sec over the last \(Compare.format(limit.seconds)) s (limit \(limit.bitsPerSecond))")
            }
            if reading.isOver { return abort(ServerLimitExceeded(RateCheck.exceeded(reading.average, limit)), done) }
        }
        return nil
    }

    /// What this side's writing streams have moved so far.
    private var sending: Int {
        zip(counters, roles).reduce(0) { $0 + ($1.1 == .receive ? 0 : $1.0.bytes.load(ordering: .relaxed)) }
    }

    /// A paced test's streams may each be a burst of blocks ahead of their rate at any moment.
    private var rateSlack: Int {
        (parameters.bitsPerSecond ?? 0) > 0 ? parameters.connections * (parameters.burst ?? 1) * parameters.blockSize : 0
    }

    /// What every stream has moved so far, both ways: an echo's round trips carry each byte in and out.
    private var carried: Int {
        zip(counters, roles).reduce(0) { $0 + $1.0.bytes.load(ordering: .relaxed) * ($1.1 == .echo ? 2 : 1) }
    }

    /// Aborts the test, waits for its pumps, and returns why.
    private func abort(_ reason: Error, _ done: DispatchGroup) -> Error {
        abort()
        done.wait()
        return reason
    }

    /// Ends the test from another thread: the pumps stop, and calls blocked on the connections fail.
    private func abort() {
        stop.set()
        for connection in connections { connection.abort() }
    }

    /// The summary's figures count from the warm-up's end (-O). A sending stream's bytes and retransmits of the
    /// warm-up are taken off its result (`warmUpBytes` says how many bytes: the receiver's side takes the same
    /// off its own count, in `Summary`, as the two sides' warm-ups end on two clocks); every stream's time counts
    /// from this side's warm-up end, or from its planned end where this stream ended first.
    private func leaveOutWarmUp(_ warmUpRetransmits: [Int?]?, startNanos: Int64) {
        guard parameters.omitSeconds > 0 else { return }
        let planned = startNanos + Int64(parameters.omitSeconds) * 1_000_000_000
        for index in results.indices {
            guard var result = results[index] else { continue }
            if let warmUpBytes = result.warmUpBytes { result.bytes -= warmUpBytes }
            if let warmUpRetransmits, let retransmits = result.retransmits {
                result.retransmits = max(0, retransmits - (warmUpRetransmits[index] ?? 0))
            }
            let end = warmUp.end.flatMap { $0 <= result.endNanos ? $0 : nil } ?? planned
            result.seconds = max(0, Double(result.endNanos - end) / 1e9)
            results[index] = result
        }
    }

    /// The timers, made on the loop thread: the end of the warm-up (-O), the end of a timed test (after the
    /// warm-up), and the periodic report, which starts again where the warm-up ends.
    private func startTimers(on loop: EventLoop, _ sampler: IntervalSampler) -> Timers {
        let timers = Timers()
        let timed = parameters.bytes == 0 && parameters.blocks == 0
        let omit = parameters.omitSeconds
        let duration = parameters.duration
        let interval = parameters.interval
        let (stop, warmUp) = (self.stop, self.warmUp)
        let every = Duration.milliseconds(Int64(interval * 1000))
        loop.execute { [weak timers] in
            guard let timers else { return }
            if timed {
                timers.end = try? loop.schedule(after: .milliseconds(Int64((Double(omit) + duration) * 1000))) { stop.set() }
            }
            if interval > 0 {
                timers.interval = try? loop.schedule(after: every, repeating: true) { sampler.sample() }
            }
            guard omit > 0 else { return }
            // The loop weakly: a timer's body is freed only when the loop is (libevent finalizes it then), so a
            // body that held the loop would keep both, and the test's connections with them (LeakSanitizer).
            timers.warmUp = try? loop.schedule(after: .seconds(omit)) { [weak timers, weak loop] in
                sampler.endWarmUp(warmUp, reportsIntervals: interval > 0)
                guard let timers, let loop, interval > 0 else { return }
                timers.interval?.cancel()
                timers.interval = try? loop.schedule(after: every, repeating: true) { sampler.sample() }
            }
        }
        return timers
    }

    /// One connection's pump, on its own thread. A failure stops the whole test: the other connections are
    /// aborted, so that none of them waits for ever on a peer that will not send.
    private func pump(_ index: Int, startNanos: Int64) {
        let connection = connections[index]
        defer { if roles[index] != .receive { writers.subtract(1, ordering: .relaxed) } }
        do {
            if let cpu {
                let code = CPUMask.only(cpu).apply()
                if code != 0 { throw Failure("cannot run on CPU \(cpu) (-A): \(errorText(code))") }
            }
            let how = PumpPlan(
                role: roles[index], limit: limit(for: index), stop: stop, warmUp: warmUp, counter: counters[index],
                pacer: Pacer(bitsPerSecond: parameters.bitsPerSecond, burst: parameters.burst, startNanos: startNanos))
            let (bytes, warmUpBytes, histogram) = try Self.pump(connection, how, parameters: parameters)
            let endNanos = MonotonicClock.nanoseconds()
            let sender = roles[index] == .send || roles[index] == .ping
            lock.withLock {
                results[index] = StreamResult(
                    index: connection.index, sender: sender, bytes: bytes, seconds: Double(endNanos - startNanos) / 1e9,
                    waits: connection.waitStatistics, retransmits: sender ? connection.retransmissions : nil,
                    warmUpBytes: warmUpBytes, endNanos: endNanos)
                if let histogram { histograms.append(histogram) }
            }
        } catch {
            let error = isReadTimeout(error)
                ? Failure("no data arrived on stream \(connection.index + 1) for \(Compare.format(receiveTimeout)) s (--rcv-timeout): the other side stopped sending (\(error))")
                : error
            let first = lock.withLock { () -> Bool in
                defer { if failure == nil { failure = error } }
                return failure == nil
            }
            if first {
                stop.set()
                for other in connections where other.index != connection.index { other.abort() }
            }
        }
    }

    /// -n and -k count for the whole test in iperf3; here they are shared out between the streams that send in
    /// one direction (the first gets the remainder).
    private func limit(for index: Int) -> Limit {
        let position = parameters.bidir ? index % parameters.streams : index
        func share(_ total: Int) -> Int {
            total / parameters.streams + (position == 0 ? total % parameters.streams : 0)
        }
        if parameters.bytes > 0 { return .bytes(max(1, share(parameters.bytes))) }
        if parameters.blocks > 0 { return .blocks(max(1, share(parameters.blocks))) }
        return .time
    }

    /// What one pump does and the state it shares with the test.
    struct PumpPlan {
        var role: Role
        var limit: Limit
        var stop: StopFlag
        var warmUp: WarmUp
        var counter: StreamCounter
        var pacer: Pacer?
    }

    /// What a pump did: the bytes it moved; for a sending one (send, ping), how many of them in the warm-up; the
    /// round trips' histogram.
    typealias Pumped = (bytes: Int, warmUpBytes: Int?, histogram: Histogram<UInt64>?)

    /// Picks the specialized pump for the connection's concrete type.
    private static func pump(_ connection: Connection, _ how: PumpPlan, parameters: TestParameters) throws -> Pumped {
        switch connection.carrier {
        case .socket(let socket): try pump(socket, how, parameters: parameters)
        case .unix(let unix): try pump(unix, how, parameters: parameters)
        }
    }

    private static func pump<S: ByteStream>(_ stream: S, _ how: PumpPlan, parameters: TestParameters) throws -> Pumped {
        let (limit, stop, counter) = (how.limit, how.stop, how.counter)
        let size = parameters.blockSize
        let block = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 64)
        defer { block.deallocate() }
        for offset in 0..<size { block[offset] = UInt8(truncatingIfNeeded: offset &* 131 &+ 7) }
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: max(size, 128 << 10), alignment: 64)
        defer { scratch.deallocate() }
        switch how.role {
        case .send:
            let (sent, warmUp) = try Pump.send(
                stream, block: UnsafeRawBufferPointer(block), limit: limit, pacer: how.pacer, warmUp: how.warmUp, stop: stop,
                counter: counter)
            return (sent, warmUp, nil)
        case .receive:
            return (try Pump.receive(stream, scratch: scratch, counter: counter), nil, nil)
        case .ping:
            var histogram = Histogram<UInt64>(
                lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
            let (trips, warmUp) = try Pump.ping(
                stream, block: UnsafeRawBufferPointer(block), scratch: scratch, limit: limit, warmUp: how.warmUp,
                stop: stop, counter: counter, histogram: &histogram)
            return (trips * size, warmUp * size, histogram)
        case .echo:
            return (try Pump.echo(stream, size: size, scratch: scratch, counter: counter) * size, nil, nil)
        }
    }
}

/// The loop's timers, kept alive until the test ends; set on the loop thread, dropped after it stopped.
final class Timers: @unchecked Sendable {
    var end: LoopTimer?
    var interval: LoopTimer?
    var warmUp: LoopTimer?
}
