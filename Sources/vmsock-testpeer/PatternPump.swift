import CVMSock
import Foundation
import VMSock

/// Sends `bytes` of the seeded test pattern while receiving and checking `bytes` of the peer's, at the same time,
/// in random chunk sizes from 1 B to 1 MiB (log-uniform, so small and large chunks both occur often).
enum PatternPump {
    static func run(_ socket: VMSocket, bytes: Int, sendSeed: UInt64, receiveSeed: UInt64) throws {
        let done = DispatchSemaphore(value: 0)
        let sender = Thread {
            do { try send(socket, bytes: bytes, seed: sendSeed) } catch { fail("send: \(error)") }
            done.signal()
        }
        sender.start()
        try receive(socket, bytes: bytes, seed: receiveSeed)
        done.wait()
        socket.close()
    }

    static func chunkSize(_ rng: inout SystemRandomNumberGenerator) -> Int {
        let bits = Int.random(in: 0...20, using: &rng)
        return max(1, min(1 << 20, (1 << bits) + Int.random(in: 0..<(1 << bits), using: &rng)))
    }

    static func send(_ socket: VMSocket, bytes: Int, seed: UInt64) throws {
        var rng = SystemRandomNumberGenerator()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
        defer { buffer.deallocate() }
        var sent = 0
        while sent < bytes {
            let count = min(chunkSize(&rng), bytes - sent)
            vms_pattern_fill(buffer.baseAddress, count, UInt64(sent), seed)
            try socket.writeAll(UnsafeRawBufferPointer(rebasing: buffer[..<count]))
            sent += count
        }
        try socket.shutdown(.write)
    }

    static func receive(_ socket: VMSocket, bytes: Int, seed: UInt64) throws {
        var rng = SystemRandomNumberGenerator()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
        defer { buffer.deallocate() }
        var received = 0
        while true {
            let n = try socket.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[..<chunkSize(&rng)]))
            if n == 0 { break }
            let good = vms_pattern_check(buffer.baseAddress, n, UInt64(received), seed)
            guard good == n else { fail("byte \(received + good) is wrong (lost, duplicated or reordered data)") }
            received += n
            guard received <= bytes else { fail("received \(received) bytes, more than the \(bytes) sent") }
        }
        guard received == bytes else { fail("end of stream after \(received) of \(bytes) bytes") }
    }
}
