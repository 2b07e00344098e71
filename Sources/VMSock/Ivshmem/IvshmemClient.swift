import CVMSock
import Glibc
import VMSockRing

/// Another peer of the same vmsockd, as this client knows it: its id, its epoch (from its region slot), and its
/// eventfds, one per vector, which ringing it writes to.
///
/// The protocol hands every peer the same eventfd of a vector, so every peer shares its open file description: any
/// peer could read it (and swallow a wake-up) or clear its O_NONBLOCK, and a peer that did that and also filled the
/// count to its maximum would make the next ring block. vmsockd creates them non-blocking and QEMU sets
/// O_NONBLOCK again; unlike vmsock's own doorbells (`Doorbell`), this cannot be ruled out by us.
package struct IvshmemPeer: Sendable {
    package let id: Int
    /// The slot's epoch when the peer's last vector arrived (0 if its slot did not show one).
    package let epoch: UInt64
    let vectors: [Descriptor]
}

/// A vmsockd client in this process: connects to the daemon's socket, reads the protocol (`IvshmemWire`) and
/// keeps what it says: our id and epoch, the shared region, our eventfds (one per vector, rung by the others) and
/// every other peer's eventfds, as peers join and leave.
///
/// The daemon is trusted more than a peer, but what it sends is still checked: anything out of order or out of
/// range is EPROTO, never a crash.
///
/// Not thread-safe: `update`, `waitForEvents` and `ring` (which reads the peer table they change) belong to one
/// thread at a time. `wait(vector:)`, `drain` and the region touch nothing they change, and may run on another.
package final class IvshmemClient: @unchecked Sendable {  // see above: the peer table has one thread at a time
    package let id: Int
    package let epoch: UInt64
    package let region: IvshmemRegion
    /// The region's memfd, kept so that connections can map their rings from it (twice, for contiguous copies).
    let memory: Descriptor
    package let vectors: Int
    /// The daemon's random instance number, from the region's header.
    package let instance: UInt64
    private let socket: Descriptor
    private let ownVectors: [Descriptor]
    private var reader: IvshmemWire.Reader
    /// Peers whose every vector has arrived, by id.
    private(set) package var peers: [Int: IvshmemPeer]
    /// Peers whose vectors are still arriving.
    private var arriving: [Int: [Descriptor]]
    /// What ended the connection: every later `update` throws it again.
    private var failure: VMSockError?

    /// What changed since the last `update`.
    package enum Event: Equatable, Sendable {
        /// A peer's last vector arrived: it can be rung now.
        case joined(Int)
        case left(Int)
    }

    private init(
        id: Int, epoch: UInt64, region: IvshmemRegion, memory: Descriptor, fields: IvshmemHeader.Fields, socket: Descriptor,
        ownVectors: [Descriptor], reader: IvshmemWire.Reader, peers: [Int: IvshmemPeer], arriving: [Int: [Descriptor]]
    ) {
        self.id = id
        self.epoch = epoch
        self.region = region
        self.memory = memory
        self.vectors = fields.vectors
        self.instance = fields.instance
        self.socket = socket
        self.ownVectors = ownVectors
        self.reader = reader
        self.peers = peers
        self.arriving = arriving
    }

    /// Connects to vmsockd at `path` and reads the join: version, our id, the region, the other peers' eventfds,
    /// our own. Waits at most `timeoutMs` for all of it.
    /// - Throws: ECONNREFUSED when nothing listens at `path`; ETIMEDOUT when the join does not arrive in time;
    ///   ECONNRESET when the daemon hangs up (it refused us: all ids are taken); EPROTO for anything the daemon
    ///   sends that is not the protocol or not a vmsockd region.
    package static func connect(path: String, timeoutMs: Int32 = 5000) throws(VMSockError) -> IvshmemClient {
        let deadline = Deadline.after(milliseconds: timeoutMs)
        let socket = try connectSocket(path, timeoutMs: timeoutMs)
        var reader = IvshmemWire.Reader()
        func next() throws(VMSockError) -> IvshmemWire.Message {
            while true {
                if let message = try reader.next(socket.raw) { return message }
                guard try Sys.wait(socket.raw, Int16(POLLIN), until: deadline) else {
                    throw VMSockError(code: ETIMEDOUT, "vmsockd at \(path) did not send the join within \(timeoutMs) ms")
                }
            }
        }
        let version = try next()
        guard version.value == IvshmemWire.protocolVersion, version.descriptor == nil else {
            throw .protocolFault("vmsockd sent protocol version \(version.value)\(version.descriptor == nil ? "" : " with a descriptor"), we speak \(IvshmemWire.protocolVersion)")
        }
        let idMessage = try next()
        guard idMessage.descriptor == nil, idMessage.value >= 0, idMessage.value < Int64(IvshmemLayout.maximumPeers) else {
            throw .protocolFault("vmsockd sent an invalid id message (\(idMessage.value)\(idMessage.descriptor == nil ? "" : ", with a descriptor"))")
        }
        let id = Int(idMessage.value)
        let memory = try next()
        guard memory.value == IvshmemWire.sharedMemory, let memoryFD = memory.descriptor else {
            throw .protocolFault("vmsockd sent \(memory.value) where the shared memory belongs")
        }
        let (region, fields) = try IvshmemRegion.attach(memoryFD.raw)
        guard id < region.geometry.firstProcessSlot else {
            throw .protocolFault("vmsockd gave us id \(id), beyond its \(region.geometry.firstProcessSlot) peer ids (the rest are process slots)")
        }
        let own = IvshmemHeader(base: region.base).liveness(of: id, in: region.geometry)
        guard own.live, own.epoch > 0 else {
            throw .protocolFault("our slot \(id) in vmsockd's region is not marked live")
        }
        // The other peers' vectors, then our own: the join is complete once all of ours are here.
        var state = Tracker(id: id, vectors: fields.vectors, slots: region.geometry.firstProcessSlot)
        while state.own.count < fields.vectors {
            _ = try state.take(try next(), region: region)
        }
        return IvshmemClient(
            id: id, epoch: own.epoch, region: region, memory: memoryFD, fields: fields, socket: socket, ownVectors: state.own,
            reader: reader, peers: state.peers, arriving: state.arriving)
    }

    /// The socket to poll (POLLIN) for news from the daemon; then call `update`.
    package var descriptor: Int32 { socket.raw }

    /// Reads every message that has arrived, without waiting, and returns what changed.
    /// - Throws: ECONNRESET once the daemon is gone; EPROTO for a message out of the protocol. Either way the
    ///   client is finished: later calls throw again.
    package func update() throws(VMSockError) -> [Event] {
        if let failure { throw failure }
        do throws(VMSockError) {
            return try readArrived()
        } catch {
            failure = error
            throw error
        }
    }

    private func readArrived() throws(VMSockError) -> [Event] {
        var state = Tracker(id: id, vectors: vectors, slots: region.geometry.firstProcessSlot)
        state.peers = peers
        state.arriving = arriving
        state.own = ownVectors
        defer {
            peers = state.peers
            arriving = state.arriving
        }
        var events: [Event] = []
        while let message = try reader.next(socket.raw) {
            if let event = try state.take(message, region: region) { events.append(event) }
        }
        return events
    }

    /// Waits up to `timeoutMs` (-1: for good) for news from the daemon, then reads it (`update`). Returns no
    /// events when the time passed.
    package func waitForEvents(timeoutMs: Int32) throws(VMSockError) -> [Event] {
        let deadline = Deadline.after(milliseconds: timeoutMs)
        while true {
            let events = try update()
            if !events.isEmpty { return events }
            guard try Sys.wait(socket.raw, Int16(POLLIN), until: deadline) else { return [] }
        }
    }

    /// Rings `vector` of peer `peer` (our own id rings ourselves) (writes 1 to its eventfd; never waits, see `IvshmemPeer`). A guest in QEMU gets
    /// it as an MSI-X interrupt; a library client sees its `wait(vector:)` return.
    /// - Throws: EHOSTUNREACH for a peer we do not know (never joined, or left); EINVAL for a vector out of range.
    package func ring(peer: Int, vector: Int) throws(VMSockError) {
        guard vector >= 0 && vector < vectors else {
            throw VMSockError(code: EINVAL, "vector \(vector) is out of range (0..<\(vectors))")
        }
        if peer == id {
            Sys.eventRing(ownVectors[vector].raw)
            return
        }
        guard let target = peers[peer] else { throw VMSockError(code: EHOSTUNREACH, "no ivshmem peer \(peer)") }
        Sys.eventRing(target.vectors[vector].raw)
    }

    /// Our eventfd for `vector`, to poll (POLLIN) in an event loop; `drain(vector:)` clears it.
    package func descriptor(ofVector vector: Int) -> Int32 { ownVectors[vector].raw }

    /// Clears our `vector` and returns how many rings it had (0 for none). Never waits.
    @discardableResult
    package func drain(vector: Int) -> UInt64 { Sys.eventDrain(ownVectors[vector].raw) }

    /// Waits up to `timeoutMs` (-1: for good) until our `vector` is rung, and clears it: how many rings there
    /// were, 0 when the time passed. Another peer could read our eventfd first (see `IvshmemPeer`); then this one
    /// waits on.
    package func wait(vector: Int, timeoutMs: Int32) throws(VMSockError) -> UInt64 {
        guard vector >= 0 && vector < vectors else {
            throw VMSockError(code: EINVAL, "vector \(vector) is out of range (0..<\(vectors))")
        }
        let deadline = Deadline.after(milliseconds: timeoutMs)
        let fd = ownVectors[vector].raw
        while true {
            let rings = Sys.eventDrain(fd)
            if rings > 0 { return rings }
            guard try Sys.wait(fd, Int16(POLLIN), until: deadline) else { return 0 }
        }
    }

    // MARK: The protocol's state

    /// What the messages after the shared memory build: the peers with all their vectors, those still arriving,
    /// and our own vectors. Each message is checked against it.
    private struct Tracker {
        let id: Int
        let vectors: Int
        let slots: Int
        var peers: [Int: IvshmemPeer] = [:]
        var arriving: [Int: [Descriptor]] = [:]
        var own: [Descriptor] = []

        init(id: Int, vectors: Int, slots: Int) {
            self.id = id
            self.vectors = vectors
            self.slots = slots
        }

        mutating func take(_ message: IvshmemWire.Message, region: IvshmemRegion) throws(VMSockError) -> Event? {
            guard message.value >= 0, message.value < Int64(slots) else {
                throw .protocolFault("vmsockd sent \(message.value), which is no peer id (its region has \(slots) slots)")
            }
            let peer = Int(message.value)
            guard let descriptor = message.descriptor else {
                // A leave.
                guard peer != id else { throw .protocolFault("vmsockd said that we (peer \(peer)) left") }
                if peers.removeValue(forKey: peer) != nil || arriving.removeValue(forKey: peer) != nil { return .left(peer) }
                throw .protocolFault("vmsockd said that peer \(peer) left, which never joined")
            }
            guard Sys.describe(descriptor.raw) == "anon_inode:[eventfd]" else {
                throw .protocolFault("vmsockd sent peer \(peer)'s vector as something other than an eventfd (\(Sys.describe(descriptor.raw)))")
            }
            if peer == id {
                guard own.count < vectors else { throw .protocolFault("vmsockd sent us more than \(vectors) vectors") }
                own.append(descriptor)
                return nil
            }
            guard peers[peer] == nil else {
                throw .protocolFault("vmsockd sent peer \(peer) more than \(vectors) vectors")
            }
            var received = arriving[peer, default: []]
            received.append(descriptor)
            guard received.count == vectors else {
                arriving[peer] = received
                return nil
            }
            arriving[peer] = nil
            let slot = IvshmemHeader(base: region.base).liveness(of: peer, in: region.geometry)
            peers[peer] = IvshmemPeer(id: peer, epoch: slot.epoch, vectors: received)
            return .joined(peer)
        }
    }

    /// An AF_UNIX stream socket connected to `path`, non-blocking from then on (every read is a poll and a
    /// non-blocking recvmsg).
    private static func connectSocket(_ path: String, timeoutMs: Int32) throws(VMSockError) -> Descriptor {
        let address = ControlAddress(kind: .path, name: path)
        var (addr, length) = try ControlSocket.socketAddress(address)
        let fd = try Sys.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), "socket(AF_UNIX, SOCK_STREAM)")
        // Say we are vmsock's (`IvshmemWire.clientNamePrefix`); without the name vmsockd takes us for a QEMU, which
        // only costs ids.
        let name = ControlAddress(kind: .abstract, name: "\(IvshmemWire.clientNamePrefix)\(getpid()).\(UInt64.random(in: 0...UInt64.max))")
        if let (own, ownLength) = try? ControlSocket.socketAddress(name) {
            _ = try? withUnsafePointer(to: own) { (pointer) throws(VMSockError) in
                try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { (sa) throws(VMSockError) in
                    try Sys.bind(fd.raw, sa, ownLength, "bind(\(name))")
                }
            }
        }
        // A full backlog keeps a blocking connect waiting; bound it (it then fails with EAGAIN).
        let limit = timeval(tv_sec: Int(timeoutMs / 1000), tv_usec: Int(timeoutMs % 1000) * 1000)
        try Sys.setOption(fd.raw, SOL_SOCKET, SO_SNDTIMEO, limit, "setsockopt(SO_SNDTIMEO)")
        let progress: Sys.ConnectProgress
        do {
            progress = try withUnsafePointer(to: &addr) { (pointer) throws(VMSockError) in
                try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { (sa) throws(VMSockError) in
                    try Sys.connect(fd.raw, sa, length, "connect(\(path))")
                }
            }
        } catch where error.code == ECONNREFUSED || error.code == ENOENT {
            throw VMSockError(code: ECONNREFUSED, "nothing listens on \(path) (is vmsockd running?)")
        }
        guard progress == .connected else {
            throw VMSockError(code: ETIMEDOUT, "vmsockd at \(path) did not accept within \(timeoutMs) ms")
        }
        try Sys.setNonBlocking(fd.raw, true)
        return fd
    }
}
