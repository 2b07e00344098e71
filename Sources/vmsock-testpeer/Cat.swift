import Foundation
import VMSock

/// A bare netcat for the interop tests (vmcat proper is its own tool): stdin to the socket and the socket to
/// stdout, at once; EOF on stdin shuts down our writing; the run ends when both directions have ended. With `--echo`, the
/// listener writes back what it reads. It says on stderr which transport it got, and why.
enum Cat {
    static func run(listen: Bool, host: String, port: UInt16, echo: Bool) throws {
        let socket: VMSocket
        if listen {
            let listener = try VMListener(host: host, port: port)
            ready()
            socket = try listener.accept()
            listener.close()
        } else {
            socket = try VMSocket.connect(host: host, port: port)
        }
        report(socket)
        if echo {
            try pump(from: { try socket.read(into: $0) }, to: socket.writeAll)
            try socket.shutdown(.write)
            return
        }
        let sent = DispatchSemaphore(value: 0)
        let sender = Thread {
            defer { sent.signal() }
            do {
                try pump(from: { buffer in
                    let n = Glibc.read(0, buffer.baseAddress, buffer.count)
                    if n < 0 { throw VMSockError(code: errno, "read(stdin) failed") }
                    return n
                }, to: socket.writeAll)
                try socket.shutdown(.write)
            } catch {
                fail("sending: \(error)")
            }
        }
        sender.start()
        try pump(from: { try socket.read(into: $0) }, to: { bytes in
            var done = 0
            while done < bytes.count {
                let n = Glibc.write(1, bytes.baseAddress! + done, bytes.count - done)
                if n <= 0 { throw VMSockError(code: errno, "write(stdout) failed") }
                done += n
            }
        })
        sent.wait()
    }

    /// Copies until the source says end of stream (0).
    private static func pump(
        from source: (UnsafeMutableRawBufferPointer) throws -> Int, to sink: (UnsafeRawBufferPointer) throws -> Void
    ) throws {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 << 10, alignment: 64)
        defer { buffer.deallocate() }
        while true {
            let n = try source(buffer)
            if n == 0 { return }
            try sink(UnsafeRawBufferPointer(rebasing: buffer[..<n]))
        }
    }

    private static func report(_ socket: VMSocket) {
        let line = "transport: \(socket.transportDescription) local \(socket.localAddress) peer \(socket.peerAddress)\n"
        FileHandle.standardError.write(Data(line.utf8))
    }
}
