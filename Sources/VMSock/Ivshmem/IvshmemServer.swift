import CVMSock
import Glibc
import VMSockRing

/// vmsockd's broker: QEMU's ivshmem-server protocol (`IvshmemWire`) on a Unix socket path, one shared region
/// (`IvshmemRegion`) and V eventfds per client.
///
/// One thread, one epoll set: the listening socket, every client's socket, and a stop eventfd (which `stop()` and
/// the forwarded SIGINT and SIGTERM ring). It never waits on a client: every send is non-blocking. What does not
/// fit in a client's socket buffer waits in that client's queue, sent as the socket drains (EPOLLOUT); a client
/// whose queue passes `queueLimit` is dropped, like one whose send fails. A client that sends anything, or hangs
/// up, leaves. Whoever leaves is announced to everyone left, so one bad client costs only itself.
///
/// Every `IvshmemProcessJudge.scanIntervalMs` it also looks at the region's process slots (processes inside
/// guests) and clears those whose heartbeat stopped: nobody else could learn of such a death.
package final class IvshmemServer: @unchecked Sendable {  // one thread runs it; others only `stop` (an eventfd write)
    package struct Configuration: Sendable {
        package var path: String
        package var regionSize = IvshmemLayout.defaultRegionSize
        package var vectors = 4
        /// Report every join and leave on standard error, not only the clients dropped or refused.
        package var verbose = false
        /// IPv4 addresses (4 bytes each) that name this host to guests, such as QEMU user networking's 10.0.2.2: a
        /// guest that dials one reaches this host's listeners on the wildcard or loopback address, as slirp would.
        package var hostAliases: [[UInt8]] = []

        package init(path: String) { self.path = path }

        /// Checks sizes and counts: EINVAL saying what is wrong.
        package func validate() throws(VMSockError) {
            if path.isEmpty { throw VMSockError(code: EINVAL, "the socket path is empty") }
            try IvshmemRegion.checkSize(regionSize)
            guard vectors >= 1 && vectors <= IvshmemLayout.maximumVectors else {
                throw VMSockError(code: EINVAL, "\(vectors) vectors: use 1 to \(IvshmemLayout.maximumVectors)")
            }
            guard hostAliases.count <= IvshmemLayout.maximumHostAliases else {
                throw VMSockError(code: EINVAL, "\(hostAliases.count) host aliases: at most \(IvshmemLayout.maximumHostAliases)")
            }
        }
    }

    /// Messages a client may have waiting beyond its socket buffer before it is dropped. A client that reads
    /// never gets near it: the largest burst is a join's, (peers + 1) * vectors + 3 messages. One that does not
    /// read keeps at most the live peers' vectors and one leave per peer it heard of waiting: a leaving peer's
    /// vectors are taken out of every queue (`Client.withdraw`).
    package static let queueLimit = 1 << 16
    /// The socket buffer asked for each client (best effort; the kernel caps it at net.core.wmem_max). A default
    /// Unix stream buffer (208 KiB) takes 278 messages with a descriptor each; a join with 64 vectors and 4 peers
    /// sends 323.
    static let sendBufferSize: Int32 = 1 << 20

    private let configuration: Configuration
    private let region: IvshmemRegion
    private let header: IvshmemHeaderWriter
    private let memory: Descriptor
    private let listener: Descriptor
    /// The inode of the socket file we bound: at exit the path is removed only while it is still ours.
    private let listenerInode: ino_t?
    private let epoll: Descriptor
    private let stopEvent: Descriptor
    /// Readable once a `start`ed server's thread has finished.
    private var background: Descriptor?

    /// The connected clients, in the order they joined (the order the protocol announces them in).
    private var clients: [Client] = []
    private var clientsByToken: [UInt64: Client] = [:]
    private var usedIDs = Set<Int>()
    /// Where the search for the next unused id starts: one past the last id handed out, as QEMU's server does,
    /// so that an id just freed is not handed out again at once.
    private var nextID = 0
    /// For each id that a peer held and left (announced), the join count at its leave. A QEMU that joined before
    /// then may have heard of it, and QEMU's ivshmem device cannot take an id it heard leave again: it frees that
    /// peer's eventfd array at the leave and never makes it anew, so a second join of the id writes into freed
    /// memory and its next leave frees it twice (QEMU 7.2 aborts: "double free or corruption"). So an id is handed
    /// out again only once every QEMU present joined after its leave (`unusedID`). vmsock's own clients take an
    /// id again with its new epoch.
    private var leftAtJoin: [Int: UInt64] = [:]
    /// Set when no id could be handed out, until a client goes: a client connecting in a loop then costs no
    /// search of the whole id space per attempt.
    private var outOfIDs = false
    /// Refusals not logged yet, and the last line and when it was: the same line at most once a second (a client
    /// connecting in a loop must not flood the log, whose writes may block us); another reason at once.
    private var unloggedRefusals = 0
    private var lastRefusalLogNanos: Int64 = 0
    private var lastRefusal = ""
    /// Joins so far: the last epoch handed out.
    private var joins: UInt64 = 0
    /// The listener is out of the epoll set after EMFILE or ENFILE, until a client leaves (or a second passes).
    private var listenerPaused = false
    private var pausedAtNanos: Int64 = 0
    private var processJudge: IvshmemProcessJudge
    private var lastScanNanos: Int64 = 0
    /// The heartbeats written to the header so far (a guest has no other way to learn that we died).
    private var beats: UInt64 = 0

    private static let listenerToken = UInt64.max
    private static let stopToken = UInt64.max - 1

    /// Creates the region, binds the socket (replacing a stale socket file nobody answers on), and sets up the
    /// epoll set. Clients that connect from now on wait in the backlog until `run`.
    /// - Throws: EINVAL for a bad configuration; EADDRINUSE when a server answers on the path, or the path is
    ///   something other than a socket; ENAMETOOLONG; any failure of the calls on the way.
    package init(_ configuration: Configuration) throws(VMSockError) {
        try configuration.validate()
        self.configuration = configuration
        (region, memory) = try IvshmemRegion.create(size: configuration.regionSize, vectors: configuration.vectors)
        header = IvshmemHeaderWriter(base: region.base, geometry: region.geometry)
        processJudge = IvshmemProcessJudge(base: region.base, geometry: region.geometry)
        header.describeHost(key: IvshmemNode.thisHostKey, aliases: configuration.hostAliases)
        listener = try Self.bindListener(configuration.path)
        listenerInode = Sys.inode(of: configuration.path)
        do {
            epoll = try Sys.epollCreate()
            stopEvent = try Sys.eventFD(flags: Int32(EFD_CLOEXEC) | Int32(EFD_NONBLOCK))
            try Sys.epollControl(epoll.raw, EPOLL_CTL_ADD, listener.raw, events: EPOLLIN.rawValue, data: Self.listenerToken)
            try Sys.epollControl(epoll.raw, EPOLL_CTL_ADD, stopEvent.raw, events: EPOLLIN.rawValue, data: Self.stopToken)
        } catch {
            Self.removeSocketFile(configuration.path, inode: listenerInode)
            throw error
        }
    }

    deinit {
        Self.removeSocketFile(configuration.path, inode: listenerInode)
    }

    /// "64 MiB region, 4 vectors".
    package var summary: String {
        "\(IvshmemRegion.describe(region.size)) region, \(configuration.vectors) vector\(configuration.vectors == 1 ? "" : "s")"
    }

    /// Makes SIGINT and SIGTERM stop `run` (they ring the stop eventfd) instead of killing the process.
    package func stopOnTerminationSignals() throws(VMSockError) {
        try Sys.forwardSignal(SIGINT, toEventFD: stopEvent.raw)
        try Sys.forwardSignal(SIGTERM, toEventFD: stopEvent.raw)
    }

    /// Raises this process's descriptor limit to its hard limit: the daemon holds V + 1 descriptors per client,
    /// and a client it cannot make eventfds for is refused. For the daemon's process, not for a library user's.
    package func raiseDescriptorLimit() { Sys.raiseOpenFileLimit() }

    /// Makes `run` return. Any thread.
    package func stop() { Sys.eventRing(stopEvent.raw) }

    /// Runs `run` on a thread of its own (for a vmsockd that serves several regions); `stopAndWait` ends it.
    package func start() throws(VMSockError) {
        let finished = try Sys.eventFD(flags: Int32(EFD_CLOEXEC))
        try Sys.startThread("vmsockd \(configuration.path)") {
            do throws(VMSockError) {
                try self.run()
            } catch {
                self.log("\(self.configuration.path): \(error.message)")
            }
            Sys.eventRing(finished.raw)
        }
        background = finished  // only once the thread runs: `stopAndWait` waits for it
    }

    /// Stops a server `start` runs, and waits until it has let every client go and removed its socket file.
    package func stopAndWait() {
        stop()
        guard let background else { return }
        // A signal (a second SIGINT) ends a poll early: wait on until the thread says it is done.
        while let events = try? Sys.poll(background.raw, Int16(POLLIN), timeoutMs: -1), events == 0 {}
    }

    /// Serves clients until `stop()` (or a forwarded signal); then closes every client's connection and removes
    /// the socket file. Returns normally; throws only when epoll itself fails.
    package func run() throws(VMSockError) {
        defer { shutDown() }
        var events = [epoll_event](repeating: epoll_event(), count: 64)
        while true {
            let ready = try Sys.epollWait(epoll.raw, &events, timeoutMs: Int32(IvshmemProcessJudge.scanIntervalMs))
            if listenerPaused && monotonicNanos() - pausedAtNanos >= 1_000_000_000 { resumeListener() }
            judgeProcesses()
            for event in events.prefix(ready) {
                switch event.data.u64 {
                case Self.stopToken:
                    return
                case Self.listenerToken:
                    acceptClients()
                case let token:
                    // Removed earlier in this batch: its events are stale.
                    guard let client = clientsByToken[token] else { continue }
                    handle(event.events, of: client)
                }
            }
            removeDoomedClients()
            if unloggedRefusals > 0 { sayUnloggedRefusals(monotonicNanos()) }
        }
    }

    /// Counts our heartbeat up and clears the process slots whose heartbeat stopped (at most every
    /// `scanIntervalMs`).
    private func judgeProcesses() {
        let now = monotonicNanos()
        guard now - lastScanNanos >= Int64(IvshmemProcessJudge.scanIntervalMs) * 1_000_000 else { return }
        lastScanNanos = now
        beats += 1
        header.beat(beats)
        for (id, vm) in processJudge.scan(nowMs: UInt64(now / 1_000_000)) where configuration.verbose {
            let of = vm.map { " of peer \($0.id)" } ?? ""
            log("process slot \(id) (a process\(of)) cleared: no heartbeat for \(IvshmemLayout.processTimeoutMs) ms")
        }
    }

    // MARK: Clients

    /// A connected client: its socket, its eventfds (one per vector, which it receives on and everyone else
    /// rings), and the messages that did not fit in its socket yet.
    private final class Client {
        let id: Int
        /// The join count at its join: unique in this region, the token of its epoll events, and the epoch in its
        /// region slot.
        let epoch: UInt64
        let socket: Descriptor
        let vectors: [Descriptor]
        let credentials: PeerCredentials?
        var queue: [(value: Int64, descriptor: Descriptor?)] = []
        var queueStart = 0
        var watchesWritable = false
        /// Why it must go, once set; it is removed (and its leave announced) at the end of the current step.
        var doomed: String?
        /// Whether the others were told of it: only then are they told it left.
        var announced = false
        /// Whether it may be a QEMU, which cannot take an id it heard leave again (`leftAtJoin`).
        let mayBeQEMU: Bool

        init(id: Int, epoch: UInt64, socket: Descriptor, vectors: [Descriptor], credentials: PeerCredentials?, mayBeQEMU: Bool) {
            self.id = id
            self.epoch = epoch
            self.socket = socket
            self.vectors = vectors
            self.credentials = credentials
            self.mayBeQEMU = mayBeQEMU
        }

        var pending: Int { queue.count - queueStart }

        /// Takes the messages that carry one of `descriptors` (a leaving client's vectors) out of what still waits,
        /// and returns how many went: a client that does not read must not keep a departed peer's eventfds open
        /// in its queue, or churning clients would run the daemon out of descriptors.
        func withdraw(_ descriptors: [Descriptor]) -> Int {
            guard pending > 0 else { return 0 }
            let leaving = Set(descriptors.map(ObjectIdentifier.init))
            let waiting = queue[queueStart...]
            let kept = waiting.filter { $0.descriptor.map { !leaving.contains(ObjectIdentifier($0)) } ?? true }
            queue = Array(kept)
            queueStart = 0
            return waiting.count - kept.count
        }
    }

    private func acceptClients() {
        // Bounded, so that a flood of connects cannot keep the loop from the clients' events.
        for _ in 0..<64 {
            let socket: Descriptor?
            do throws(VMSockError) {
                socket = try Sys.acceptUnixNonBlocking(listener.raw, what: "accept(\(configuration.path))")
            } catch {
                log("cannot accept a client: \(error); pausing new connections until a client leaves (or for a second)")
                pauseListener()
                return
            }
            guard let socket else { return }
            join(socket)
            removeDoomedClients()
        }
    }

    /// The whole join of one client, in the protocol's order.
    private func join(_ socket: Descriptor) {
        guard let id = unusedID() else {
            let slots = region.geometry.firstProcessSlot
            let oldest = clients.first(where: \.mayBeQEMU).map { " (the oldest: peer \($0.id), pid \($0.credentials?.pid ?? 0))" } ?? ""
            logRefusal(usedIDs.count < slots
                ? "refused a client: of \(slots) peer ids, \(slots - usedIDs.count) are free but were held by peers that left while a QEMU still here heard of them, and QEMU's ivshmem device cannot take such an id again; restart the VMs that joined first\(oldest), or give vmsockd a larger --size"
                : "refused a client: all \(slots) peer ids are in use")
            return  // closing the socket is the refusal
        }
        let credentials = try? Sys.peerCredentials(socket.raw)
        // vmsock's clients bind a name that says so; QEMU binds none (and a client that fakes the name only
        // puts itself at risk).
        let mayBeQEMU = Sys.unixPeerAbstractName(socket.raw)?.hasPrefix(IvshmemWire.clientNamePrefix) != true
        var vectors: [Descriptor] = []
        for _ in 0..<configuration.vectors {
            do throws(VMSockError) {
                vectors.append(try Sys.eventFD(flags: Int32(EFD_CLOEXEC) | Int32(EFD_NONBLOCK)))
            } catch {
                logRefusal("refused a client: \(error)")
                return
            }
        }
        do throws(VMSockError) {
            try Sys.epollControl(epoll.raw, EPOLL_CTL_ADD, socket.raw, events: Self.readEvents, data: joins + 1)
        } catch {
            logRefusal("refused a client: \(error)")
            return
        }
        // Best effort: a smaller buffer only means more messages wait in the queue.
        try? Sys.setOption(socket.raw, SOL_SOCKET, SO_SNDBUF, Self.sendBufferSize, "setsockopt(SO_SNDBUF)")
        joins += 1
        let client = Client(id: id, epoch: joins, socket: socket, vectors: vectors, credentials: credentials, mayBeQEMU: mayBeQEMU)
        let others = clients
        clients.append(client)
        clientsByToken[client.epoch] = client
        usedIDs.insert(id)
        nextID = (id + 1) % region.geometry.firstProcessSlot
        // The slot is live before the client can learn its id, so it finds its epoch there.
        header.markJoined(
            id: id, epoch: client.epoch, pid: UInt32(bitPattern: credentials?.pid ?? 0),
            uid: credentials?.uid ?? UInt32.max, gid: credentials?.gid ?? UInt32.max)

        send(to: client, IvshmemWire.protocolVersion)
        send(to: client, Int64(id))
        send(to: client, IvshmemWire.sharedMemory, memory)
        // A client that is gone already is removed without a word to the others: they never heard of it.
        if client.doomed != nil { return }
        client.announced = true
        for other in others where other.doomed == nil {
            for vector in vectors { send(to: other, Int64(id), vector) }
        }
        for other in others {
            for vector in other.vectors { send(to: client, Int64(other.id), vector) }
        }
        for vector in vectors { send(to: client, Int64(id), vector) }
        if configuration.verbose {
            let who = credentials.map { " (pid \($0.pid), uid \($0.uid))" } ?? ""
            log("peer \(id) joined\(who), epoch \(client.epoch)")
        }
    }

    /// The next id nobody holds and no present QEMU heard leave (`leftAtJoin`), searching from `nextID` and
    /// wrapping; nil when there is none.
    private func unusedID() -> Int? {
        let slots = region.geometry.firstProcessSlot  // the rest are process slots, never handed out
        guard usedIDs.count < slots else { return nil }
        guard !outOfIDs else { return nil }
        let oldest = clients.first(where: \.mayBeQEMU)?.epoch ?? UInt64.max  // `clients` is in join order
        var id = nextID
        for _ in 0..<slots {
            if !usedIDs.contains(id) && leftAtJoin[id, default: 0] < oldest { return id }
            id = (id + 1) % slots
        }
        outOfIDs = true
        return nil
    }

    /// One line about a refused client: the same line at most once a second. The ones left unsaid are counted, and
    /// said in one line (`sayUnloggedRefusals`) before a different line, or once the second is over.
    private func logRefusal(_ line: String) {
        let now = monotonicNanos()
        if line == lastRefusal && (now - lastRefusalLogNanos < 1_000_000_000 || unloggedRefusals > 0) {
            unloggedRefusals += 1  // a second on, a flood of them is one count line a second, not two
            sayUnloggedRefusals(now)
            return
        }
        sayUnloggedRefusals(now, now: true)
        lastRefusal = line
        lastRefusalLogNanos = now
        log(line)
    }

    /// The refusals `logRefusal` counted without a line, in one line with the last one's reason: at once when
    /// `now`, else only once a second has passed since the last line (the loop asks at every turn, so a count
    /// is never held back for good by the absence of a next refusal).
    private func sayUnloggedRefusals(_ time: Int64, now: Bool = false) {
        guard unloggedRefusals > 0, now || time - lastRefusalLogNanos >= 1_000_000_000 else { return }
        let tenths = (time - lastRefusalLogNanos) / 100_000_000
        let times = unloggedRefusals == 1 ? "1 more time" : "\(unloggedRefusals) more times"
        log(lastRefusal + " (\(times) in the \(tenths / 10).\(tenths % 10) s since that line)")
        unloggedRefusals = 0
        lastRefusalLogNanos = time
    }

    /// A client's socket is readable (it sent something, which clients never do), hung up, erred, or writable.
    private func handle(_ events: UInt32, of client: Client) {
        if events & (EPOLLHUP.rawValue | EPOLLRDHUP.rawValue | EPOLLERR.rawValue) != 0 {
            doom(client, "hung up")
        } else if events & EPOLLIN.rawValue != 0 {
            doom(client, "sent a message (clients never send)")
        } else if events & EPOLLOUT.rawValue != 0 {
            flush(client)
        }
    }

    /// Sends one message to `client`, or queues it behind what already waits. Never waits.
    private func send(to client: Client, _ value: Int64, _ descriptor: Descriptor? = nil) {
        guard client.doomed == nil else { return }
        if client.pending > 0 {
            enqueue(client, value, descriptor)
            return
        }
        do throws(VMSockError) {
            if try IvshmemWire.send(client.socket.raw, value, descriptor: descriptor?.raw) == .full {
                enqueue(client, value, descriptor)
            }
        } catch {
            doom(client, "cannot be sent to: \(error)")
        }
    }

    private func enqueue(_ client: Client, _ value: Int64, _ descriptor: Descriptor?) {
        guard client.pending < Self.queueLimit else {
            doom(client, "does not read: \(Self.queueLimit) messages wait beyond its socket buffer")
            return
        }
        client.queue.append((value, descriptor))
        if !client.watchesWritable { watch(client, writable: true) }
    }

    /// Sends what waits in `client`'s queue, until its socket is full again.
    private func flush(_ client: Client) {
        while client.doomed == nil && client.pending > 0 {
            let (value, descriptor) = client.queue[client.queueStart]
            do throws(VMSockError) {
                guard try IvshmemWire.send(client.socket.raw, value, descriptor: descriptor?.raw) == .sent else {
                    // Full again: drop what was sent from the front, so the queue holds only what waits.
                    if client.queueStart >= 1024 {
                        client.queue.removeFirst(client.queueStart)
                        client.queueStart = 0
                    }
                    return
                }
            } catch {
                doom(client, "cannot be sent to: \(error)")
                return
            }
            client.queue[client.queueStart].descriptor = nil
            client.queueStart += 1
        }
        guard client.pending == 0 else { return }
        client.queue.removeAll()
        client.queueStart = 0
        if client.watchesWritable && client.doomed == nil { watch(client, writable: false) }
    }

    private static let readEvents = EPOLLIN.rawValue | EPOLLRDHUP.rawValue

    private func watch(_ client: Client, writable: Bool) {
        let events = Self.readEvents | (writable ? EPOLLOUT.rawValue : 0)
        do throws(VMSockError) {
            try Sys.epollControl(epoll.raw, EPOLL_CTL_MOD, client.socket.raw, events: events, data: client.epoch)
            client.watchesWritable = writable
        } catch {
            doom(client, "cannot be watched: \(error)")
        }
    }

    private func doom(_ client: Client, _ reason: String) {
        if client.doomed == nil { client.doomed = reason }
    }

    /// Removes every doomed client and tells the others, which may doom more of them (a full queue): until none is
    /// left.
    private func removeDoomedClients() {
        while let index = clients.firstIndex(where: { $0.doomed != nil }) {
            let client = clients.remove(at: index)
            clientsByToken[client.epoch] = nil
            usedIDs.remove(client.id)
            header.markLeft(id: client.id, epoch: client.epoch)
            // Removing from the set before closing: the socket may be open in another process too (a fork).
            try? Sys.epollControl(epoll.raw, EPOLL_CTL_DEL, client.socket.raw, events: 0, data: 0)
            let reason = client.doomed ?? ""
            let normal = reason == "hung up"
            if !client.announced {
                // Gone before its join was sent (a prober, or a client that died at once): nobody heard of it.
                if configuration.verbose { log("a client (id \(client.id)) left before it joined: it \(reason)") }
            } else if configuration.verbose || !normal {
                log("peer \(client.id) left: it \(reason)")
            }
            outOfIDs = false
            if client.announced {
                leftAtJoin[client.id] = joins
                for other in clients {
                    // A peer that never got any of its vectors (they all still waited) is not told it left either.
                    if other.withdraw(client.vectors) < client.vectors.count { send(to: other, Int64(client.id)) }
                }
            }
            if listenerPaused { resumeListener() }
        }
    }

    // MARK: The listening socket

    private func pauseListener() {
        guard !listenerPaused else { return }
        try? Sys.epollControl(epoll.raw, EPOLL_CTL_DEL, listener.raw, events: 0, data: 0)
        listenerPaused = true
        pausedAtNanos = monotonicNanos()
    }

    private func resumeListener() {
        do throws(VMSockError) {
            try Sys.epollControl(epoll.raw, EPOLL_CTL_ADD, listener.raw, events: EPOLLIN.rawValue, data: Self.listenerToken)
            listenerPaused = false
        } catch {
            // Stays paused: tried again within a second.
        }
    }

    /// Binds and listens on `path`. A socket file already there is probed: one that answers belongs to a running
    /// server and is left alone (EADDRINUSE); one nobody answers on is stale and replaced. Anything at the path
    /// that is not a socket is never removed.
    private static func bindListener(_ path: String) throws(VMSockError) -> Descriptor {
        let address = ControlAddress(kind: .path, name: path)
        var (addr, length) = try ControlSocket.socketAddress(address)
        func attempt() throws(VMSockError) -> Descriptor {
            let type = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue)
            let fd = try Sys.socket(AF_UNIX, type, "socket(AF_UNIX, SOCK_STREAM)")
            try withUnsafePointer(to: &addr) { (pointer) throws(VMSockError) in
                try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { (sa) throws(VMSockError) in
                    try Sys.bind(fd.raw, sa, length, "bind(\(path))")
                }
            }
            return fd
        }
        let fd: Descriptor
        do {
            fd = try attempt()
        } catch where error.code == EADDRINUSE {
            guard let info = Sys.pathStatus(path), info.st_mode & S_IFMT == S_IFSOCK else {
                throw VMSockError(code: EADDRINUSE, "\(path) exists and is not a socket; not replacing it")
            }
            if isAnswered(address) {
                throw VMSockError(code: EADDRINUSE, "\(path): a server is already running there (another vmsockd?)")
            }
            Sys.unlink(path)  // stale: nobody answers on it
            fd = try attempt()
        }
        try Sys.listen(fd.raw, backlog: 64, "listen(\(path))")
        return fd
    }

    /// Whether a server accepts connections on the socket file at `address`. A running vmsockd takes the probe for a
    /// client that joins and leaves at once, and tells its clients so: a cost only a second start pays.
    private static func isAnswered(_ address: ControlAddress) -> Bool {
        guard let probe = try? Sys.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), "socket(probe)"),
              let (socketAddress, length) = try? ControlSocket.socketAddress(address)
        else { return false }
        var addr = socketAddress
        let outcome = withUnsafePointer(to: &addr) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                Result { () throws(VMSockError) in try Sys.connect(probe.raw, sa, length, "connect(probe)") }
            }
        }
        switch outcome {
        case .success: return true  // connected, or a full backlog (.wouldBlock): a live server either way
        case .failure: return false  // ECONNREFUSED: nobody listens
        }
    }

    // MARK: Ending

    private func shutDown() {
        sayUnloggedRefusals(monotonicNanos(), now: true)
        for client in clients { try? Sys.epollControl(epoll.raw, EPOLL_CTL_DEL, client.socket.raw, events: 0, data: 0) }
        clients.removeAll()
        clientsByToken.removeAll()
        usedIDs.removeAll()
        leftAtJoin.removeAll()
        Self.removeSocketFile(configuration.path, inode: listenerInode)
    }

    /// Removes the socket file, only while it is still the one we bound (a newer server may have replaced a file
    /// it found stale).
    private static func removeSocketFile(_ path: String, inode: ino_t?) {
        if let ours = inode, Sys.inode(of: path) == ours { Sys.unlink(path) }
    }

    /// One line on standard error: joins and leaves with `verbose`, and always what went wrong.
    private func log(_ line: String) { Sys.writeToStandardError("vmsockd: \(line)\n") }
}
