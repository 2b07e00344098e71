import CLibevent
import Foundation
import Synchronization
@_spi(Testing) import VMSock
import XCTest

/// The event loop's own behaviour: threads, jobs, timers, watches on plain descriptors and on vmsock sockets.
final class LoopTests: XCTestCase {
    func testStopFromAnotherThreadEndsRun() throws {
        let loop = try EventLoop()
        let running = Background { try loop.run() }
        usleep(50_000)
        loop.stop()
        XCTAssertNoThrow(try XCTUnwrap(running.wait(timeout: 10), "run did not return after stop").get())
    }

    func testStopBeforeRunIsNotLost() throws {
        let loop = try EventLoop()
        loop.stop()
        let running = Background { try loop.run() }
        XCTAssertNotNil(running.wait(timeout: 10), "a stop that came first must end the next run")
    }

    func testRunTwiceAtOnceIsEBUSY() throws {
        let thread = try LoopThread()
        _ = try onLoop(thread.loop) {}  // it runs now
        XCTAssertErrno(EBUSY, try thread.loop.run())
    }

    /// A job posted from another thread wakes an idle loop promptly (the loop has no timeout to fall back on).
    func testJobFromAnotherThreadWakesTheLoopPromptly() throws {
        let thread = try LoopThread()
        var latencies: [Double] = []
        for _ in 0..<20 {
            usleep(2_000)  // let the loop fall asleep
            let start = DispatchTime.now().uptimeNanoseconds
            let ranAt = try onLoop(thread.loop, timeout: 5) { DispatchTime.now().uptimeNanoseconds }
            latencies.append(Double(ranAt - start) / 1000)
        }
        latencies.sort()
        print("loop wake-up from another thread: median \(latencies[10]) µs, max \(latencies.last!) µs")
        XCTAssertLessThan(latencies[10], 100_000, "median wake-up over 100 ms: the loop is not woken by the post")
    }

    func testJobsRunInOrderOnTheLoopThread() throws {
        let thread = try LoopThread()
        let seen = Mutex<[Int]>([])
        for i in 0..<100 {
            thread.loop.execute { [loop = thread.loop] in
                XCTAssertTrue(loop.inLoopThread)
                seen.withLock { $0.append(i) }
            }
        }
        _ = try onLoop(thread.loop) {}
        XCTAssertEqual(seen.withLock { $0 }, Array(0..<100))
        XCTAssertFalse(thread.loop.inLoopThread)
    }

    func testTimersFireAndCancelledOnesDoNot() throws {
        let thread = try LoopThread()
        let fired = Mutex<[String]>([])
        let done = DispatchSemaphore(value: 0)
        let handles = try onLoop(thread.loop) { [loop = thread.loop] in
            let once = try loop.schedule(after: .milliseconds(20)) { fired.withLock { $0.append("once") } }
            let cancelled = try loop.schedule(after: .milliseconds(10)) { fired.withLock { $0.append("cancelled") } }
            cancelled.cancel()
            var ticks = 0
            let repeating = try loop.schedule(after: .milliseconds(5), repeating: true) {
                ticks += 1
                if ticks == 3 { done.signal() }
            }
            return SendableBox([once, repeating])
        }
        XCTAssertEqual(done.wait(timeout: .now() + 5), .success, "a repeating timer must keep firing")
        usleep(50_000)
        XCTAssertEqual(fired.withLock { $0 }, ["once"])
        try onLoop(thread.loop) { handles.value.forEach { $0.cancel() } }
    }

    /// Plain descriptors: a pipe's read end fires when written, and the watch is level-triggered.
    func testWatchingAPlainDescriptor() throws {
        var ends: [Int32] = [0, 0]
        XCTAssertEqual(pipe(&ends), 0)
        defer { close(ends[0]); close(ends[1]) }
        let thread = try LoopThread()
        let got = Mutex<[UInt8]>([])
        let done = DispatchSemaphore(value: 0)
        let watch = try onLoop(thread.loop) { [loop = thread.loop, fd = ends[0]] in
            SendableBox(try loop.watch(descriptor: fd, for: .read) {
                var byte: UInt8 = 0
                if Glibc.read(fd, &byte, 1) == 1 { got.withLock { $0.append(byte) } }  // one byte per call: level-triggered
                if got.withLock({ $0.count }) == 3 { done.signal() }
            })
        }
        XCTAssertEqual(Glibc.write(ends[1], [UInt8]([1, 2, 3]), 3), 3)
        XCTAssertEqual(done.wait(timeout: .now() + 5), .success)
        XCTAssertEqual(got.withLock { $0 }, [1, 2, 3])
        try onLoop(thread.loop) { watch.value.cancel() }
    }

    /// A vmsock socket: read interest fires on data and on the peer's close; write interest stays quiet on a full
    /// ring and fires when the peer makes room.
    func testWatchingASocketForReadAndWrite() throws {
        let (server, client) = try connectedPair(options: VMSocketOptions(ringSize: 4096))
        server.isNonBlocking = true
        client.isNonBlocking = true
        let thread = try LoopThread()
        let received = Mutex<(bytes: Int, eof: Bool)>((0, false))
        let readable = DispatchSemaphore(value: 0)
        let writable = DispatchSemaphore(value: 0)
        let watches = try onLoop(thread.loop) { [loop = thread.loop] in
            let reader = try loop.watch(server, for: .read, enabled: false) {
                guard let bytes = try? server.read(upTo: 100) else { return }
                received.withLock { bytes.isEmpty ? ($0.eof = true) : ($0.bytes += bytes.count) }
                readable.signal()
            }
            let writer = try loop.watch(client, for: .write, enabled: false) { writable.signal() }
            return SendableBox((reader, writer))
        }
        var written = 0
        let block = [UInt8](repeating: 2, count: 1000)
        while let n = try? block.withUnsafeBytes({ try client.write($0) }) { written += n }
        XCTAssertEqual(written, 4096, "the ring is full")
        try onLoop(thread.loop) { watches.value.1.enable() }
        XCTAssertEqual(writable.wait(timeout: .now() + 0.1), .timedOut, "full ring, nobody reading: no writable")
        try onLoop(thread.loop) { watches.value.0.enable() }
        XCTAssertEqual(writable.wait(timeout: .now() + 5), .success, "the server read, making room: writable")
        try onLoop(thread.loop) { watches.value.1.disable() }
        client.close()
        let deadline = Date().addingTimeInterval(5)
        while !received.withLock({ $0.eof }) && Date() < deadline { _ = readable.wait(timeout: .now() + 0.1) }
        XCTAssertEqual(received.withLock { $0.bytes }, 4096)
        XCTAssertTrue(received.withLock { $0.eof }, "the peer's close must fire the read watch")
        try onLoop(thread.loop) {
            watches.value.0.cancel()
            watches.value.1.cancel()
        }
    }

    /// A watch that is disabled or cancelled withdraws its announcement, so the peer stops ringing for it.
    func testDisablingOrCancellingAWatchDisarms() throws {
        let (server, client) = try connectedPair()
        server.isNonBlocking = true
        let thread = try LoopThread()
        let watch = try onLoop(thread.loop) { [loop = thread.loop] in
            SendableBox(try loop.watch(server, for: .read) {})
        }
        XCTAssertTrue(client._peerWaits.data, "an enabled watch on an idle socket announces that it waits")
        try onLoop(thread.loop) { watch.value.disable() }
        XCTAssertFalse(client._peerWaits.data, "disabled: the peer must not ring for it")
        try onLoop(thread.loop) { watch.value.enable() }
        XCTAssertTrue(client._peerWaits.data)
        try onLoop(thread.loop) { watch.value.cancel() }
        XCTAssertFalse(client._peerWaits.data, "cancelled: the peer must not ring for it")
    }

    /// A handle dropped on another thread than the loop's ends its watch safely.
    func testDroppingAWatchOffTheLoopThread() throws {
        let (server, client) = try connectedPair()
        server.isNonBlocking = true
        let thread = try LoopThread()
        let calls = Atomic<Int>(0)
        var watch: SendableBox<ReadinessWatch>? = try onLoop(thread.loop) { [loop = thread.loop] in
            SendableBox(try loop.watch(server, for: .read) {
                calls.add(1, ordering: .relaxed)
                _ = try? server.read(upTo: 100)
            })
        }
        XCTAssertNotNil(watch)
        watch = nil
        try client.writeAll([1])
        usleep(100_000)
        XCTAssertEqual(calls.load(ordering: .relaxed), 0)
        _ = try onLoop(thread.loop) {}
    }
}

/// Carries a loop-thread object through `onLoop` back to the test; the test only hands it back to the loop.
struct SendableBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
