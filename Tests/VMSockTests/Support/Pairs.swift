import Foundation
import VMSock
import XCTest

/// A listener on a loopback port, for tests that speak of ports as text (see `uniqueName`).
enum LoopbackPort {
    case port(String)

    var port: UInt16 {
        switch self {
        case .port(let text): UInt16(text)!
        }
    }
}

extension VMListener {
    convenience init(address: LoopbackPort, options: VMSocketOptions = .init(), backlog: Int32 = 128) throws(VMSockError) {
        try self.init(host: "127.0.0.1", port: address.port, options: options, backlog: backlog)
    }

    var address: LoopbackPort { .port(String(localAddress.port)) }
}

extension VMSocket {
    /// Connects over shared memory only (unless `options` say otherwise): these tests are about that transport,
    /// and must not pass over TCP by accident.
    static func connect(to address: LoopbackPort, options: VMSocketOptions = .init()) throws(VMSockError) -> VMSocket {
        var options = options
        if options.transport == nil { options.transport = .shm }
        return try connect(host: "127.0.0.1", port: address.port, options: options)
    }
}

/// A connected pair in this process: a listener's accepted socket and the connector's socket. Shared memory
/// unless `options.transport` says otherwise.
func connectedPair(options: VMSocketOptions = .init(), port: String = freePortText()) throws -> (server: VMSocket, client: VMSocket) {
    let listener = try VMListener(address: .port(port), options: options)
    let accepted = Background { try listener.accept() }
    let client = try VMSocket.connect(to: .port(port), options: options)
    guard let result = accepted.wait(timeout: 10) else { throw VMSockError(code: ETIMEDOUT, "accept did not return") }
    return (try result.get(), client)
}

/// A client connected through a listener the caller keeps (so that its links can be parked and reopened), and
/// the listener's side of it.
func connectedPair(through listener: VMListener, options: VMSocketOptions) throws -> (server: VMSocket, client: VMSocket) {
    let accepted = Background { try listener.accept() }
    let client = try VMSocket.connect(to: listener.address, options: options)
    guard let result = accepted.wait(timeout: 10) else { throw VMSockError(code: ETIMEDOUT, "accept did not return") }
    return (try result.get(), client)
}

func XCTAssertErrno<T>(
    _ code: Int32, _ expression: @autoclosure () throws -> T, _ message: String = "",
    file: StaticString = #filePath, line: UInt = #line
) {
    XCTAssertThrowsError(try expression(), message, file: file, line: line) { error in
        guard let error = error as? VMSockError else { return XCTFail("not a VMSockError: \(error)", file: file, line: line) }
        XCTAssertEqual(
            VMSockError.name(of: error.code), VMSockError.name(of: code), "\(error)", file: file, line: line)
    }
}

extension VMSocket {
    /// Reads exactly `count` bytes (or fewer at end of stream).
    func readExactly(_ count: Int) throws -> [UInt8] {
        var bytes: [UInt8] = []
        while bytes.count < count {
            let chunk = try read(upTo: count - bytes.count)
            if chunk.isEmpty { break }
            bytes += chunk
        }
        return bytes
    }
}

/// Whether `condition` holds within five seconds (looked at every 10 ms).
func eventually(_ condition: () -> Bool) -> Bool {
    for _ in 0..<500 {
        if condition() { return true }
        usleep(10_000)
    }
    return false
}

/// The exit status of the forked child `pid`, waited for at most `seconds`; nil (and the child killed) if it has not
/// ended by then: a child of the multi-threaded test process that hangs must not hang the run.
func exitStatus(ofChild pid: pid_t, within seconds: Double = 20) -> Int32? {
    let deadline = Date().addingTimeInterval(seconds)
    var status: Int32 = 0
    while Date() < deadline {
        if waitpid(pid, &status, WNOHANG) == pid { return status & 0x7f == 0 ? status >> 8 & 0xff : 128 + status & 0x7f }
        usleep(10_000)
    }
    kill(pid, SIGKILL)
    _ = waitpid(pid, &status, 0)
    return nil
}
