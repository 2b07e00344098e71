import Foundation
import VMSock

/// `async-write PORT SECONDS`: connects with the async API and writes 1 KiB at a time for SECONDS, then prints
/// how many writes it made. For counting system calls per write under `strace -f -c`.
enum AsyncWrite {
    static func run(port: UInt16, seconds: Double) throws {
        let thread = try LoopThread()
        let done = DispatchSemaphore(value: 0)
        let box = ResultBox<(Int, String)>()
        Task {
            defer { done.signal() }
            do {
                let socket = try await AsyncSocket.connect(host: "127.0.0.1", port: port, on: thread.loop)
                let block = [UInt8](repeating: 0x5A, count: 1024)
                let end = ContinuousClock.now + .seconds(seconds)
                var writes = 0
                while ContinuousClock.now < end {
                    try await socket.writeAll(block)
                    writes += 1
                }
                try socket.shutdown(.write)
                box.result = .success((writes, socket.socket.transportDescription))
            } catch {
                box.result = .failure(error)
            }
        }
        done.wait()
        let (writes, transport) = try box.result!.get()
        print("writes \(writes) over \(transport)")
    }
}

private final class ResultBox<T>: @unchecked Sendable {  // written once before the semaphore signals
    var result: Result<T, Error>?
}
