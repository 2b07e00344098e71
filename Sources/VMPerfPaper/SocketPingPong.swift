import Glibc
import VMSock

/// TCP: the paper's baseline, an integer (4 bytes) ping-ponged over a blocking loopback connection with alternating
/// send and recv. Plain Glibc calls, no vmsock. The parent sends a number, the peer answers it plus one.
struct TCPPingPong: PingPong {
    let fd: Int32
    private let word: UnsafeMutableRawPointer

    init(fd: Int32) {
        self.fd = fd
        word = .allocate(byteCount: 4, alignment: 4)
    }

    func close() {
        _ = Glibc.close(fd)  // never retried after EINTR: the descriptor is gone either way
        word.deallocate()
    }

    mutating func run(_ side: inout Side, _ iterations: Int) throws {
        if side.me == 0 {
            for round in 0..<iterations {
                word.storeBytes(of: UInt32(truncatingIfNeeded: round), as: UInt32.self)
                try Self.transfer(fd, word, sending: true)
                try Self.transfer(fd, word, sending: false)
                if word.load(as: UInt32.self) != UInt32(truncatingIfNeeded: round) &+ 1 { throw PingPongFault.wrongAnswer("TCP") }
            }
        } else {
            for _ in 0..<iterations {
                try Self.transfer(fd, word, sending: false)
                word.storeBytes(of: word.load(as: UInt32.self) &+ 1, as: UInt32.self)
                try Self.transfer(fd, word, sending: true)
            }
        }
    }

    /// Sends or receives the 4 bytes in full (a stream may split them), retrying after EINTR.
    @inline(__always) private static func transfer(_ fd: Int32, _ word: UnsafeMutableRawPointer, sending: Bool) throws {
        var done = 0
        while done < 4 {
            let count = sending ? send(fd, word + done, 4 - done, 0) : recv(fd, word + done, 4 - done, 0)
            if count > 0 {
                done += count
            } else if count < 0 && errno == EINTR {
                continue
            } else {
                throw PingPongFault.broken("TCP", sending ? "send" : "recv", count == 0 ? 0 : errno)
            }
        }
    }
}

/// vmsock (ours, not the paper's): the same 4-byte ping-pong through `VMSocket` over shared memory, with blocking
/// `read(into:)` and `write(_:)` calls.
struct VMSockPingPong: PingPong {
    let socket: VMSocket
    private let word: UnsafeMutableRawPointer

    init(socket: VMSocket) {
        self.socket = socket
        word = .allocate(byteCount: 4, alignment: 4)
    }

    func close() {
        socket.close()
        word.deallocate()
    }

    mutating func run(_ side: inout Side, _ iterations: Int) throws {
        // A local copy: calls through it need no retain and release each.
        let socket = self.socket
        if side.me == 0 {
            for round in 0..<iterations {
                word.storeBytes(of: UInt32(truncatingIfNeeded: round), as: UInt32.self)
                try Self.transfer(socket, word, sending: true)
                try Self.transfer(socket, word, sending: false)
                if word.load(as: UInt32.self) != UInt32(truncatingIfNeeded: round) &+ 1 { throw PingPongFault.wrongAnswer("vmsock") }
            }
        } else {
            for _ in 0..<iterations {
                try Self.transfer(socket, word, sending: false)
                word.storeBytes(of: word.load(as: UInt32.self) &+ 1, as: UInt32.self)
                try Self.transfer(socket, word, sending: true)
            }
        }
    }

    @inline(__always) private static func transfer(_ socket: VMSocket, _ word: UnsafeMutableRawPointer, sending: Bool) throws {
        var done = 0
        while done < 4 {
            let count = sending
                ? try socket.write(UnsafeRawBufferPointer(start: word + done, count: 4 - done))
                : try socket.read(into: UnsafeMutableRawBufferPointer(start: word + done, count: 4 - done))
            guard count > 0 else { throw PingPongFault.broken("vmsock", "read", 0) }
            done += count
        }
    }
}

/// What can go wrong inside a socket row's loop; the text is built only when it happens.
enum PingPongFault: Error, CustomStringConvertible {
    case broken(String, String, Int32)
    case wrongAnswer(String)

    var description: String {
        switch self {
        case .broken(let row, let call, 0): "\(row): \(call) found the connection closed (the other process is gone?)"
        case .broken(let row, let call, EAGAIN): "\(row): no answer for \(Watchdog.patience) s (\(call) timed out)"
        case .broken(let row, let call, let code): "\(row): \(call) failed: \(String(cString: strerror(code)))"
        case .wrongAnswer(let row): "\(row): the answer was not the number sent plus one"
        }
    }
}
