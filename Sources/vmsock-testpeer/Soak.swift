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
    /// fewer bytes than sent at a clean end of stream, an established connection that fails while the server
    /// lives, or a call that waited past `bound`.
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
            // Bytes missing at end of stream, or an error, are right only when the server was killed during the
            // connection (as TCP may end it either way).
            let lostServer = { () -> Bool in
                let now = serverGeneration()
                return now != generation || now % 2 == 1
            }
            do {
                guard let socket = try connect(port: port, options: options, excused: lostServer) else {
                    tally.interrupted += 1  // the server is restarting (refused), or was killed under the handshake
                    usleep(20_000)
                    continue
                }
                if socket.transport == .tcp { tally.tcp += 1 } else { tally.shared += 1 }
                let received = try exchange(socket, bytes: bytes, seed: UInt64(tally.connections))
                if received < bytes {
                    guard lostServer() else {
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
                guard lostServer() else { fail("connection \(tally.connections) failed with the server alive: \(error)") }
                tally.interrupted += 1
                usleep(20_000)
            }
        }
        print("soak-client: connections \(tally.connections) completed \(tally.completed) interrupted \(tally.interrupted) "
            + "bytes \(tally.bytes) shared-memory \(tally.shared) tcp \(tally.tcp)")
        exit(0)
    }

    /// A connection, or nil when connecting was refused (the server restarting) or failed while `excused` says
    /// the server was being killed; any other failure is thrown.
    private static func connect(port: UInt16, options: VMSocketOptions, excused: () -> Bool) throws(VMSockError) -> VMSocket? {
        do {
            return try VMSocket.connect(host: "127.0.0.1", port: port, options: options)
        } catch {
            if error.code == ETIMEDOUT || (error.code != ECONNREFUSED && !excused()) { throw error }
            return nil
        }
    }

    /// The number in `SOAK_GENERATION_FILE`: the script counts each server kill twice, so it is odd from just
    /// before the kill until the server is reaped, and even otherwise. A connection during which it changed, or
    /// that ends while it is odd, may have lost its server; one that began while it was odd sees it change.
    private static func serverGeneration() -> Int {
        guard let path = ProcessInfo.processInfo.environment["SOAK_GENERATION_FILE"],
            let text = try? String(contentsOfFile: path, encoding: .utf8)
        else { return 0 }
        return Int(text.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
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
