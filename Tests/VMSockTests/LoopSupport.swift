import CVMSock
import Foundation
import Synchronization
import VMSock
import XCTest

// Helpers for the loop and async tests: many connected pairs at once, a TCP stand-in, and echo endpoints that
// run on a loop thread.

/// What the echo server and client need from a connection: the loop's readiness contract plus non-blocking I/O.
protocol EchoEndpoint: ReadinessSource {
    func read(into buffer: UnsafeMutableRawBufferPointer) throws(VMSockError) -> Int
    func write(_ buffer: UnsafeRawBufferPointer) throws(VMSockError) -> Int
    func shutdownWrite() throws(VMSockError)
    func close()
}

extension VMSocket: EchoEndpoint {
    func shutdownWrite() throws(VMSockError) { try shutdown(.write) }
}

/// `count` shared-memory pairs through one listener.
func makePairs(_ count: Int, options: VMSocketOptions = VMSocketOptions(ringSize: 4096)) throws
    -> [(server: VMSocket, client: VMSocket)]
{
    let listener = try VMListener(address: .port(freePortText()), options: options, backlog: 512)
    let accepted = Background { try (0..<count).map { _ in try listener.accept() } }
    let clients = try (0..<count).map { _ in try VMSocket.connect(to: listener.address, options: options) }
    let servers = try XCTUnwrap(accepted.wait(timeout: 120)).get()
    return Array(zip(servers, clients))
}

/// `count` pairs of `VMSocket`s connected over TCP on 127.0.0.1 (transport policy `tcp`).
func makeTCPPairs(_ count: Int) throws -> [(server: VMSocket, client: VMSocket)] {
    let pairs = try makePairs(count, options: VMSocketOptions(transport: .tcp))
    XCTAssertTrue(pairs.allSatisfy { $0.server.transport == .tcp && $0.client.transport == .tcp })
    return pairs
}

/// Runs `body` on the loop thread and waits for its result.
func onLoop<T: Sendable>(_ loop: EventLoop, timeout: TimeInterval = 30, _ body: @escaping @Sendable () throws -> T) throws -> T {
    let done = DispatchSemaphore(value: 0)
    let result = Mutex<Result<T, Error>?>(nil)
    loop.execute {
        let outcome = Result { try body() }
        result.withLock { $0 = outcome }
        done.signal()
    }
    guard done.wait(timeout: .now() + timeout) == .success else {
        throw VMSockError(code: ETIMEDOUT, "the loop did not run the job in \(timeout) s")
    }
    return try result.withLock { $0! }.get()
}

/// Counts finished endpoints and collects failures, from any loop thread.
final class Tally: Sendable {
    private let state = Mutex<(done: Int, failures: [String])>((0, []))
    private let expected: Int
    private let allDone = DispatchSemaphore(value: 0)

    init(expecting expected: Int) { self.expected = expected }

    func finished(_ failure: String? = nil) {
        let last = state.withLock { state in
            state.done += 1
            if let failure { state.failures.append(failure) }
            return state.done == expected
        }
        if last { allDone.signal() }
    }

    var done: Int { state.withLock { $0.done } }
    var failures: [String] { state.withLock { $0.failures } }

    func wait(timeout: TimeInterval) -> Bool { allDone.wait(timeout: .now() + timeout) == .success }
}

/// The server half of an echo: writes back what it reads; stops reading while its output is full; at end of
/// stream shuts down writing and closes. Loop thread only.
final class EchoServer<Endpoint: EchoEndpoint> {
    private let endpoint: Endpoint
    private let tally: Tally
    private var readWatch: ReadinessWatch?
    private var writeWatch: ReadinessWatch?
    private let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 16)
    private var pending = 0..<0

    init(_ endpoint: Endpoint, loop: EventLoop, tally: Tally) throws {
        self.endpoint = endpoint
        self.tally = tally
        readWatch = try loop.watch(endpoint, for: .read) { [self] in onReadable() }
        writeWatch = try loop.watch(endpoint, for: .write, enabled: false) { [self] in onWritable() }
    }

    deinit { buffer.deallocate() }

    private func onReadable() {
        do {
            for _ in 0..<8 {
                let n = try endpoint.read(into: buffer)
                if n == 0 { return finish(nil) }
                pending = 0..<n
                guard try flush() else { return }
            }
        } catch where error.code == EAGAIN {
        } catch { finish("server: \(error)") }
    }

    private func onWritable() {
        do {
            if try flush() {
                writeWatch?.disable()
                readWatch?.enable()
            }
        } catch { finish("server write: \(error)") }
    }

    /// Writes what is pending; false (and read paused, write watched) when the peer's ring is full.
    private func flush() throws(VMSockError) -> Bool {
        while !pending.isEmpty {
            do throws(VMSockError) {
                pending = (pending.lowerBound + (try endpoint.write(UnsafeRawBufferPointer(rebasing: buffer[pending]))))..<pending.upperBound
            } catch where error.code == EAGAIN {
                readWatch?.disable()
                writeWatch?.enable()
                return false
            }
        }
        return true
    }

    private func finish(_ failure: String?) {
        try? endpoint.shutdownWrite()
        readWatch?.cancel()
        writeWatch?.cancel()
        readWatch = nil  // the watches held the handlers, which held us: we go when this call returns
        writeWatch = nil
        endpoint.close()
        tally.finished(failure)
    }
}

/// The client half: streams `total` pattern bytes, reads the echo back checking every byte, and expects end of
/// stream after exactly `total`. `pauses` (0...1) makes either side stop at random for a random while, so that
/// the peer sees it asleep and awake by turns. Loop thread only.
final class EchoClient<Endpoint: EchoEndpoint>: @unchecked Sendable {  // handed between threads, used on its loop only
    private let endpoint: Endpoint
    private let loop: EventLoop
    private let tally: Tally
    private let total: Int
    private let seed: UInt64
    private let pauses: Double
    private var sent = 0
    private var received = 0
    private var readWatch: ReadinessWatch?
    private var writeWatch: ReadinessWatch?
    private var readTimer: LoopTimer?
    private var writeTimer: LoopTimer?
    private static var scratch: UnsafeMutableRawBufferPointer { Scratch.buffer }

    init(_ endpoint: Endpoint, loop: EventLoop, total: Int, seed: UInt64, pauses: Double = 0, tally: Tally) throws {
        self.endpoint = endpoint
        self.loop = loop
        self.total = total
        self.seed = seed
        self.pauses = pauses
        self.tally = tally
        readWatch = try loop.watch(endpoint, for: .read) { [self] in onReadable() }
        writeWatch = try loop.watch(endpoint, for: .write) { [self] in onWritable() }
    }

    var progress: String { "seed \(seed): sent \(sent) received \(received) of \(total)" }
    /// Whether it finished (with or without a failure).
    private(set) var isFinished = false

    private func onWritable() {
        do {
            while sent < total {
                let chunk = min(Self.scratch.count, total - sent, Int.random(in: 1...Self.scratch.count))
                vms_pattern_fill(Self.scratch.baseAddress, chunk, UInt64(sent), seed)
                sent += try endpoint.write(UnsafeRawBufferPointer(rebasing: Self.scratch[..<chunk]))
                if maybePause(writeWatch, &writeTimer) { return }
            }
            try endpoint.shutdownWrite()
            writeWatch?.cancel()
        } catch where error.code == EAGAIN {
        } catch { fail("client write: \(error)") }
    }

    private func onReadable() {
        do {
            while true {
                let n = try endpoint.read(into: Self.scratch)
                if n == 0 {
                    return finish(received == total ? nil : "end of stream early: \(progress)")
                }
                let good = vms_pattern_check(Self.scratch.baseAddress, n, UInt64(received), seed)
                if good != n { return fail("byte \(received + good) differs: \(progress)") }
                received += n
                if maybePause(readWatch, &readTimer) { return }
            }
        } catch where error.code == EAGAIN {
        } catch { fail("client read: \(error)") }
    }

    /// At random, stops watching for a random 0 to 2 ms (a timer resumes it). True when it paused. The watch stays
    /// disabled until its timer fires, so each watch has at most one timer pending (replacing the handle drops
    /// only a timer that already fired).
    private func maybePause(_ watch: ReadinessWatch?, _ timer: inout LoopTimer?) -> Bool {
        guard pauses > 0, Double.random(in: 0..<1) < pauses, let watch else { return false }
        watch.disable()
        timer = try? loop.schedule(after: .microseconds(Int.random(in: 0...2000))) { [weak watch] in watch?.enable() }
        if timer == nil { watch.enable() }
        return true
    }

    private func fail(_ message: String) { finish(message) }

    private func finish(_ failure: String?) {
        readWatch?.cancel()
        writeWatch?.cancel()
        readWatch = nil
        writeWatch = nil
        readTimer = nil
        writeTimer = nil
        endpoint.close()
        isFinished = true
        tally.finished(failure)
    }
}

/// One scratch buffer per thread (each loop runs on one thread, so clients on it take turns).
private enum Scratch {
    static var buffer: UnsafeMutableRawBufferPointer {
        let key = "vmsock.tests.scratch"
        if let box = Thread.current.threadDictionary[key] as? Box { return box.buffer }
        let box = Box()
        Thread.current.threadDictionary[key] = box
        return box.buffer
    }

    // Freed with the thread's dictionary when the loop thread ends (LeakSanitizer saw one buffer per loop thread).
    final class Box {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 16)
        deinit { buffer.deallocate() }
    }
}

/// CPU time (user + system) of the calling thread, in seconds. RUSAGE_THREAD is 1 (Linux ABI; the Glibc module
/// hides it without _GNU_SOURCE).
func threadCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(__rusage_who_t(1), &usage)
    func seconds(_ tv: timeval) -> Double { Double(tv.tv_sec) + Double(tv.tv_usec) / 1e6 }
    return seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Raises the soft descriptor limit to the hard one; returns the limit now in force.
@discardableResult
func raiseDescriptorLimit() -> Int {
    var limit = rlimit()
    getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    limit.rlim_cur = limit.rlim_max
    setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    return Int(limit.rlim_cur)
}
