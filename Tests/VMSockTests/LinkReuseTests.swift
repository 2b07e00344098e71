import Foundation
@testable @_spi(Testing) import VMSock
import VMSockRing
import XCTest

/// A closed connection's link serves the next connection between the same two endpoints (`LinkReuse`).
final class LinkReuseTests: XCTestCase {
    override func setUp() {
        super.setUp()
        VMSocket.closeIdleLinks()  // earlier tests' links are not this test's to count
    }

    override func tearDown() {
        VMSocket.closeIdleLinks()
        super.tearDown()
    }

    /// The second connection reopens the first one's link: the same ring memory, carried on, carries new streams both
    /// ways (1 MiB through a 4 KiB ring, so positions wrap many times), and both sides count it as reused.
    func testNextConnectionReopensTheLink() throws {
        let listener = try VMListener(address: .port(freePortText()), options: VMSocketOptions(ringSize: 4096))
        defer { listener.close() }
        try oneConnection(listener, bytes: 100_000)
        XCTAssertEqual(VMSocket.idleLinkCount, 1)
        let before = TransportStatistics.current.sharedMemoryReused
        try oneConnection(listener, bytes: 1 << 20)
        XCTAssertEqual(TransportStatistics.current.sharedMemoryReused - before, 2, "connector and listener each count it")
        XCTAssertEqual(VMSocket.idleLinkCount, 1, "the link is parked again")
        try oneConnection(listener, bytes: 1000)
        XCTAssertEqual(TransportStatistics.current.sharedMemoryReused - before, 4)
    }

    /// The async connect takes the same steps as the blocking one (`Connector`), so it reopens a parked link too.
    func testAsyncConnectReopensTheLink() async throws {
        let listener = try VMListener(address: .port(freePortText()), options: VMSocketOptions(ringSize: 4096))
        defer { listener.close() }
        let thread = try LoopThread()
        for round in 0..<3 {
            let before = TransportStatistics.current.sharedMemoryReused
            try await asyncExchange(listener, on: thread.loop)
            XCTAssertEqual(TransportStatistics.current.sharedMemoryReused - before, round == 0 ? 0 : 2, "round \(round)")
            XCTAssertTrue(eventually { VMSocket.idleLinkCount > 0 && listener.parkedLinkCount > 0 }, "not parked")
        }
    }

    private func asyncExchange(_ listener: VMListener, on loop: EventLoop) async throws {
        let accepting = Background { try listener.accept() }
        let client = try await AsyncSocket.connect(
            host: "127.0.0.1", port: listener.localAddress.port, options: VMSocketOptions(ringSize: 4096), on: loop)
        let server = try XCTUnwrap(accepting.wait(timeout: 10)).get()
        XCTAssertEqual(client.socket.transport, .sharedMemory)
        try await client.writeAll([1, 2, 3])
        XCTAssertEqual(try server.readExactly(3), [1, 2, 3])
        client.socket.close()
        server.close()
    }

    /// Either side can refuse: then every connection makes its own link, and nothing is kept.
    func testEitherSideCanTurnReuseOff() throws {
        for (clientReuses, listenerReuses) in [(false, true), (true, false)] {
            var listenerOptions = VMSocketOptions(ringSize: 4096)
            listenerOptions.reusesLinks = listenerReuses
            let listener = try VMListener(address: .port(freePortText()), options: listenerOptions)
            defer { listener.close() }
            let before = TransportStatistics.current.sharedMemoryReused
            try oneConnection(listener, bytes: 1000, reuse: clientReuses)
            XCTAssertEqual(VMSocket.idleLinkCount, 0)
            try oneConnection(listener, bytes: 1000, reuse: clientReuses)
            XCTAssertEqual(TransportStatistics.current.sharedMemoryReused, before)
        }
    }

    /// Closing a reusable connection keeps its control socket up, so the peer's blocked calls are woken by the
    /// doorbells instead: a blocked read sees the end of the stream, a blocked write EPIPE, and a poller armed
    /// for reading (as an event loop waits) is woken.
    func testCloseWakesBlockedPeerCalls() throws {
        let (server, client) = try connectedPair(options: VMSocketOptions(ringSize: 4096))
        let reader = Background { try server.read(upTo: 10) }
        usleep(100_000)  // let it go to sleep
        client.close()
        XCTAssertEqual(try XCTUnwrap(reader.wait(timeout: 5), "read was not woken").get(), [])

        let (server2, client2) = try connectedPair(options: VMSocketOptions(ringSize: 4096))
        let writer = Background { try server2.writeAll([UInt8](repeating: 1, count: 1 << 20)) }
        usleep(100_000)  // let it fill the ring and sleep
        client2.close()
        let result = try XCTUnwrap(writer.wait(timeout: 5), "write was not woken")
        XCTAssertErrno(EPIPE, try result.get())

        let (server3, client3) = try connectedPair(options: VMSocketOptions(ringSize: 4096))
        XCTAssertFalse(try server3.armReadable(), "nothing to read yet")
        let interest = server3.readInterest
        let poller = Background { () -> Int32 in
            var pfd = pollfd(fd: interest.descriptor, events: interest.events, revents: 0)
            return poll(&pfd, 1, 5000)
        }
        usleep(100_000)
        client3.close()
        XCTAssertEqual(try XCTUnwrap(poller.wait(timeout: 10)).get(), 1, "the armed poller was not woken")
        XCTAssertTrue(server3._debugSnapshot.contains("armed r1 w0 sleepers 1"), server3._debugSnapshot)
        XCTAssertEqual(try server3.read(upTo: 10), [])
        // The end of the stream ends the arming: the poller no longer counts as a sleeper that close must wake.
        XCTAssertTrue(server3._debugSnapshot.contains("armed r0 w0 sleepers 0"), server3._debugSnapshot)
    }

    /// When the listener has dropped a parked link (it keeps one for the handshake timeout), the connector's
    /// reopen fails quietly and it makes a new link.
    func testDroppedLinkIsReplacedByANewOne() throws {
        var options = VMSocketOptions(ringSize: 4096)
        options.handshakeTimeout = .milliseconds(200)
        let listener = try VMListener(address: .port(freePortText()), options: options)
        defer { listener.close() }
        try oneConnection(listener, bytes: 1000)
        XCTAssertEqual(VMSocket.idleLinkCount, 1)
        let accepting = Background { try listener.accept() }  // drops the parked link when its time is up
        XCTAssertTrue(eventually { listener.parkedLinkCount == 0 }, "the listener kept its parked link")
        let before = TransportStatistics.current
        let client = try VMSocket.connect(to: listener.address, options: VMSocketOptions(ringSize: 4096))
        let server = try XCTUnwrap(accepting.wait(timeout: 10)).get()
        XCTAssertEqual(TransportStatistics.current.sharedMemoryReused, before.sharedMemoryReused)
        XCTAssertEqual(VMSocket.idleLinkCount, 0, "the dropped link was not tried (and freed)")
        try client.writeAll([7])
        XCTAssertEqual(try server.readExactly(1), [7])
        XCTAssertEqual(listener.rejectedCount, 0, "a dropped link is not a rejection")
    }

    /// A reopening connect returns before the listener accepts, as a TCP connect does: what the client wrote, and
    /// its shutdown, are there when the listener gets to the connection. What the client leaves unread is not
    /// seen by the next connection.
    func testConnectorWritesAndClosesBeforeTheAccept() throws {
        let listener = try VMListener(address: .port(freePortText()), options: VMSocketOptions(ringSize: 4096))
        defer { listener.close() }
        for round in 0..<3 {
            try oneConnection(listener, bytes: 5000)
            do {
                let client = try reopeningConnect(listener, "round \(round)")
                let pattern = (0..<3000).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ round) }
                try client.writeAll(pattern)
                try client.shutdown(.write)
                let server = try listener.accept()
                XCTAssertEqual(try server.readExactly(3000), pattern, "round \(round)")
                XCTAssertEqual(try server.read(upTo: 10), [], "round \(round): the client's shutdown")
                try server.writeAll([1, 2])  // the client never reads it: the next reopen skips it
                server.close()
                client.close()
            }
        }
    }

    /// A listener that closed with bytes of ours unread leaves its link unusable: the next connect makes a new
    /// link, and nothing of the last connection reaches the next.
    func testLinkWithUnreadBytesIsNotReopened() throws {
        let listener = try VMListener(address: .port(freePortText()), options: VMSocketOptions(ringSize: 4096))
        defer { listener.close() }
        try leaveUnread(listener)
        XCTAssertTrue(eventually { VMSocket.idleLinkCount > 0 && listener.parkedLinkCount > 0 }, "not parked")
        let before = TransportStatistics.current.sharedMemoryReused
        try oneConnection(listener, bytes: 2000)
        XCTAssertEqual(TransportStatistics.current.sharedMemoryReused, before, "the link was reopened")
    }

    private func leaveUnread(_ listener: VMListener) throws {
        let (server, client) = try connectedPair(through: listener, options: VMSocketOptions(ringSize: 4096))
        try client.writeAll([1, 2, 3])
        server.close()
        client.close()
    }

    /// A parked link whose time is up stays while its connector has begun to reopen it (the new generation is in
    /// the connector's header, its reopen on the way), and goes otherwise (`LinkReuse`, retiring).
    func testListenerKeepsALinkBeingReopened() throws {
        var options = VMSocketOptions(ringSize: 4096)
        options.handshakeTimeout = .seconds(1)
        let listener = try VMListener(address: .port(freePortText()), options: options)
        defer { listener.close() }
        let made = try parkedLinkByHand(listener)
        let control = made.control
        defer { close(control) }
        let idle = try parkedLinkByHand(listener).control
        defer { close(idle) }
        made.startGeneration(1)
        let accepting = Background { try listener.accept() }  // its waits expire the parked links
        XCTAssertTrue(eventually { listener.parkedLinkCount == 1 }, "the idle link should go")
        // The one being reopened is kept for another second: its reopen is served.
        let reopen = HandshakeMessage(kind: .reopen, ringCapacity: 4096, dialed: listener.localAddress).encoded()
        try RawControl.send(control, reopen, descriptors: [])
        XCTAssertNoThrow(try XCTUnwrap(accepting.wait(timeout: 10)).get())
    }

    /// A connector that began a reopen and never sends it holds the parked link for one more timeout only.
    func testAReopenNeverSentIsNotWaitedForLong() throws {
        var options = VMSocketOptions(ringSize: 4096)
        options.handshakeTimeout = .milliseconds(200)
        let listener = try VMListener(address: .port(freePortText()), options: options)
        defer { listener.close() }
        let made = try parkedLinkByHand(listener)
        defer { close(made.control) }
        made.startGeneration(1)
        let accepting = Background { try listener.accept() }
        // Refused: the listener shows generation 1 written, read and closed, retired and reset.
        let refused: UInt32 = 1 << 8 | 0x37
        XCTAssertTrue(eventually { made.listenerWord() == refused }, "not refused: 0x\(String(made.listenerWord(), radix: 16))")
        XCTAssertEqual(listener.parkedLinkCount, 0)
        listener.close()
        _ = accepting.wait(timeout: 10)
    }

    /// A listener that closes while a reopened connection waits for its accept ends that connection, as a TCP
    /// listener's close resets what waits in its backlog: the client's read fails with ECONNRESET, never hangs.
    func testListenerCloseEndsAReopenNotTaken() throws {
        let listener = try VMListener(address: .port(freePortText()), options: VMSocketOptions(ringSize: 4096))
        try oneConnection(listener, bytes: 100)
        try readAcrossTheClose(listener)
        XCTAssertTrue(eventually { VMSocket.idleLinkCount == 0 }, "the client kept a refused link")
    }

    private func readAcrossTheClose(_ listener: VMListener) throws {
        let client = try reopeningConnect(listener)
        client.readTimeout = .seconds(5)
        let reading = Background { try client.read(upTo: 10) }  // asleep, most likely, when the listener closes
        usleep(20_000)
        listener.close()
        let result = try XCTUnwrap(reading.wait(timeout: 10), "the read hung")
        XCTAssertThrowsError(try result.get()) { XCTAssertEqual(($0 as? VMSockError)?.code, ECONNRESET, "\($0)") }
        XCTAssertThrowsError(try client.writeAll([1])) { XCTAssertEqual(($0 as? VMSockError)?.code, ECONNRESET, "\($0)") }
        client.close()
    }

    /// A poller armed when its connection closed leaves no announcement standing on the parked link: every
    /// wake-up of the next connection arrives.
    func testArmedPollerAtCloseLosesNoWakeUp() throws {
        let listener = try VMListener(address: .port(freePortText()), options: VMSocketOptions(ringSize: 4096))
        defer { listener.close() }
        try closeWhileArmed(listener)
        XCTAssertTrue(eventually { VMSocket.idleLinkCount > 0 && listener.parkedLinkCount > 0 }, "not parked")
        let client = try reopeningConnect(listener)
        try client.writeAll([1])
        let server = try listener.accept()
        XCTAssertEqual(try server.readExactly(1), [1])
        XCTAssertFalse(try server.armReadable())
        try client.writeAll([2])
        var entry = pollfd(fd: server.pollDescriptor, events: Int16(POLLIN), revents: 0)
        XCTAssertEqual(poll(&entry, 1, 3000), 1, "the wake-up for the second write was lost: \(server._debugSnapshot)")
        XCTAssertEqual(try server.readExactly(1), [2])
    }

    private func closeWhileArmed(_ listener: VMListener) throws {
        let (server, client) = try connectedPair(through: listener, options: VMSocketOptions(ringSize: 4096))
        XCTAssertFalse(try server.armReadable())
        server.close()
        client.close()
    }

    /// A connector that speaks the handshake by hand: a well-formed reopen of the next generation on its parked
    /// link is accepted without an answer, and anything else gets a reject, is counted, and leaves the listener
    /// serving.
    func testListenerChecksReopens() throws {
        let listener = try VMListener(address: .port(freePortText()), options: VMSocketOptions(ringSize: 4096))
        defer { listener.close() }
        let endpoint = listener.localAddress
        let reopen = HandshakeMessage(kind: .reopen, ringCapacity: 4096, dialed: endpoint).encoded()
        let cases: [(String, [UInt8], Bool)] = [
            ("garbage", [UInt8](repeating: 0xEE, count: 48), false),
            ("descriptors", reopen, true),
            ("wrong ring size", HandshakeMessage(kind: .reopen, ringCapacity: 8192, dialed: endpoint).encoded(), false),
            ("hello", HandshakeMessage(kind: .hello, ringCapacity: 4096, dialed: endpoint).encoded(), false),
            ("no address", HandshakeMessage(kind: .reopen, ringCapacity: 4096).encoded(), false),
            ("no new generation", reopen, false),
            ("good", reopen, false),
        ]
        for (label, bytes, withDescriptors) in cases {
            let made = try parkedLinkByHand(listener)
            let (control, startGeneration) = (made.control, made.startGeneration)
            defer { close(control) }
            let rejectedBefore = listener.rejectedCount
            let accepting = Background { try listener.accept() }
            let descriptors = withDescriptors ? [RawControl.makeBell()] : []
            if label != "no new generation" { startGeneration(1) }
            try RawControl.send(control, bytes, descriptors: descriptors)
            descriptors.forEach { close($0) }
            if label == "good" {
                XCTAssertNoThrow(try XCTUnwrap(accepting.wait(timeout: 10), label).get(), label)
                XCTAssertEqual(try hasMessage(control), false, "a reopen is not answered")
                continue
            }
            let reply = try RawControl.receive(control, timeoutMs: 3000)
            reply.descriptors.forEach { close($0) }
            let message = try reply.bytes.withUnsafeBytes { try HandshakeMessage.decode($0) }
            XCTAssertEqual(message.kind, .reject, label)
            XCTAssertEqual(message.rejectReason, HandshakeMessage.RejectReason.badRequest.rawValue, label)
            // The same accept call still serves a good connector.
            var options = VMSocketOptions(ringSize: 4096)
            options.reusesLinks = false
            let client = try VMSocket.connect(to: listener.address, options: options)
            let server = try XCTUnwrap(accepting.wait(timeout: 10), label).get()
            try client.writeAll([1])
            XCTAssertEqual(try server.readExactly(1), [1], label)
            XCTAssertEqual(listener.rejectedCount, rejectedBefore + 1, label)
        }
    }

    /// A reopen while the connection is still open is a protocol fault for it, like any message after the
    /// handshake.
    func testReopenOnAnOpenConnectionIsAProtocolFault() throws {
        let listener = try VMListener(address: .port(freePortText()), options: VMSocketOptions(ringSize: 4096))
        defer { listener.close() }
        let accepting = Background { try listener.accept() }
        let control = try handshakeByHand(listener.localAddress).control
        defer { close(control) }
        let server = try XCTUnwrap(accepting.wait(timeout: 10)).get()
        let reader = Background { try server.read(upTo: 1) }
        usleep(50_000)
        let reopen = HandshakeMessage(kind: .reopen, ringCapacity: 4096, dialed: listener.localAddress).encoded()
        try RawControl.send(control, reopen, descriptors: [])
        let result = try XCTUnwrap(reader.wait(timeout: 5), "the read was not woken")
        XCTAssertErrno(EPROTO, try result.get())
    }

    /// A listener that parks its side of every generation by hand but never reads its control socket fills it
    /// with reopens. The connector's next reopen must not wait for room (a blocking send would hang that connect
    /// for good): it fails, the link is freed, and the connect goes on to a new link (here a knock that nothing
    /// answers, so it ends after the handshake timeout).
    func testListenerThatNeverReadsReopensCannotHangConnect() throws {
        let port = freePort()
        let registration = try RawControl.listen(IPEndpoint(numericHost: "127.0.0.1", port: port)!)
        defer { close(registration) }
        let (region, memfd) = try SharedRegion.create(capacity: 4096)
        let header = LocalHeader(base: region.base)
        let serving = Background { () throws -> Int32 in
            let fd = accept(registration, nil, nil)
            let hello = try RawControl.receive(fd, timeoutMs: 5000)
            hello.descriptors.forEach { close($0) }
            let welcome = HandshakeMessage(kind: .welcome, ringCapacity: 4096, reusable: true).encoded()
            try RawControl.send(fd, welcome, descriptors: [memfd.raw, RawControl.makeBell(), RawControl.makeBell()])
            return fd  // kept open, never read again
        }
        var options = VMSocketOptions(ringSize: 4096)
        options.transport = .shm
        options.handshakeTimeout = .milliseconds(300)
        let fixed = options
        func connectOnce(_ index: Int) throws -> Bool {
            let connecting = Background { () throws -> Bool in
                let socket = try VMSocket.connect(host: "127.0.0.1", port: port, options: fixed)
                socket.close()
                return true
            }
            let result = try XCTUnwrap(connecting.wait(timeout: 10), "connect \(index) hung")
            return (try? result.get()) != nil
        }
        XCTAssertTrue(try connectOnce(0))
        let control = try XCTUnwrap(serving.wait(timeout: 10)).get()
        defer { close(control) }
        for index in 1...5000 {
            XCTAssertTrue(eventually { VMSocket.idleLinkCount == 1 }, "not parked before connect \(index)")
            header.reopen(generation: UInt32(index - 1), consumed: nil)  // that generation, parked, nothing read
            header.addShutdown(RingLayout.Shutdown.parked)
            if try !connectOnce(index) {
                XCTAssertGreaterThan(index, 20, "a reopen failed before the socket could be full")
                XCTAssertEqual(VMSocket.idleLinkCount, 0, "the link whose reopen failed is freed")
                return  // the reopens filled the socket, the send refused to wait, the new link found nobody
            }
        }
        XCTFail("5,000 reopens fit in a socket nobody reads: the test did not reach a full socket")
    }

    /// A process that forks while a connection is open does not reuse that connection's link: the child holds a
    /// copy of the connection, and its later close (or write) would otherwise land in the next connection on the
    /// link. Here the child closes its copy after the parent has closed its own and connected again.
    func testLinkInUseAcrossAForkIsNotReused() throws {
        let listener = try VMListener(address: .port(freePortText()), options: VMSocketOptions(ringSize: 4096))
        defer { listener.close() }
        var go: [Int32] = [0, 0]
        XCTAssertEqual(pipe(&go), 0)
        defer { close(go[0]); close(go[1]) }
        var pair: (server: VMSocket, client: VMSocket)? = try connectedPair(
            through: listener, options: VMSocketOptions(ringSize: 4096))
        let child = fork()
        if child == 0 {
            var byte: UInt8 = 0
            _ = read(go[0], &byte, 1)
            pair!.client.close()  // the child lets go of the copy it inherited
            _exit(0)
        }
        XCTAssertGreaterThan(child, 0)
        pair!.client.close()
        pair!.server.close()
        pair = nil
        usleep(100_000)
        XCTAssertEqual(VMSocket.idleLinkCount, 0, "a link in use across the fork was parked")
        let before = TransportStatistics.current.sharedMemoryReused
        let (server, client) = try connectedPair(through: listener, options: VMSocketOptions(ringSize: 4096))
        XCTAssertEqual(TransportStatistics.current.sharedMemoryReused, before, "the next connection reused it")
        var byte: UInt8 = 1
        XCTAssertEqual(write(go[1], &byte, 1), 1)
        XCTAssertEqual(exitStatus(ofChild: child), 0, "the child did not end (nil) or failed")
        try client.writeAll([1])
        XCTAssertEqual(try server.readExactly(1), [1])
        XCTAssertNoThrow(try server.writeAll([2]), "the child's close ended the parent's next connection")
        XCTAssertEqual(try client.readExactly(1), [2])
        server.readTimeout = .milliseconds(200)
        XCTAssertErrno(ETIMEDOUT, try server.read(upTo: 1))  // no end of stream the client never sent
        client.close()
        server.close()
    }

    // MARK: Helpers

    /// A connect through `listener` that must have reopened a parked link (counted once, on this side: nothing
    /// accepts it yet).
    private func reopeningConnect(_ listener: VMListener, _ label: String = "") throws -> VMSocket {
        let before = TransportStatistics.current.sharedMemoryReused
        let client = try VMSocket.connect(to: listener.address, options: VMSocketOptions(ringSize: 4096))
        XCTAssertEqual(TransportStatistics.current.sharedMemoryReused - before, 1, "\(label) not reopened")
        return client
    }

    /// Connects (through `listener`), sends `bytes` each way, closes both sides and lets both sockets go.
    private func oneConnection(_ listener: VMListener, bytes: Int, reuse: Bool = true) throws {
        try exchange(listener, bytes: bytes, reuse: reuse)
        // The sockets are gone once `exchange` returned, but the threads that used them may hold them a moment
        // longer; each side parks its link when the last reference goes.
        if reuse && listener.options.reusesLinks {
            XCTAssertTrue(eventually { VMSocket.idleLinkCount > 0 && listener.parkedLinkCount > 0 }, "not parked")
        }
    }

    private func exchange(_ listener: VMListener, bytes: Int, reuse: Bool) throws {
        var options = VMSocketOptions(ringSize: 4096)
        options.reusesLinks = reuse
        let (server, client) = try connectedPair(through: listener, options: options)
        let pattern = (0..<bytes).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        let sending = Background { try client.writeAll(pattern) }
        XCTAssertEqual(try server.readExactly(bytes), pattern)
        XCTAssertNoThrow(try XCTUnwrap(sending.wait(timeout: 10)).get())
        let answering = Background { try server.writeAll(pattern) }
        XCTAssertEqual(try client.readExactly(bytes), pattern)
        XCTAssertNoThrow(try XCTUnwrap(answering.wait(timeout: 10)).get())
        client.close()
        server.close()
    }

    /// A connection made by hand with a hello that offers reuse, whose listener side is then closed and parked.
    /// - Returns: the control socket of the parked link.
    private func parkedLinkByHand(_ listener: VMListener) throws -> ByHand {
        let parkedBefore = listener.parkedLinkCount
        let made = try acceptAndCloseByHand(listener)
        XCTAssertTrue(eventually { listener.parkedLinkCount > parkedBefore }, "the listener did not park the link")
        return made
    }

    /// (A function of its own: the accepted socket goes, and its link is parked, when `accepting` does.)
    private func acceptAndCloseByHand(_ listener: VMListener) throws -> ByHand {
        let accepting = Background { try listener.accept() }
        let made = try handshakeByHand(listener.localAddress)
        try XCTUnwrap(accepting.wait(timeout: 10)).get().close()
        return made
    }

    /// Sends a hello offering reuse with a good region and bells, and checks the welcome.
    /// A link made by hand: its control socket, what starts a generation in our header, and what reads the
    /// listener's shutdown word.
    private struct ByHand {
        let control: Int32
        let startGeneration: (UInt32) -> Void
        let listenerWord: () -> UInt32
    }

    private func handshakeByHand(_ endpoint: IPEndpoint) throws -> ByHand {
        let control = try RawControl.connect(endpoint)
        let hello = HandshakeMessage(kind: .hello, ringCapacity: 4096, dialed: endpoint, reusable: true)
        let region = try RawControl.makeRegionKept(capacity: 4096)
        let descriptors = [region.fd, RawControl.makeBell(), RawControl.makeBell()]
        try RawControl.send(control, hello.encoded(), descriptors: descriptors)
        descriptors.forEach { close($0) }
        let welcome = try RawControl.receive(control, timeoutMs: 3000)
        let header = welcome.descriptors.first.flatMap { mmap(nil, 4096, PROT_READ, MAP_SHARED, $0, 0) }
        welcome.descriptors.forEach { close($0) }
        guard let header, header != MAP_FAILED else { throw POSIXError(.EINVAL) }
        let message = try welcome.bytes.withUnsafeBytes { try HandshakeMessage.decode($0) }
        XCTAssertEqual(message.kind, .welcome)
        XCTAssertTrue(message.reusable, "the listener did not offer reuse")
        return ByHand(control: control, startGeneration: region.reopen, listenerWord: {
            header.load(fromByteOffset: 640, as: UInt32.self)  // RingLayout.Offset.shutdownFlags
        })
    }

    /// Whether `fd` has a message waiting, without waiting.
    private func hasMessage(_ fd: Int32) throws -> Bool {
        var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&entry, 1, 100) > 0 && entry.revents & Int16(POLLIN) != 0
    }
}

/// Reuse between two real processes.
final class CrossProcessLinkReuseTests: XCTestCase {
    /// Another process connects 200 times in a row, each time sending 4 KiB that we echo: every echo is right, and
    /// most connections (all but those that came before our side had parked the last link) reuse a link, on both
    /// sides.
    func testConnectionsBetweenTwoProcessesReuseLinks() throws {
        let count = 200
        let listener = try VMListener(address: .port(freePortText()), options: VMSocketOptions(transport: .shm))
        defer { listener.close() }
        let before = TransportStatistics.current.sharedMemoryReused
        let peer = try TestPeer("reconnect", String(listener.localAddress.port), String(count))
        for _ in 0..<count {
            let socket = try listener.accept()
            let bytes = try socket.readExactly(4096)
            try socket.writeAll(bytes)
            XCTAssertEqual(try socket.read(upTo: 1), [], "the connector closed")
            socket.close()
        }
        XCTAssertEqual(peer.wait(), 0, peer.errorOutput())
        let line = peer.remainingOutput().trimmingCharacters(in: .whitespacesAndNewlines)
        let theirs = try XCTUnwrap(Int(line.replacingOccurrences(of: "reused ", with: "")), line)
        let ours = TransportStatistics.current.sharedMemoryReused - before
        XCTAssertEqual(theirs, ours, "both sides count the same reopens")
        XCTAssertGreaterThan(ours, count / 2, "fewer than half the connections reused a link")
    }

    /// A listener process killed after a connector reopened a link, before it took the reopen, resets that
    /// connection, as a TCP server killed with a connection in its backlog does: the connector's read and write
    /// fail with ECONNRESET (not end of stream), and the link is not kept.
    func testListenerKilledBeforeTakingAReopenResetsIt() throws {
        VMSocket.closeIdleLinks()  // other tests' links, so that the counts below are this test's
        let port = freePort()
        let peer = try TestPeer("park-one", String(port))
        peer.expectLine("ready")
        let options = VMSocketOptions(ringSize: 4096)
        do {  // the socket goes at the end of the block: its link is parked then
            let first = try VMSocket.connect(host: "127.0.0.1", port: port, options: options)
            try first.writeAll([1, 2, 3])
            first.close()
        }
        peer.expectLine("parked")
        XCTAssertTrue(eventually { VMSocket.idleLinkCount == 1 }, "our side did not park")
        let before = TransportStatistics.current.sharedMemoryReused
        let client = try VMSocket.connect(host: "127.0.0.1", port: port, options: options)
        defer { client.close() }
        XCTAssertEqual(TransportStatistics.current.sharedMemoryReused - before, 1, "not reopened")
        client.readTimeout = .seconds(10)
        peer.killHard()
        XCTAssertThrowsError(try client.read(upTo: 10)) { XCTAssertEqual(($0 as? VMSockError)?.code, ECONNRESET, "\($0)") }
        XCTAssertThrowsError(try client.writeAll([1])) { XCTAssertEqual(($0 as? VMSockError)?.code, ECONNRESET, "\($0)") }
        client.close()
        XCTAssertTrue(eventually { VMSocket.idleLinkCount == 0 }, "the reset link was kept")
    }
}
