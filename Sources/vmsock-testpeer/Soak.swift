import CVMSock
import Foundation
import Synchronization
import VMSock

/// The two ends of the chaos soak (`tools/soak.sh`): a server that echoes every connection, and clients that open
/// connection after connection over either transport, with random sizes, ring sizes, chunks and pauses, and check
/// every byte that comes back. The script kills either at random; what each may then see is an error, never
/// wrong bytes and never a wait past its bound.
enum Soak {
    /// How long any one read or write may wait: a call that waits longer is a hang, which the soak reports.
    static let bound: Duration = .seconds(20)

    /// Accepts forever; echoes each connection on a thread of its own (pausing at random), then closes it. The
    /// script looks at the server only from outside (its descriptors and mappings in /proc).
    static func serve(port: UInt16) throws -> Never {
        let listener = try VMListener(host: "127.0.0.1", port: port, backlog: 128)
        ready()
        while true {
            guard let socket = try? listener.accept() else { continue }
            Thread.detachNewThread { echo(socket) }
        }
    }

    private static func echo(_ socket: VMSocket) {
        socket.readTimeout = bound
        socket.writeTimeout = bound
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 << 10, alignment: 64)
        defer {
            buffer.deallocate()
            socket.close()
        }
        var rng = SystemRandomNumberGenerator()
        do {
            while true {
                let n = try socket.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[..<Int.random(in: 1...buffer.count, using: &rng)]))
                if n == 0 { break }
                try socket.writeAll(UnsafeRawBufferPointer(rebasing: buffer[..<n]))
                if Int.random(in: 0..<64, using: &rng) == 0 { usleep(UInt32.random(in: 0...2000, using: &rng)) }
            }
            try socket.shutdown(.write)
        } catch {
            // A client killed, or a hostile one: this connection ends, the server goes on.
        }
    }

    /// What a client saw, printed as one line at the end: the script adds them up.
    struct Tally {
        var connections = 0, completed = 0, interrupted = 0, bytes = 0
        var shared = 0, tcp = 0
    }

    /// Connection after connection for `seconds`. Exits 1 at the first broken invariant: a wrong byte, more or
    /// fewer bytes than sent at a clean end of stream, or a call that waited past `bound`.
    static func client(port: UInt16, seconds: Double) -> Never {
        var tally = Tally()
        let end = Date().addingTimeInterval(seconds)
        var rng = SystemRandomNumberGenerator()
        while Date() < end {
            tally.connections += 1
            let size = Int.random(in: 0...22, using: &rng) == 0 ? 0 : 1 << Int.random(in: 0...22, using: &rng)
            let bytes = size == 0 ? 0 : Int.random(in: 1...size, using: &rng)
            var options = VMSocketOptions(ringSize: 4096 << Int.random(in: 0...8, using: &rng))
            options.transport = Bool.random(using: &rng) ? .auto : .tcp
            let generation = serverGeneration()
            do {
                let socket = try VMSocket.connect(host: "127.0.0.1", port: port, options: options)
                if socket.transport == .tcp { tally.tcp += 1 } else { tally.shared += 1 }
                let received = try exchange(socket, bytes: bytes, seed: UInt64(tally.connections))
                if received < bytes {
                    // A killed server ends its connections with end of stream too (as TCP may): bytes missing
                    // are data lost only when the server lived through the whole connection.
                    guard serverGeneration() != generation else {
                        fail("end of stream after \(received) of \(bytes) echoed bytes, with the server alive")
                    }
                    tally.interrupted += 1
                    continue
                }
                tally.completed += 1
                tally.bytes += bytes
            } catch let error as VMSockError where error.code == ETIMEDOUT {
                fail("a call waited past \(bound) (connection \(tally.connections), \(bytes) bytes): \(error)")
            } catch {
                tally.interrupted += 1  // the server was killed under us, or restarting: an error is the right answer
                usleep(20_000)
            }
        }
        print("soak-client: connections \(tally.connections) completed \(tally.completed) interrupted \(tally.interrupted) "
            + "bytes \(tally.bytes) shared-memory \(tally.shared) tcp \(tally.tcp)")
        exit(0)
    }

    /// How many times the script has killed the server so far (the number in `SOAK_GENERATION_FILE`).
    private static func serverGeneration() -> String {
        guard let path = ProcessInfo.processInfo.environment["SOAK_GENERATION_FILE"] else { return "" }
        return (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
    }

    /// Sends `bytes` of the pattern while checking the echo; every call bounded. Returns the bytes echoed before
    /// end of stream.
    private static func exchange(_ socket: VMSocket, bytes: Int, seed: UInt64) throws -> Int {
        socket.readTimeout = bound
        socket.writeTimeout = bound
        let failure = Mutex<Error?>(nil)
        let sent = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            do { try PatternPump.send(socket, bytes: bytes, seed: seed) } catch { failure.withLock { $0 = error } }
            sent.signal()
        }
        defer { socket.close() }
        let received = try receiveEcho(socket, bytes: bytes, seed: seed)
        sent.wait()
        if let error = failure.withLock({ $0 }) { throw error }
        return received
    }

    private static func receiveEcho(_ socket: VMSocket, bytes: Int, seed: UInt64) throws -> Int {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 << 10, alignment: 64)
        defer { buffer.deallocate() }
        var received = 0
        while true {
            let n = try socket.read(into: buffer)
            if n == 0 { return received }
            let good = vms_pattern_check(buffer.baseAddress, n, UInt64(received), seed)
            guard good == n else { fail("byte \(received + good) of an echo is wrong (lost, duplicated or reordered)") }
            received += n
            guard received <= bytes else { fail("echo of \(received) bytes, more than the \(bytes) sent") }
        }
    }
}
