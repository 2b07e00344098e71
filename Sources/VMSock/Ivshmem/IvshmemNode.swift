import CVMSock
import Glibc
import Synchronization
import VMSockRing

/// This process as a peer of a vmsockd region, for streams (the third engine: `SharedMemoryStream` over rings in
/// the region's arena, `IvshmemArena`). One per region path, made on first use and kept for the process's life,
/// unless vmsockd goes away (then the next use joins again).
///
/// **Doorbells.** The protocol gives every peer one eventfd per vector, and hands it to every other peer, so any
/// of them can read it (swallowing a ring) or clear its O_NONBLOCK and fill its count (so that a plain write blocks).
/// So nothing here ever waits on one of those eventfds from the data path:
///
/// - Ringing a peer is `vms_eventfd_ring_shared`: O_NONBLOCK put back if cleared, then poll for room, then write.
///   A full counter drops the ring. A peer that refills the counter between our poll and our write, having cleared
///   O_NONBLOCK after our check, can still make that write wait until the eventfd's owner reads it (eventfd refuses
///   RWF_NOWAIT for writes: EOPNOTSUPP on Linux 6.18). So callers only queue rings for the `EventRinger` thread,
///   and the dispatcher rescues a write stuck there by reading that eventfd's count away.
/// - Our own eventfds are read only by the dispatcher thread below, with `preadv2(RWF_NOWAIT)`, which never blocks
///   whatever the file flags say. It then wakes, through bells that never leave this process (`Doorbell`), every
///   local connection whose reader or writer announced that it sleeps, every listener, and every connector
///   waiting for an answer; each re-checks the region.
/// - A ring that is lost (swallowed by another peer, dropped at a full counter) costs latency, not a hang: the
///   dispatcher wakes every one of those sleepers at least every `tickMs` anyway, and each re-checks.
///
/// **Liveness.** Each connection's liveness socket (`EstablishedLink.control`) is a socketpair whose other end the
/// dispatcher keeps. It shuts that end down (the connection sees a hang-up: end of stream after the published
/// bytes, then EPIPE) when vmsockd announces the peer's leave, when the peer's slot in the region stops naming it
/// (checked every pass, so within `tickMs`), or when vmsockd itself goes away (then nothing could tell us of a
/// death any more, and every connection ends).
///
/// **Inside a guest** every process shares its VM's id, so the node takes a process slot (`IvshmemProcessSlots`)
/// as its own identity, `me`, and the dispatcher counts its heartbeat up at every pass. If the daemon cleared it
/// anyway (this process, or its whole VM, stood still for `IvshmemLayout.processTimeoutMs`), its peers have ended
/// their connections with it: so does the node. Then it claims a new process slot and carries on under that
/// identity (`takeNewIdentity`): listeners publish their entries again (`IvshmemListening.republishIfStale`), and
/// new connections use it. Nothing of the old identity is written again (`Standing`): its connection slots are
/// released as their links go, or freed after their quarantine (`IvshmemArena`).
final class IvshmemNode: @unchecked Sendable {  // immutable but for `tables` and `identity`, each behind its lock
    let path: String
    let view: IvshmemArenaView
    private let identity: Mutex<IvshmemArena.Owner>
    /// Who we are in the region now. Read it once per operation: a guest process gets a new identity after its
    /// slot was taken back, and an operation begun under the old one keeps to the old one.
    var me: IvshmemArena.Owner { identity.withLock { $0 } }
    /// Whether `me` is a process slot, whose heartbeat the dispatcher keeps.
    let isProcess: Bool
    /// Which host and network namespace we are in, for loopback and wildcard listen entries.
    let hostKey: UInt64
    /// How this process reaches the region (vmsockd's socket, or a guest's PCI device). Its `readLeaves` and
    /// `bell(for:)` only under `tables`' lock.
    let attachment: any IvshmemAttachment
    private let tables = Mutex(Tables())
    /// Rings peers' eventfds, so that no caller waits on one a peer filled.
    private let ringer: EventRinger

    /// How often, at most, the dispatcher wakes sleepers and checks liveness without being rung.
    static let tickMs: Int32 = 100
    /// Without interrupts (`IvshmemMode.polling`) nothing rings us: the dispatcher looks every `pollingMs` while a
    /// connection waits or a connect is under way (the wake-up delay a sleeper gets), every `idleMs` otherwise
    /// (how soon a listener sees a request, and a connection its dead peer).
    static let pollingMs: Int32 = 1
    static let idleMs: Int32 = 10

    private struct Tables: ~Copyable {
        var connections: [Int: Watch] = [:]
        /// Listeners, and connectors waiting for an answer: rung at every pass.
        var bells: [Int: Doorbell] = [:]
        /// Of `bells`, the connectors': while there are any, a polling dispatcher looks every `pollingMs`.
        var urgentBells: Set<Int> = []
        var nextID = 0
        /// Leaves read by someone other than the dispatcher (`peerBell` updates the table too).
        var leaves: [Int] = []
        var failure: VMSockError? = nil
    }

    /// A connection the dispatcher watches: the peer it is with, the far end of its liveness socket, its bells,
    /// and whether its reader or writer sleeps (`SleepFlags`: our own memory, which no peer can scribble).
    private final class Watch {
        let peer: IvshmemArena.Owner
        let far: Descriptor
        let dataBell: Doorbell
        let spaceBell: Doorbell
        let sleeping: SleepFlags
        var gone = false

        init(peer: IvshmemArena.Owner, far: Descriptor, dataBell: Doorbell, spaceBell: Doorbell, sleeping: SleepFlags) {
            self.peer = peer
            self.far = far
            self.dataBell = dataBell
            self.spaceBell = spaceBell
            self.sleeping = sleeping
        }
    }

    private init(
        path: String, attachment: any IvshmemAttachment, view: IvshmemArenaView, me: IvshmemArena.Owner, ringer: EventRinger
    ) {
        self.path = path
        self.ringer = ringer
        self.attachment = attachment
        self.view = view
        identity = Mutex(me)
        isProcess = view.region.isProcessSlot(me.id)
        hostKey = Self.thisHostKey
    }

    // MARK: Joining

    /// `VMSOCK_IVSHMEM`: the region this process joins when a socket's options name none: the path of vmsockd's
    /// socket (a host process), or `pci` / `pci:ADDRESS` for the ivshmem-doorbell device of a guest
    /// (`IvshmemDevice`). Unset: no region; a guest's device is never used unless asked for.
    static let processPath: String? = {
        guard let path = Sys.setting("VMSOCK_IVSHMEM") else { return nil }
        return path.isEmpty ? nil : path
    }()

    private static let joined = Mutex<[String: IvshmemNode]>([:])

    /// The node for the region `options` name (or `VMSOCK_IVSHMEM`), joining it now if need be; nil when none is
    /// named. Joins are serialized, so two threads never join twice.
    /// - Throws: what `IvshmemClient.connect` throws (ECONNREFUSED when vmsockd does not run there) or
    ///   `IvshmemDevice.open` (ENODEV, EACCES); ENOSPC for a region too small to hold a connection.
    static func node(for options: VMSocketOptions) throws(VMSockError) -> IvshmemNode? {
        guard let path = options.ivshmemPath ?? processPath else { return nil }
        return try joined.withLock { (nodes) throws(VMSockError) -> IvshmemNode in
            if let node = nodes[path] { return node }
            let attachment: any IvshmemAttachment = isDevice(path)
                ? try IvshmemDevice.open(path) : try IvshmemClient.connect(path: path, timeoutMs: 2000)
            guard let arena = IvshmemArena.Geometry(attachment.region.geometry) else {
                throw VMSockError(code: ENOSPC, "vmsockd's region at \(path) is too small to hold a connection")
            }
            let view = IvshmemArenaView(base: attachment.region.base, region: attachment.region.geometry, arena: arena)
            let me = try identity(attachment, view)
            let ringer = try EventRinger.start()
            let node = IvshmemNode(path: path, attachment: attachment, view: view, me: me, ringer: ringer)
            do throws(VMSockError) { try node.startDispatcher() } catch {
                ringer.stop()  // its thread would outlive the failed join
                throw error
            }
            nodes[path] = node
            return node
        }
    }

    /// Who this process is in the region: its attachment's id, or a process slot of its own when the id is shared
    /// (a guest's device).
    /// - Throws: ENOSPC when every process slot is taken.
    private static func identity(_ attachment: any IvshmemAttachment, _ view: IvshmemArenaView) throws(VMSockError) -> IvshmemArena.Owner {
        let peer = IvshmemArena.Owner(id: attachment.id, epoch: attachment.epoch)
        guard attachment.sharesItsID else { return peer }
        guard let me = view.processSlots.claim(for: peer, pid: UInt32(bitPattern: getpid()), uid: getuid(), gid: getgid()) else {
            throw VMSockError(
                code: ENOSPC,
                "all \(view.region.processSlots) process slots of vmsockd's region are taken (one per guest process using it); end some, or give vmsockd a larger --size")
        }
        return me
    }

    /// Whether `VMSOCK_IVSHMEM` (or `VMSocketOptions.ivshmemPath`) names a guest's PCI device, not a socket path.
    static func isDevice(_ path: String) -> Bool { path == "pci" || path.hasPrefix("pci:") }

    /// Boot id and network namespace, hashed (FNV-1a): equal for two processes of one host and namespace.
    static let thisHostKey: UInt64 = {
        var text = "ns\(LocalAddresses.networkNamespace)"
        if let bootID = Sys.readSmallFile("/proc/sys/kernel/random/boot_id", limit: 64) {
            text += String(decoding: bootID, as: UTF8.self)
        }
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return hash | 1  // never 0, which an entry that was never written holds
    }()

    // MARK: The dispatcher

    private func startDispatcher() throws(VMSockError) {
        try Sys.startThread("ivshmem dispatcher") { self.dispatch() }
    }

    /// The dispatcher's loop: wait for a ring, news from vmsockd, or the tick (without interrupts: the polling
    /// interval); then one pass (`sweep`). Ends when vmsockd goes away.
    private func dispatch() {
        let vectors = attachment.interrupts
        var fds = vectors.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
        if let news = attachment.news { fds.append(pollfd(fd: news, events: Int16(POLLIN), revents: 0)) }
        let polling = vectors.isEmpty
        var urgent = false
        var daemon = DaemonWatch(beat: IvshmemHeader(base: view.base).heartbeat, since: monotonicNanos())
        while true {
            for index in fds.indices { fds[index].revents = 0 }
            let timeoutMs = polling ? (urgent ? Self.pollingMs : Self.idleMs) : Self.tickMs
            _ = try? Sys.poll(&fds, timeoutMs: timeoutMs)
            for (index, fd) in vectors.enumerated() where fds[index].revents != 0 {
                _ = vms_eventfd_read_nowait(fd)  // never blocks, whoever cleared O_NONBLOCK
            }
            ringer.rescueIfStuck()
            let news = attachment.news != nil && fds[fds.count - 1].revents != 0
            let failed = tables.withLock { (tables) -> Bool in
                if news {
                    do throws(VMSockError) {
                        tables.leaves += try attachment.readLeaves()
                    } catch {
                        fail(&tables, VMSockError(
                            code: ECONNRESET, "vmsockd at \(path) went away (\(error.message)); no region peer's liveness can be known"))
                        return true
                    }
                }
                if isProcess {
                    // A guest hears nothing from vmsockd but its heartbeat in the header.
                    guard daemon.isAlive(beat: IvshmemHeader(base: view.base).heartbeat, at: monotonicNanos()) else {
                        fail(&tables, VMSockError(
                            code: ECONNRESET,
                            "vmsockd stopped: its heartbeat in the region stood still for \(IvshmemLayout.daemonTimeoutMs) ms, so no peer's death can be learnt; restart it, then this VM (QEMU cannot join a new vmsockd)"))
                        return true
                    }
                    let me = self.me
                    if !view.isCurrent(me) {
                        guard let fresh = takeNewIdentity(&tables) else {
                            fail(&tables, VMSockError(
                                code: ECONNRESET,
                                "vmsockd took back this process's slot in its region (\(me)): the process or its VM stood still for over \(IvshmemLayout.processTimeoutMs) ms, and no new one could be had (its VM left the region, or every process slot is taken)"))
                            return true
                        }
                        view.processSlots.beat(fresh)
                    } else {
                        view.processSlots.beat(me)
                    }
                }
                urgent = sweep(&tables)
                return false
            }
            if failed { return }
        }
    }

    /// vmsockd cleared our process slot (we, or our VM, stood still too long), so every peer has ended its
    /// connections with us: ours end too, and we claim a new process slot to carry on as a new peer. Each listener
    /// republishes its entries at its next look (the pass that follows rings every listener). Nil when our VM is
    /// no longer in the region (then nothing of ours is current, whatever slot we claim) or no slot is free.
    private func takeNewIdentity(_ tables: inout Tables) -> IvshmemArena.Owner? {
        for watch in tables.connections.values where !watch.gone {
            watch.gone = true
            Sys.shutdown(watch.far.raw)
        }
        let vm = IvshmemArena.Owner(id: attachment.id, epoch: attachment.epoch)
        guard view.isCurrent(vm),
            let fresh = view.processSlots.claim(for: vm, pid: UInt32(bitPattern: getpid()), uid: getuid(), gid: getgid())
        else { return nil }
        identity.withLock { $0 = fresh }
        return fresh
    }

    /// What a guest knows of vmsockd's life: its last heartbeat seen, and since when (our monotonic clock).
    private struct DaemonWatch {
        var beat: UInt64
        var since: Int64

        /// False once the heartbeat has stood still for `IvshmemLayout.daemonTimeoutMs`.
        mutating func isAlive(beat current: UInt64, at time: Int64) -> Bool {
            if current != beat {
                beat = current
                since = time
            }
            return time - since < Int64(IvshmemLayout.daemonTimeoutMs) * 1_000_000
        }
    }

    /// One pass: ends the connections whose peer left or is no longer named by its slot, and wakes every sleeper
    /// (connections only where a waiting flag is up) to re-check. Returns whether a connection or a connector
    /// waits (a polling dispatcher then looks again sooner).
    private func sweep(_ tables: inout Tables) -> Bool {
        let leaves = tables.leaves
        tables.leaves = []
        var waiting = !tables.urgentBells.isEmpty
        for watch in tables.connections.values {
            if !watch.gone && (leaves.contains(watch.peer.id) || !view.isCurrent(watch.peer)) {
                watch.gone = true
                Sys.shutdown(watch.far.raw)
            }
            if watch.sleeping.data.load(ordering: .acquiring) {
                watch.dataBell.ringSelf()
                waiting = true
            }
            if watch.sleeping.space.load(ordering: .acquiring) {
                watch.spaceBell.ringSelf()
                waiting = true
            }
        }
        for bell in tables.bells.values { bell.ringSelf() }
        return waiting
    }

    /// vmsockd is gone: every connection ends, and every waiter wakes to learn why.
    private func fail(_ tables: inout Tables, _ error: VMSockError) {
        tables.failure = error
        ringer.stop()
        for watch in tables.connections.values where !watch.gone {
            watch.gone = true
            Sys.shutdown(watch.far.raw)
        }
        for bell in tables.bells.values { bell.ringSelf() }
        _ = Self.joined.withLock { $0.removeValue(forKey: path) }
    }

    /// Why this node cannot serve any more (vmsockd went away), or nil.
    var failure: VMSockError? { tables.withLock { $0.failure } }

    // MARK: Registrations

    /// A bell the dispatcher rings at every pass, for a listener or a waiting connector (`urgent`). Returns its id.
    func addBell(_ bell: Doorbell, urgent: Bool) -> Int {
        tables.withLock { tables in
            tables.nextID += 1
            tables.bells[tables.nextID] = bell
            if urgent { tables.urgentBells.insert(tables.nextID) }
            return tables.nextID
        }
    }

    func removeBell(_ id: Int) {
        tables.withLock { tables in
            tables.bells.removeValue(forKey: id)
            tables.urgentBells.remove(id)
        }
    }

    /// Watches a new connection with `peer`: returns our end of its liveness socket and the watch's id.
    func watch(peer: IvshmemArena.Owner, dataBell: Doorbell, spaceBell: Doorbell, sleeping: SleepFlags) throws(VMSockError) -> (Descriptor, Int) {
        let type = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue)
        let (near, far) = try Sys.socketPair(type, "socketpair(ivshmem liveness)")
        return try tables.withLock { (tables) throws(VMSockError) -> (Descriptor, Int) in
            if let failure = tables.failure { throw failure }
            tables.nextID += 1
            tables.connections[tables.nextID] = Watch(peer: peer, far: far, dataBell: dataBell, spaceBell: spaceBell, sleeping: sleeping)
            return (near, tables.nextID)
        }
    }

    func unwatch(_ id: Int) { _ = tables.withLock { $0.connections.removeValue(forKey: id) } }

    /// A bell that rings `owner` (vector 0 of its peer: our own for ourselves, its VM's for a process in a guest).
    /// - Throws: EHOSTUNREACH for a peer vmsockd has not announced, or whose epoch differs.
    func peerBell(_ owner: IvshmemArena.Owner) throws(VMSockError) -> PeerBell {
        guard let peer = view.ringTarget(of: owner) else {
            throw VMSockError(code: EHOSTUNREACH, "\(owner) is no longer in vmsockd's region")
        }
        return try tables.withLock { (tables) throws(VMSockError) -> PeerBell in
            if let failure = tables.failure { throw failure }
            if let bell = try attachment.bell(for: peer, ringer: ringer) { return bell }
            // Its join may still be unread: the dispatcher would read it within a tick, but it is here now.
            do throws(VMSockError) {
                tables.leaves += try attachment.readLeaves()
            } catch {
                throw VMSockError(code: ECONNRESET, "vmsockd at \(path) went away (\(error.message))")
            }
            guard let bell = try attachment.bell(for: peer, ringer: ringer) else {
                throw VMSockError(code: EHOSTUNREACH, "vmsockd has not announced \(peer)")
            }
            return bell
        }
    }

    /// What vmsockd recorded of `id` at its join (SO_PEERCRED): for a QEMU guest (and each process in it), QEMU's
    /// process. Every peer can write the region, so this is the daemon's record only as far as the region's peers
    /// are honest.
    func credentials(of id: Int) -> PeerCredentials {
        let peer = view.region.isProcessSlot(id) ? view.processSlots.vm(of: id)?.id : id
        guard let peer else { return PeerCredentials(pid: 0, uid: UInt32.max, gid: UInt32.max) }
        let slot = view.region.slotOffset(peer)
        return PeerCredentials(
            pid: pid_t(bitPattern: view.load32(slot + IvshmemLayout.SlotOffset.pid)),
            uid: view.load32(slot + IvshmemLayout.SlotOffset.uid), gid: view.load32(slot + IvshmemLayout.SlotOffset.gid))
    }

    /// What a connection's halves are mapped from: a descriptor, and where the region starts in it.
    var memory: (fd: Int32, offset: Int) { (attachment.memoryFD, attachment.memoryOffset) }
}
