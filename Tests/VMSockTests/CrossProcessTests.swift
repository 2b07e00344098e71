import Foundation
@_spi(Testing) import VMSock
import XCTest

/// Behaviour that crosses a process boundary, against real `vmsock-testpeer` processes.
final class CrossProcessTests: XCTestCase {
    /// kill -9 of the peer while we are blocked in read: read returns end of stream within a second.
    func testPeerKilledWhileWeAreBlockedInRead() throws {
        let port = freePortText()
        let listener = try VMListener(address: .port(port))
        let peer = try TestPeer("hold-connect", port)
        let socket = try listener.accept()
        peer.expectLine("ready")
        let reader = Background { try socket.read(upTo: 100) }
        usleep(200_000)  // let the read block (past its spin, asleep on the doorbell)
        let killedAt = Date()
        peer.sendKill()
        guard let result = reader.wait(timeout: 5) else { return XCTFail("read still blocked 5 s after kill -9") }
        let noticed = Date().timeIntervalSince(killedAt)
        print(String(format: "blocked read returned %.1f ms after kill -9 of the peer", noticed * 1000))
        XCTAssertLessThan(noticed, 1.0)
        XCTAssertEqual(try result.get(), [], "a dead peer reads as end of stream")
        XCTAssertErrno(EPIPE, try socket.writeAll([1]), "writing to a dead peer")
    }

    /// kill -9 of the peer while we are blocked in write on a full ring: write fails with EPIPE within a second.
    func testPeerKilledWhileWeAreBlockedInWrite() throws {
        let port = freePortText()
        let peer = try TestPeer("hold-listen", port)
        peer.expectLine("ready")
        let socket = try VMSocket.connect(to: .port(port), options: VMSocketOptions(ringSize: 4096))
        peer.expectLine("accepted")
        let writer = Background { try socket.writeAll([UInt8](repeating: 1, count: 1 << 20)) }
        usleep(200_000)
        let killedAt = Date()
        peer.sendKill()
        guard let result = writer.wait(timeout: 5) else { return XCTFail("write still blocked 5 s after kill -9") }
        let noticed = Date().timeIntervalSince(killedAt)
        print(String(format: "blocked write failed %.1f ms after kill -9 of the peer", noticed * 1000))
        XCTAssertLessThan(noticed, 1.0)
        XCTAssertThrowsError(try result.get()) { XCTAssertEqual(($0 as? VMSockError)?.code, EPIPE, "\($0)") }
    }

    /// Bytes the peer published before it died are still delivered, then end of stream.
    func testBytesPublishedBeforeDeathAreDelivered() throws {
        let port = freePortText()
        let listener = try VMListener(address: .port(port), options: VMSocketOptions(ringSize: 1 << 20))
        let peer = try TestPeer("stream-connect", port, String(512 << 10), String(1 << 20), "5")
        let socket = try listener.accept()
        // The peer writes 512 KiB and then blocks reading what we never send; kill it once it has written.
        var received = 0
        while received < 512 << 10 {
            let chunk = try socket.read(upTo: 1 << 16)
            XCTAssertFalse(chunk.isEmpty)
            received += chunk.count
        }
        peer.killHard()
        XCTAssertEqual(try socket.read(upTo: 16), [])
        XCTAssertEqual(received, 512 << 10)
    }

    /// A peer that breaks the ring rules in its own memory gets the connection torn down with EPROTO on our side.
    func testHostilePeersGetEPROTO() throws {
        for how in ["producer-ahead", "producer-backwards", "control-chatter", "control-empty"] {
            // The backwards peer waits for us to read its first 100 bytes before it misbehaves.
            let (socket, peer) = try acceptHostile(how, waitForIt: how != "producer-backwards")
            var error: VMSockError?
            do {
                socket.readTimeout = .seconds(5)
                while try !socket.read(upTo: 1000).isEmpty {}
            } catch let caught { error = caught }
            XCTAssertEqual(error.map { VMSockError.name(of: $0.code) }, "EPROTO", "\(how): \(String(describing: error))")
            XCTAssertErrno(EPROTO, try socket.writeAll([1]), "\(how): the connection stays torn down")
            peer.killHard()
        }
    }

    func testHostileConsumerPositionGetsEPROTOOnWrite() throws {
        let (socket, peer) = try acceptHostile("consumer-ahead")
        socket.writeTimeout = .seconds(5)
        XCTAssertErrno(EPROTO, try socket.writeAll([UInt8](repeating: 0, count: 1 << 20)))
        peer.killHard()
    }

    /// Nonsense in the peer's flag words is harmless: its shutdown bits read as "closed" and "reset" (every bit
    /// is set), so calls fail cleanly; nothing crashes.
    func testGarbageFlagsAreHarmless() throws {
        let (socket, peer) = try acceptHostile("garbage-flags")
        XCTAssertErrno(ECONNRESET, try socket.read(upTo: 10))
        XCTAssertErrno(ECONNRESET, try socket.writeAll([1]))
        peer.killHard()
    }

    /// A shutdown bit we do not define must not stop a blocked read from sleeping, nor its timeout from firing;
    /// nor must bits of another generation than the connection's (`LinkReuse`), which are not its bits at all.
    func testUnknownPeerFlagDoesNotBusyLoopAReader() throws {
        try readerSleeps(against: "unknown-flag")
        try readerSleeps(against: "foreign-generation")
    }

    private func readerSleeps(against kind: String) throws {
        let (socket, peer) = try acceptHostile(kind)
        socket.readTimeout = .milliseconds(300)
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        let cpuBefore = Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6
        let start = Date()
        XCTAssertErrno(ETIMEDOUT, try socket.read(upTo: 10))
        XCTAssertLessThan(Date().timeIntervalSince(start), 2.0)
        getrusage(RUSAGE_SELF.rawValue, &usage)
        let cpu = Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6 - cpuBefore
        XCTAssertLessThan(cpu, 0.15, "\(kind): a 300 ms wait should sleep, not spin (spin budget is 50 µs)")
        try socket.writeAll([1])  // the peer reads on: another generation's `read` and `closed` are not its
        peer.killHard()
    }

    /// A peer that makes every socket it holds blocking, claims to sleep, and never drains its bell cannot make our
    /// wake-up calls block: 100,000 small writes, each ringing, finish.
    func testStuckBellsCannotBlockOurWrites() throws {
        let port = freePortText()
        let listener = try VMListener(address: .port(port), options: VMSocketOptions(ringSize: 64 << 20))
        let peer = try TestPeer("hostile-connect", port, "stuck-bells")
        let socket = try listener.accept()
        peer.expectLine("done")
        let writer = Background {
            let chunk = [UInt8](repeating: 3, count: 64)
            for _ in 0..<100_000 { try socket.writeAll(chunk) }
        }
        guard let result = writer.wait(timeout: 30) else { return XCTFail("writes blocked on a stuck doorbell") }
        XCTAssertNoThrow(try result.get())
        peer.killHard()
    }

    private func acceptHostile(_ how: String, waitForIt: Bool = true) throws -> (VMSocket, TestPeer) {
        let port = freePortText()
        let listener = try VMListener(address: .port(port))
        let peer = try TestPeer("hostile-connect", port, how)
        let socket = try listener.accept()
        if waitForIt { peer.expectLine("done") }
        return (socket, peer)
    }
}

/// The need-wakeup handshake in both orderings, with every wait sleeping: a lost wake-up would stall a round trip
/// until the read timeout.
final class WakeUpOrderingTests: XCTestCase {
    func testNoWakeUpIsLostWhenEveryWaitSleeps() throws {
        guard RawControl.asymmetricFencesAvailable else {
            throw XCTSkip("membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) is refused here: every connection is fenced")
        }
        for ordering in ["asymmetric", "fenced"] {
            try pingPong(peerEnvironment: ["VMSOCK_SPIN_US": "0", "VMSOCK_FENCED": ordering == "fenced" ? "1" : "0"], expecting: ordering)
        }
    }

    private func pingPong(peerEnvironment: [String: String], expecting ordering: String) throws {
        let port = freePort()
        let peer = try TestPeer(environment: peerEnvironment, "cat-listen", "127.0.0.1", String(port), "--echo")
        peer.expectLine("ready")
        let socket = try VMSocket.connect(host: "127.0.0.1", port: port, options: VMSocketOptions(transport: .shm))
        XCTAssertEqual(socket._wakeUpOrdering, ordering)
        socket.spinMicroseconds = 0
        socket.readTimeout = .seconds(5)
        var message = [UInt8](repeating: 0, count: 64)
        for trip in 0..<3000 {
            let size = trip % 64 + 1
            for i in 0..<size { message[i] = UInt8(truncatingIfNeeded: trip &+ i) }
            try socket.writeAll(Array(message[..<size]))
            var echoed: [UInt8] = []
            while echoed.count < size { echoed += try socket.read(upTo: size - echoed.count) }
            XCTAssertEqual(echoed, Array(message[..<size]), "\(ordering): round trip \(trip)")
        }
        try socket.shutdown(.write)
        XCTAssertEqual(try socket.read(upTo: 1), [])
        socket.close()
    }
}

/// A listener or a TCP connection inherited by a forked child stays the parent's.
final class ForkedChildTests: XCTestCase {
    /// The child's accept fails with EOPNOTSUPP and says why (its table of waiting connectors is a stale copy of
    /// the parent's), and its close lets its copies go without shutting down the parent's sockets, even while a
    /// thread of the parent is blocked in accept on them (the child's copy counts that call): the parent's
    /// accept, blocked across the fork, gets the next connection, and later ones come over shared memory and TCP.
    func testAForkedChildNeitherAcceptsNorClosesTheParentsListener() throws {
        let listener = try VMListener(address: .port(freePortText()))
        defer { listener.close() }
        let blocked = Background { try listener.accept() }
        usleep(100_000)  // the accept sleeps on the listener's set
        let child = fork()
        if child == 0 {
            var status: Int32 = 0
            do {
                _ = try listener.accept()
                status = 1
            } catch {
                if error.code != EOPNOTSUPP || !error.description.contains("fork") { status = 2 }
            }
            listener.close()
            _exit(status)
        }
        XCTAssertGreaterThan(child, 0)
        XCTAssertEqual(exitStatus(ofChild: child), 0, "the child's accept did not fail with EOPNOTSUPP (1: it accepted; nil: it hung)")
        var accepting = blocked
        for policy in [TransportPolicy.shm, .tcp, .shm] {
            let client = try VMSocket.connect(to: listener.address, options: VMSocketOptions(transport: policy))
            let server = try XCTUnwrap(accepting.wait(timeout: 10), "\(policy)").get()
            try client.writeAll([7])
            XCTAssertEqual(try server.readExactly(1), [7], "\(policy)")
            client.close()
            server.close()
            accepting = Background { try listener.accept() }
        }
        listener.close()
        _ = accepting.wait(timeout: 10)
    }

    /// A forked child that closes the TCP connection it inherited, while a thread of the parent is blocked reading
    /// it, does not shut the parent's socket down (its copy counts the parent's read as a call inside): the
    /// parent's read goes on waiting and gets the peer's next byte.
    func testAForkedChildsCloseLeavesTheParentsTCPConnectionUp() throws {
        let listener = try VMListener(address: .port(freePortText()), options: VMSocketOptions(transport: .tcp))
        defer { listener.close() }
        let (server, client) = try connectedPair(through: listener, options: VMSocketOptions(transport: .tcp))
        let reading = Background { try client.read(upTo: 1) }
        usleep(100_000)  // the read sleeps in the kernel
        let child = fork()
        if child == 0 {
            client.close()
            _exit(0)
        }
        XCTAssertGreaterThan(child, 0)
        XCTAssertEqual(exitStatus(ofChild: child), 0)
        usleep(100_000)
        try server.writeAll([5])
        XCTAssertEqual(try XCTUnwrap(reading.wait(timeout: 10), "the read did not return").get(), [5],
                       "the child's close ended the parent's connection")
        client.close()
        server.close()
    }

    /// A TCP-only listener may be shared across fork, as a TCP socket is: the child accepts on it.
    func testAForkedChildAcceptsOnATCPOnlyListener() throws {
        let listener = try VMListener(address: .port(freePortText()), options: VMSocketOptions(transport: .tcp))
        defer { listener.close() }
        let child = fork()
        if child == 0 {
            guard let server = try? listener.accept(), let bytes = try? server.readExactly(1), bytes == [9] else { _exit(1) }
            server.close()
            _exit(0)
        }
        XCTAssertGreaterThan(child, 0)
        let client = try VMSocket.connect(to: listener.address, options: VMSocketOptions(transport: .tcp))
        try client.writeAll([9])
        XCTAssertEqual(exitStatus(ofChild: child), 0, "the child did not accept the TCP connection")
        client.close()
    }
}
