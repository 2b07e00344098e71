import Foundation
@_spi(Testing) @testable import VMSock
import XCTest

/// Discovery and fallback: which transport a connection gets, why, and that the registry never misleads.
final class TransportTests: XCTestCase {
    private let loopback = "127.0.0.1"

    func testTwoVMSockEndsOnThisHostUseSharedMemoryAndSaySo() throws {
        let before = TransportStatistics.current
        let (server, client) = try connectedPair(options: VMSocketOptions(transport: .auto))
        XCTAssertEqual(client.transport, .sharedMemory)
        XCTAssertEqual(server.transport, .sharedMemory)
        XCTAssertNil(client.fallbackReason)
        XCTAssertEqual(client.transportDescription, "shared memory")
        let after = TransportStatistics.current
        XCTAssertEqual(after.sharedMemory - before.sharedMemory, 2, "\(after)")
    }

    func testTCPPolicyNeverUsesSharedMemory() throws {
        let listener = try VMListener(host: loopback, port: 0)
        XCTAssertFalse(listener.registrations.isEmpty)
        let accepted = Background { try listener.accept() }
        let client = try VMSocket.connect(host: loopback, port: listener.localAddress.port, options: VMSocketOptions(transport: .tcp))
        let server = try XCTUnwrap(accepted.wait()).get()
        XCTAssertEqual(client.transport, .tcp)
        XCTAssertEqual(server.transport, .tcp)
        XCTAssertEqual(client.fallbackReason, .disabledByPolicy)
        XCTAssertEqual(client.transportDescription, "TCP (shared memory off by policy)")
        XCTAssertEqual(client.peerAddress, listener.localAddress)
        XCTAssertEqual(server.peerAddress, client.localAddress, "TCP reports real ports on both ends")
        XCTAssertNil(client.peerCredentials)
    }

    func testATCPPolicyListenerDoesNotRegister() throws {
        let listener = try VMListener(host: loopback, port: 0, options: VMSocketOptions(transport: .tcp))
        XCTAssertEqual(listener.registrations, [])
        XCTAssertEqual(listener.sharedMemoryUnavailableReason, "the transport policy is tcp")
        XCTAssertErrno(ECONNREFUSED, try VMSocket.connect(host: loopback, port: listener.localAddress.port, options: VMSocketOptions(transport: .shm)))
    }

    func testPlainTCPServerMeansNoSharedMemoryListener() throws {
        let server = try PlainTCPServer()
        let before = TransportStatistics.current
        let client = try VMSocket.connect(host: loopback, port: server.port)
        XCTAssertEqual(client.transport, .tcp)
        XCTAssertEqual(client.fallbackReason, .noListener)
        XCTAssertEqual(client.transportDescription, "TCP (no shared-memory listener)")
        XCTAssertEqual(TransportStatistics.current.fallbacks[.noListener, default: 0] - before.fallbacks[.noListener, default: 0], 1)
        do {
            _ = try VMSocket.connect(host: loopback, port: server.port, options: VMSocketOptions(transport: .shm))
            XCTFail("shm policy must not fall back")
        } catch {
            XCTAssertEqual(error.code, ECONNREFUSED)
            XCTAssertTrue(error.message.contains("no shared-memory listener"), error.message)
        }
    }

    func testNamesResolve() throws {
        let listener = try VMListener(host: "localhost", port: 0, options: VMSocketOptions(transport: .auto))
        let accepted = Background { try listener.accept() }
        let client = try VMSocket.connect(host: "localhost", port: listener.localAddress.port)
        XCTAssertEqual(client.transport, .sharedMemory)
        XCTAssertNoThrow(try accepted.wait()?.get())
        XCTAssertErrno(EINVAL, try VMSocket.connect(host: "no-such-host.invalid", port: 80))
    }

    /// A name may resolve to several addresses: connect tries them in order and takes the first that answers, as
    /// the list getaddrinfo gives would be tried. Here the first address has nothing behind it.
    func testEveryAddressIsTriedInOrder() throws {
        let listener = try VMListener(host: loopback, port: 0)
        let dead = IPEndpoint(numericHost: loopback, port: freePort())!
        for policy in [TransportPolicy.auto, .tcp] {
            let accepted = Background { try listener.accept() }
            let client = VMSocket(try Connector.connect(to: [dead, listener.localAddress], options: VMSocketOptions(transport: policy)))
            XCTAssertEqual(client.peerAddress, listener.localAddress, "\(policy)")
            XCTAssertNoThrow(try accepted.wait()?.get())
        }
        XCTAssertErrno(ECONNREFUSED, try Connector.connect(to: [dead, dead], options: VMSocketOptions()))
    }

    func testIPv6AndDualStackListeners() throws {
        guard (try? VMListener(host: "::1", port: 0)) != nil else { throw XCTSkip("no IPv6 loopback on this machine") }
        let listener = try VMListener(host: "::", port: 0)
        for host in ["::1", "127.0.0.1"] {
            let accepted = Background { try listener.accept() }
            let client = try VMSocket.connect(host: host, port: listener.localAddress.port, options: VMSocketOptions(transport: .shm))
            XCTAssertEqual(client.transport, .sharedMemory, host)
            XCTAssertEqual(client.peerAddress.host, host)
            XCTAssertNoThrow(try accepted.wait()?.get())
        }
    }

    func testClosingAListenerRemovesItsRegistrationAtOnce() throws {
        let listener = try VMListener(host: loopback, port: 0)
        let name = try XCTUnwrap(listener.registrations.first)
        XCTAssertTrue(try abstractSocketNames().contains(name), name)
        listener.close()
        XCTAssertFalse(try abstractSocketNames().contains(name), "\(name) outlived its listener")
    }

    /// A crashed listener's socket file in a registry directory neither blocks a new listener nor misleads a client.
    func testStaleRegistryFileNeitherBlocksNorMisleads() throws {
        let directory = NSTemporaryDirectory() + "vmsock-registry-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var options = VMSocketOptions()
        options.registryDirectory = directory
        let port = freePort()
        let endpoint = IPEndpoint(numericHost: loopback, port: port)!
        close(try RawControl.listen(endpoint, directory: directory))  // bound, then "crashed": the file stays
        XCTAssertTrue(FileManager.default.fileExists(atPath: RawControl.registryName(endpoint, directory: directory)))

        let server = try PlainTCPServer(port: port)
        let misled = try VMSocket.connect(host: loopback, port: port, options: options)
        XCTAssertEqual(misled.fallbackReason, .noListener, "a stale file must read as no listener")
        misled.close()
        server.close()

        let listener = try VMListener(host: loopback, port: port, options: options)
        XCTAssertEqual(listener.registrations, [RawControl.registryName(endpoint, directory: directory)])
        let accepted = Background { try listener.accept() }
        let client = try VMSocket.connect(host: loopback, port: port, options: options)
        XCTAssertEqual(client.transport, .sharedMemory)
        XCTAssertNoThrow(try accepted.wait()?.get())
        listener.close()
        XCTAssertFalse(FileManager.default.fileExists(atPath: RawControl.registryName(endpoint, directory: directory)))
    }

    /// kill -9 of a listener's process: its registration is gone with it, and the port reads as nothing there.
    func testKilledListenerLeavesNoRegistration() throws {
        let port = freePortText()
        let peer = try TestPeer("hold-listen", port)
        peer.expectLine("ready")
        let name = RawControl.registryName(IPEndpoint(numericHost: loopback, port: UInt16(port)!)!)
        XCTAssertTrue(try abstractSocketNames().contains(name))
        peer.killHard()
        XCTAssertFalse(try abstractSocketNames().contains(name), "\(name) outlived kill -9 of its listener")
        XCTAssertErrno(ECONNREFUSED, try VMSocket.connect(host: loopback, port: UInt16(port)!))
    }

    func test256MiBEachWayOverTCPBetweenProcesses() throws {
        try stream(bytes: 256 << 20, transport: "tcp", expect: ("transport: TCP", "transport: TCP (shared memory off by policy)"))
    }

    func test256MiBEachWayOverSharedMemoryBetweenProcesses() throws {
        try stream(bytes: 256 << 20, transport: "auto", expect: ("transport: shared memory", "transport: shared memory"))
    }

    private func stream(bytes: Int, transport: String, expect: (listener: String, connector: String)) throws {
        let port = freePortText()
        let seed = String(UInt32.random(in: 1...UInt32.max))
        let environment = ["VMSOCK_TRANSPORT": transport]
        let listener = try TestPeer(environment: environment, "stream-listen", port, String(bytes), String(1 << 20), seed)
        listener.expectLine("ready")
        let connector = try TestPeer(environment: environment, "stream-connect", port, String(bytes), String(1 << 20), seed)
        connector.expectLine(expect.connector, timeout: 120)
        XCTAssertEqual(connector.wait(), 0, "connector: \(connector.errorOutput())")
        listener.expectLine(expect.listener, timeout: 120)
        XCTAssertEqual(listener.wait(), 0, "listener: \(listener.errorOutput())")
    }

    /// The abstract Unix socket names bound on this host's namespace, as "@name".
    private func abstractSocketNames() throws -> Set<String> {
        // /proc files report size 0, so read them to the end rather than by their size.
        let data = try FileHandle(forReadingFrom: URL(fileURLWithPath: "/proc/net/unix")).readToEnd() ?? Data()
        let table = String(decoding: data, as: UTF8.self)
        return Set(table.split(separator: "\n").compactMap { line in
            line.split(separator: " ").last.flatMap { $0.hasPrefix("@") ? String($0) : nil }
        })
    }
}

/// A plain TCP listener on 127.0.0.1 that accepts in the background and holds its connections: a server nobody
/// here wrote, as far as discovery can tell.
final class PlainTCPServer: @unchecked Sendable {
    let fd: Int32
    let port: UInt16

    private var closed = false

    init(port wanted: UInt16 = 0) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.fd = fd
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = wanted.bigEndian
        addr.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && listen(fd, 16) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard ok else { throw VMSockError(code: errno, "plain TCP server") }
        port = UInt16(bigEndian: addr.sin_port)
    }

    func close() {
        if !closed { Glibc.close(fd) }
        closed = true
    }
    deinit { close() }
}
