// Fuzz target: a peer's side of the handshake, message and descriptors together, through a real control socket.
// The input picks one of four steps (the listener answering a hello, the connector reading the answer to its
// hello, the listener taking a reopen, the connector reopening a link whose listener header the peer wrote), the
// message bytes, and the descriptors that travel with them (memfds of any size, seals and header, pipes,
// eventfds, sockets, files: Fuzz/Support/PeerDescriptors.swift), and for a reopen the header words.
// Invariants: no crash; a failure is one of the documented errnos; a link is made only from a well-formed
// message of our version with a sealed memfd of exactly the announced size and a valid header, and two Unix
// sockets; every descriptor received or made for the step is closed afterwards (none leak; the spare half a
// connector makes after its hello is kept by design, and freed before counting).
import CVMSock
import Glibc
import VMSockRing
@testable import VMSock

/// Two links made once by a real handshake between two sockets of this process, for the reopen steps.
nonisolated(unsafe) private var parked: (connector: EstablishedLink, listener: EstablishedLink)?
private let peerIdentity = PeerCredentials(pid: getpid(), uid: getuid(), gid: getgid())
private let address = ControlAddress(kind: .abstract, name: "vmsock-fuzz")
private let dialed = IPEndpoint(family: .v4, addressBytes: [127, 0, 0, 1], port: 7)

private func makeParkedLinks() -> (connector: EstablishedLink, listener: EstablishedLink) {
    let (a, b) = controlPair()
    let sent = try! Handshake.sendHello(a, dialed: dialed, source: dialed.with(port: 9), address: address, capacity: 4096, reusable: true)
    let listener = try! Handshake.answer(b, peer: peerIdentity, capacity: 4096, reusable: true)
    let reply = try! ControlSocket.receiveReady(a.raw)
    let connector = try! Handshake.finishConnect(sent, reply: reply, control: a, peer: peerIdentity, address: address)
    return (connector, listener)
}

private func controlPair() -> (Descriptor, Descriptor) {
    var ends: [Int32] = [-1, -1]
    let type = Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue)
    precondition(socketpair(AF_UNIX, type, 0, &ends) == 0, "socketpair: \(errno)")
    return (Descriptor(ends[0]), Descriptor(ends[1]))
}

/// Reads and drops every message waiting on `fd`, closing the descriptors that came with them.
private func drain(_ fd: Int32) {
    while let received = try? ControlSocket.receiveReady(fd), !received.bytes.isEmpty || !received.descriptors.isEmpty {}
}

/// The errnos the handshake documents for a peer's fault (docs/PEER-CHECKS.md, entries 7 to 18).
private let documented: Set<Int32> = [EPROTO, ECONNRESET, ECONNREFUSED, ENOBUFS, EAGAIN]

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHandshakePeer(_ data: UnsafeRawPointer?, _ count: Int) -> CInt {
    if parked == nil { parked = makeParkedLinks() }
    let links = parked!
    drain(links.connector.control.raw)
    drain(links.listener.control.raw)
    LocalHalf.dropSpare()
    let before = openDescriptors()

    var input = FuzzInput(data, count)
    let step = input.byte() % 4
    let lengthChoice = input.byte()
    let length = lengthChoice < 224 ? HandshakeMessage.size : Int(lengthChoice - 224) * 7
    var message = input.take(length)
    message += [UInt8](repeating: 0, count: length - message.count)
    let announced = message.count >= 12
        ? Int(UInt32(littleEndian: message.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 8, as: UInt32.self) }))
        : 0
    let countChoice = input.byte()
    let descriptorCount = countChoice < 240 ? Int(countChoice % 5) : 14 + Int(countChoice % 6)
    var made = PeerDescriptors()
    let passed = (0..<descriptorCount).map { _ in made.make(&input, ringCapacity: announced) }.filter { $0 >= 0 }
    let capacity = input.pick([4096, 4096, 8192, 16384])  // ours: checked where it is set, so always valid

    do throws(VMSockError) {
        switch step {
        case 0:  // the listener answers a hello
            let (connector, listener) = controlPair()
            try? ControlSocket.send(connector.raw, message, descriptors: passed)
            let link = try Handshake.answer(listener, peer: peerIdentity, capacity: capacity, reusable: input.bool())
            check(link, message: message, passed: passed.count)
            drain(connector.raw)
        case 1:  // the connector reads the answer to its hello
            let (connector, listener) = controlPair()
            let sent = try Handshake.sendHello(
                connector, dialed: dialed, source: dialed.with(port: 9), address: address, capacity: 4096, reusable: input.bool())
            drain(listener.raw)
            try? ControlSocket.send(listener.raw, message, descriptors: passed)
            let reply = try ControlSocket.receiveReady(connector.raw)
            let link = try Handshake.finishConnect(sent, reply: reply, control: connector, peer: peerIdentity, address: address)
            check(link, message: message, passed: passed.count)
        case 2:  // the listener takes a reopen on a parked link, the connector's header of some generation
            let generation = input.bool() ? 1 : UInt32(input.byte())
            LocalHeader(base: links.connector.localRegion.base).reopen(generation: generation, consumed: nil)
            try? ControlSocket.send(links.connector.control.raw, message, descriptors: passed)
            let link = try Handshake.answerReopen(links.listener)
            require(passed.isEmpty && message.count == HandshakeMessage.size, "reopened with \(passed.count) descriptors")
            require(link.dialed != nil && generation == 1, "reopened without an address, or of generation \(generation)")
        default:  // the connector reopens a link whose listener header says anything (the message goes nowhere)
            let header = links.listener.localRegion.base
            let produced = input.bool() ? 0 : UInt64(input.byte()) << (input.byte() % 64)
            let consumed = input.bool() ? 0 : UInt64(input.byte()) << (input.byte() % 64)
            header.storeBytes(of: produced, toByteOffset: RingLayout.Offset.producerPosition, as: UInt64.self)
            header.storeBytes(of: consumed, toByteOffset: RingLayout.Offset.consumerPosition, as: UInt64.self)
            let word = UInt32(input.byte()) | UInt32(input.byte()) << 8
            header.storeBytes(of: word, toByteOffset: RingLayout.Offset.shutdownFlags, as: UInt32.self)
            let link = try Handshake.reopen(links.connector, dialed: dialed, source: dialed.with(port: 9))
            require(consumed == links.connector.start.produced && produced &- links.connector.start.consumed <= 4096
                && word & RingLayout.Shutdown.retired == 0 && link.start.consumed == produced && link.generation == 1,
                "reopened a link the listener's header did not allow (produced \(produced), consumed \(consumed), word \(word))")
        }
    } catch {
        require(documented.contains(error.code), "the step threw an undocumented error: \(error)")
    }
    made.closeAll()
    drain(links.connector.control.raw)
    drain(links.listener.control.raw)
    LocalHalf.dropSpare()
    let after = openDescriptors()
    require(after == before, "\(after - before) descriptors leaked (step \(step), \(descriptorCount) passed)")
    return 0
}

/// What a link made from a peer's message must satisfy.
private func check(_ link: EstablishedLink, message: [UInt8], passed: Int) {
    require(message.count == HandshakeMessage.size && passed == HandshakeMessage.descriptorCount,
            "a link from a \(message.count)-byte message with \(passed) descriptors")
    let decoded = message.withUnsafeBytes { try! HandshakeMessage.decode($0) }
    require(decoded.version == HandshakeMessage.protocolVersion, "a link from protocol \(decoded.version)")
    require(link.peerRegion.capacity == Int(decoded.ringCapacity), "peer region of another size than announced")
    require(RingLayout.isValid(capacity: link.peerRegion.capacity), "peer region of an invalid size")
    try! PeerHeader(base: link.peerRegion.base).validate(expectedCapacity: link.peerRegion.capacity)
    // The whole mapping is readable: header, data, and the data's second view.
    var sum: UInt8 = 0
    let end = RingLayout.headerSize + 2 * link.peerRegion.capacity
    for offset in stride(from: 0, to: end, by: 4096) { sum &+= link.peerRegion.base.load(fromByteOffset: offset, as: UInt8.self) }
    _ = sum
}
