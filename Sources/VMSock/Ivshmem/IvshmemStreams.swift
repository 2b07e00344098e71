import CVMSock
import Glibc
import Synchronization
import VMSockRing

// The connect handshake through the region (layout: `IvshmemArena`):
//
// 1. A listener publishes listen entries: CAS of an entry's owner word from 0 (or from a peer no longer current)
//    to its own, the fields, then `published`.
// 2. A connector finds the entry for the address and port it dialed (`findListener`), claims a free connection
//    slot (CAS of the connector word from 0 to its owner word marked `claiming`), resets the listener word,
//    initializes its half's ring header, writes what it dialed and a new request number, stores
//    `state = requested`, clears its mark (CAS), and rings the listener. No listener looks at a claiming slot.
// 3. The listener (woken by the dispatcher, or by its tick) finds a slot that asks for it on its port, claims the
//    listener word (CAS from 0), checks that the request did not change under it, checks the connector's half
//    header as it checks a peer's ring today, initializes its own half, stores `state = accepted`, and rings back.
//    Or it stores `state = refused`.
// 4. The connector sees `accepted` with the listener word naming the peer it asked, checks the listener's half,
//    and both run a `SharedMemoryStream` over the two halves: `asymmetric` when both are processes of one kernel
//    that registered for membarrier (the slot's ordering words, the host key), else `fenced` (a host and a guest,
//    or two guests: no barrier crosses kernels).
//
// Each side's `IvshmemLease` marks its side of the slot released when the link goes and frees the slot if the
// other side is done too; a dead side's claim counts as released (see `IvshmemArenaView.freeIfDone`).

/// Which side of a connection slot we are.
enum IvshmemSide: Sendable {
    case connector
    case listener
}

/// One side's hold on a connection slot, released when the link that carries it goes (the last reference to
/// the engine): its side's released bit, the slot freed if the other side is done, the dispatcher's watch gone.
final class IvshmemLease: @unchecked Sendable {  // immutable
    let node: IvshmemNode
    let slot: Int
    let side: IvshmemSide
    /// Who we were when we took the slot (a guest process may have a new identity since: `IvshmemNode.me`).
    let owner: IvshmemArena.Owner
    private let watchID: Int
    /// The process that holds the slot: a forked child's copy of the lease releases nothing of the parent's.
    private let creator = Sys.processID()

    init(node: IvshmemNode, slot: Int, side: IvshmemSide, owner: IvshmemArena.Owner, watchID: Int) {
        self.node = node
        self.slot = slot
        self.side = side
        self.owner = owner
        self.watchID = watchID
    }

    deinit {
        guard Sys.processID() == creator else { return }
        node.unwatch(watchID)
        node.release(slot: slot, side: side, owner: owner)
    }
}

extension IvshmemNode {
    // MARK: Listen table

    /// Publishes a listen entry for `address` (the wildcard too) and `port`, owned by `me`. Returns its index.
    /// - Throws: ENOSPC when every entry is taken by a current peer.
    func publishListen(_ address: IPEndpoint, port: UInt16, as me: IvshmemArena.Owner) throws(VMSockError) -> Int {
        let arena = view.arena
        for index in 0..<arena.listenEntries {
            let entry = arena.listenEntryOffset(index)
            let owner = view.load64(entry + IvshmemArena.ListenOffset.owner)
            guard owner == 0 || !view.isCurrent(word: owner) else { continue }
            // Marked `claiming` until the fields are ours: a finder skips the entry meanwhile, where it could
            // otherwise read the last owner's fields under our word.
            let claiming = me.word | IvshmemArena.Owner.claimingBit
            guard view.cas64(entry + IvshmemArena.ListenOffset.owner, owner, claiming) else { continue }
            guard view.isCurrent(me) else {  // vmsockd took us back: publish nothing under that identity
                _ = view.cas64(entry + IvshmemArena.ListenOffset.owner, claiming, 0)
                throw Self.identityLost(me)
            }
            view.store32(entry + IvshmemArena.ListenOffset.published, 0)
            view.store16(entry + IvshmemArena.ListenOffset.port, port)
            view.store8(entry + IvshmemArena.ListenOffset.family, address.family == .v4 ? 4 : 6)
            view.storeBytes16(entry + IvshmemArena.ListenOffset.address, address.addressBytes)
            view.store64(entry + IvshmemArena.ListenOffset.hostKey, hostKey)
            view.store32(entry + IvshmemArena.ListenOffset.published, 1)
            guard view.cas64(entry + IvshmemArena.ListenOffset.owner, claiming, me.word) else {
                // Taken from under our mark: only once we were judged gone (or by a scribbler).
                if !view.isCurrent(me) { throw Self.identityLost(me) }
                continue
            }
            return index
        }
        throw VMSockError(code: ENOSPC, "all \(arena.listenEntries) listen entries of vmsockd's region at \(path) are taken")
    }

    /// Withdraws a listen entry `me` published (one another peer took over stays theirs): a CAS of its owner word
    /// alone. A finder re-checks the owner after reading the fields, and the next publisher writes its fields under
    /// a claiming mark, which finders skip; a store to `published` here could land on the entry of a peer that took
    /// ours over meanwhile (ours is free to take once `me` is an identity vmsockd took back).
    func unpublishListen(_ index: Int, as me: IvshmemArena.Owner) {
        _ = view.cas64(view.arena.listenEntryOffset(index) + IvshmemArena.ListenOffset.owner, me.word, 0)
    }

    /// The peer listening on `destination`: an entry for its exact address and port, else (for an address of this
    /// host) a wildcard entry for the port from a listener of this host and network namespace. Loopback entries
    /// count only from this host and namespace too. Every field is read once and checked; an entry whose owner
    /// changed while we read it is skipped.
    func findListener(_ destination: IPEndpoint) -> IvshmemArena.Owner? {
        let target = destination.mappedIPv4 ?? destination
        if let host = aliasedHost(target) { return findHostListener(port: target.port, hostKey: host) }
        let family: UInt8 = target.family == .v4 ? 4 : 6
        let wanted = target.addressBytes + [UInt8](repeating: 0, count: 16 - target.addressBytes.count)
        let zero = [UInt8](repeating: 0, count: 16)
        var wildcard: IvshmemArena.Owner? = nil
        for index in 0..<view.arena.listenEntries {
            let entry = view.arena.listenEntryOffset(index)
            let word = view.load64(entry + IvshmemArena.ListenOffset.owner)
            let entryFamily = view.load8(entry + IvshmemArena.ListenOffset.family)
            guard let owner = IvshmemArena.Owner(word: word), !IvshmemArena.Owner.isClaiming(word),
                view.load32(entry + IvshmemArena.ListenOffset.published) == 1,
                view.load16(entry + IvshmemArena.ListenOffset.port) == target.port, entryFamily == family || entryFamily == 6
            else { continue }
            let address = view.loadBytes16(entry + IvshmemArena.ListenOffset.address)
            let ours = view.load64(entry + IvshmemArena.ListenOffset.hostKey) == hostKey
            guard view.load64(entry + IvshmemArena.ListenOffset.owner) == word, view.isCurrent(owner) else { continue }
            if entryFamily == family && address == wanted && (!target.isLoopback || ours) { return owner }
            // A wildcard of the dialed family, or IPv6's (`::`, which accepts IPv4 too, as over TCP).
            if address == zero && ours && wildcard == nil && LocalAddresses.isLocal(target) { wildcard = owner }
        }
        return wildcard
    }

    /// The host key of vmsockd's host when `target` is one of the addresses vmsockd was told name that host to
    /// guests (`--host-alias`, such as 10.0.2.2) and we are not on that host; nil otherwise.
    private func aliasedHost(_ target: IPEndpoint) -> UInt64? {
        guard target.family == .v4 else { return nil }
        let header = IvshmemHeader(base: view.base)
        let host = header.hostKey
        guard host != 0, host != hostKey, header.hostAliases.contains(target.addressBytes) else { return nil }
        return host
    }

    /// A listener of vmsockd's host (`hostKey`) on `port`, on the IPv4 wildcard or loopback address or on IPv6's
    /// wildcard (which accepts IPv4 too): what QEMU user networking connects 10.0.2.2 to.
    private func findHostListener(port: UInt16, hostKey host: UInt64) -> IvshmemArena.Owner? {
        let zero = [UInt8](repeating: 0, count: 16)
        let loopback = [127, 0, 0, 1] + [UInt8](repeating: 0, count: 12)
        for index in 0..<view.arena.listenEntries {
            let entry = view.arena.listenEntryOffset(index)
            let word = view.load64(entry + IvshmemArena.ListenOffset.owner)
            guard let owner = IvshmemArena.Owner(word: word), !IvshmemArena.Owner.isClaiming(word),
                view.load32(entry + IvshmemArena.ListenOffset.published) == 1,
                view.load16(entry + IvshmemArena.ListenOffset.port) == port,
                view.load64(entry + IvshmemArena.ListenOffset.hostKey) == host
            else { continue }
            let family = view.load8(entry + IvshmemArena.ListenOffset.family)
            let address = view.loadBytes16(entry + IvshmemArena.ListenOffset.address)
            guard (family == 4 || family == 6) && address == zero || family == 4 && address == loopback else { continue }
            guard view.load64(entry + IvshmemArena.ListenOffset.owner) == word, view.isCurrent(owner) else { continue }
            return owner
        }
        return nil
    }

    // MARK: Connecting

    /// Claims a connection slot and asks `listener` for a connection to `dialed`, from `source` (our address and
    /// the TCP port we hold). Returns the request to `check` until it is answered.
    /// - Throws: ENOSPC (every slot in use); ECONNRESET (vmsockd went away); EHOSTUNREACH (the listener left).
    func request(to listener: IvshmemArena.Owner, dialed: IPEndpoint, source: IPEndpoint) throws(VMSockError) -> IvshmemRequest {
        if let failure { throw failure }
        let me = self.me
        let bell = try peerBell(listener)
        let ours = try Doorbell.create()
        let arena = view.arena
        var claimed: Int? = nil
        let claiming = me.word | IvshmemArena.Owner.claimingBit
        guard view.isCurrent(me) else { throw Self.identityLost(me) }  // a claim of ours would sit in quarantine
        for index in 0..<arena.slots {
            guard view.freeIfDone(slot: index) else { continue }
            if view.cas64(arena.slotOffset(index) + IvshmemArena.SlotOffset.connector, 0, claiming) {
                claimed = index
                break
            }
        }
        guard let slot = claimed else {
            throw VMSockError(code: ENOSPC, "all \(arena.slots) connection slots of vmsockd's region at \(path) are in use")
        }
        let offset = arena.slotOffset(slot)
        // A slot can be taken from us only once vmsockd took our own slot back (we stood still): then write nothing,
        // and give back the claim if it is still ours.
        guard view.isCurrent(me) else {
            _ = view.cas64(offset + IvshmemArena.SlotOffset.connector, claiming, 0)
            throw Self.identityLost(me)
        }
        view.store64(offset + IvshmemArena.SlotOffset.listener, 0)
        view.store32(offset + IvshmemArena.SlotOffset.state, 0)
        LocalHeader(base: view.base + arena.connectorHalfOffset(slot)).initialize(capacity: arena.ringCapacity(ofSlot: slot))
        let target = dialed.mappedIPv4 ?? dialed
        view.store64(offset + IvshmemArena.SlotOffset.target, listener.word)
        view.store16(offset + IvshmemArena.SlotOffset.dialedPort, target.port)
        view.store16(offset + IvshmemArena.SlotOffset.sourcePort, source.port)
        view.store8(offset + IvshmemArena.SlotOffset.family, target.family == .v4 ? 4 : 6)
        view.storeBytes16(offset + IvshmemArena.SlotOffset.dialedAddress, target.addressBytes)
        view.storeBytes16(offset + IvshmemArena.SlotOffset.sourceAddress, source.addressBytes)
        view.store32(offset + IvshmemArena.SlotOffset.orderingOffered, Membarrier.isRegistered ? 1 : 0)
        view.store32(offset + IvshmemArena.SlotOffset.orderingAgreed, 0)
        view.store64(offset + IvshmemArena.SlotOffset.connectorHostKey, hostKey)
        let number = UInt64.random(in: 1...UInt64.max)
        view.store64(offset + IvshmemArena.SlotOffset.request, number)
        view.store32(offset + IvshmemArena.SlotOffset.state, IvshmemArena.State.requested)
        // Last: a listener takes only a slot whose connector word is bare, so it never judges a request from the
        // fields of the one before, left in a freed slot. A slot taken from us meanwhile (we stood still too
        // long) is not ours to ask with.
        guard view.cas64(offset + IvshmemArena.SlotOffset.connector, claiming, me.word) else {
            throw Self.identityLost(me)
        }
        let request = IvshmemRequest(
            node: self, slot: slot, owner: me, listener: listener, dialed: dialed, sourcePort: source.port, bell: ours)
        bell.ring()
        return request
    }

    /// A connector's request, looked at once: the link once accepted, nil while it waits.
    /// - Throws: ECONNREFUSED (refused, or the listener left); EPROTO (the slot was taken over, or the answer or
    ///   the listener's half is not what the protocol allows); ECONNRESET (vmsockd went away).
    func check(_ request: IvshmemRequest) throws(VMSockError) -> EstablishedLink? {
        if let failure { throw failure }
        guard request.owner == me else { throw Self.identityLost(request.owner) }
        let offset = view.arena.slotOffset(request.slot)
        guard view.load64(offset + IvshmemArena.SlotOffset.connector) == request.owner.word else {
            throw .protocolFault("connection slot \(request.slot) of the region was taken over while we asked \(request.listener)")
        }
        switch view.load32(offset + IvshmemArena.SlotOffset.state) {
        case IvshmemArena.State.requested:
            guard view.isCurrent(request.listener) else {
                throw VMSockError(code: ECONNREFUSED, "\(request.listener) left the region before it answered")
            }
            return nil
        case IvshmemArena.State.accepted:
            let listener = view.load64(offset + IvshmemArena.SlotOffset.listener)
            guard listener == request.listener.word else {
                throw .protocolFault("connection slot \(request.slot) was accepted by 0x\(String(listener, radix: 16)), not by \(request.listener)")
            }
            // Asymmetric only if we offered it and the listener agreed; a word a scribbler changed costs at worst
            // a lost ring, which the 100 ms re-check covers.
            let agreed = view.load32(offset + IvshmemArena.SlotOffset.orderingAgreed) == 1 && Membarrier.isRegistered
            var link = try establish(
                slot: request.slot, side: .connector, owner: request.owner, peer: request.listener,
                ordering: agreed ? .asymmetric : .fenced)
            link.dialed = request.dialed
            link.source = request.dialed.with(port: request.sourcePort)
            request.established = true
            return link
        case IvshmemArena.State.refused:
            throw VMSockError(code: ECONNREFUSED, "\(request.listener) refused the connection (no listener on that port any more)")
        case let other:
            throw .protocolFault("connection slot \(request.slot) has state \(other), which no peer may write there")
        }
    }

    // MARK: Accepting

    /// The next request for `listening`, accepted: its link, with the address dialed and the connector's port and
    /// address. Requests that fail are refused and reported to `rejected`. Never waits.
    func accept(_ listening: IvshmemListening, rejected: (String) -> Void) -> (EstablishedLink, peer: IPEndpoint)? {
        let arena = view.arena
        let me = self.me
        for slot in 0..<arena.slots {
            let offset = arena.slotOffset(slot)
            guard view.load32(offset + IvshmemArena.SlotOffset.state) == IvshmemArena.State.requested,
                view.load64(offset + IvshmemArena.SlotOffset.target) == me.word,
                view.load64(offset + IvshmemArena.SlotOffset.listener) == 0,
                view.load16(offset + IvshmemArena.SlotOffset.dialedPort) == listening.port
            else { continue }
            let word = view.load64(offset + IvshmemArena.SlotOffset.connector)
            guard let connector = IvshmemArena.Owner(word: word), !IvshmemArena.Owner.isReleased(word),
                !IvshmemArena.Owner.isClaiming(word), view.isCurrent(connector)
            else { continue }
            let family = view.load8(offset + IvshmemArena.SlotOffset.family)
            let dialedBytes = view.loadBytes16(offset + IvshmemArena.SlotOffset.dialedAddress)
            let sourceBytes = view.loadBytes16(offset + IvshmemArena.SlotOffset.sourceAddress)
            let sourcePort = view.load16(offset + IvshmemArena.SlotOffset.sourcePort)
            let number = view.load64(offset + IvshmemArena.SlotOffset.request)
            guard family == 4 || family == 6 else { continue }
            let length = family == 4 ? 4 : 16
            let dialed = IPEndpoint(family: family == 4 ? .v4 : .v6, addressBytes: Array(dialedBytes[0..<length]), port: listening.port)
            guard listening.accepts(dialed) else { continue }
            guard view.cas64(offset + IvshmemArena.SlotOffset.listener, 0, me.word) else { continue }
            // The request must be the one we judged: a connector that gave up and claimed again has a new number,
            // and one that claimed a stale slot while we read it may have written another target, port or address
            // (read before the connector word, they could be the last request's).
            guard view.load64(offset + IvshmemArena.SlotOffset.connector) == word,
                view.load64(offset + IvshmemArena.SlotOffset.request) == number,
                view.load32(offset + IvshmemArena.SlotOffset.state) == IvshmemArena.State.requested,
                view.load64(offset + IvshmemArena.SlotOffset.target) == me.word,
                view.load16(offset + IvshmemArena.SlotOffset.dialedPort) == listening.port,
                view.load8(offset + IvshmemArena.SlotOffset.family) == family,
                view.loadBytes16(offset + IvshmemArena.SlotOffset.dialedAddress) == dialedBytes,
                view.loadBytes16(offset + IvshmemArena.SlotOffset.sourceAddress) == sourceBytes,
                view.load16(offset + IvshmemArena.SlotOffset.sourcePort) == sourcePort
            else {
                // Not the request we judged: undo the claim (a released mark would keep the slot from the
                // listener it is meant for until its connector gave up).
                _ = view.cas64(offset + IvshmemArena.SlotOffset.listener, me.word, 0)
                continue
            }
            let peerAddress = IPEndpoint(family: dialed.family, addressBytes: Array(sourceBytes[0..<length]), port: sourcePort)
            // Taken back from us (we stood still)? Then write nothing more here, and give back the claim if it is
            // still ours.
            guard view.isCurrent(me) else {
                _ = view.cas64(offset + IvshmemArena.SlotOffset.listener, me.word, 0)
                return nil
            }
            do throws(VMSockError) {
                guard listening.options.peerPolicy.admits(credentials(of: connector.id)) else {
                    throw VMSockError(code: EACCES, "\(connector) (uid \(credentials(of: connector.id).uid)) is not admitted by the listener's peer policy")
                }
                LocalHeader(base: view.base + arena.listenerHalfOffset(slot)).initialize(capacity: arena.ringCapacity(ofSlot: slot))
                let asymmetric = Membarrier.isRegistered
                    && view.load32(offset + IvshmemArena.SlotOffset.orderingOffered) == 1
                    && view.load64(offset + IvshmemArena.SlotOffset.connectorHostKey) == hostKey
                var link = try establish(
                    slot: slot, side: .listener, owner: me, peer: connector, ordering: asymmetric ? .asymmetric : .fenced)
                view.store32(offset + IvshmemArena.SlotOffset.orderingAgreed, asymmetric ? 1 : 0)
                link.dialed = dialed
                link.source = peerAddress
                view.store32(offset + IvshmemArena.SlotOffset.state, IvshmemArena.State.accepted)
                link.peerDataBell.ring()
                return (link, peerAddress)
            } catch {
                view.store32(offset + IvshmemArena.SlotOffset.state, IvshmemArena.State.refused)
                (try? peerBell(connector))?.ring()
                release(slot: slot, side: .listener, owner: me)
                rejected("refused \(connector)'s connection in slot \(slot): \(error.message)")
            }
        }
        return nil
    }

    // MARK: Links and slots

    /// Maps both halves of `slot` (ours read-write, the peer's read-only, each data area twice), checks the
    /// peer's half header, and makes the link: our bells, a bell that rings the peer, and a liveness socket the
    /// dispatcher ends when the peer does.
    private func establish(
        slot: Int, side: IvshmemSide, owner: IvshmemArena.Owner, peer: IvshmemArena.Owner, ordering: WakeUpOrdering
    ) throws(VMSockError) -> EstablishedLink {
        let arena = view.arena
        let (ours, theirs) = side == .connector
            ? (arena.connectorHalfOffset(slot), arena.listenerHalfOffset(slot))
            : (arena.listenerHalfOffset(slot), arena.connectorHalfOffset(slot))
        let capacity = arena.ringCapacity(ofSlot: slot)
        let localRegion = try SharedRegion.mapIvshmemHalf(
            fd: memory.fd, offset: memory.offset + ours, capacity: capacity, writable: true)
        let peerRegion = try SharedRegion.mapIvshmemHalf(
            fd: memory.fd, offset: memory.offset + theirs, capacity: capacity, writable: false)
        do throws(RingViolation) {
            try PeerHeader(base: peerRegion.base).validate(expectedCapacity: capacity)
        } catch {
            throw .protocolFault("\(peer)'s half of connection slot \(slot): \(error)")
        }
        let dataBell = try Doorbell.create()
        let spaceBell = try Doorbell.create()
        let bell = try peerBell(peer)
        let sleeping = SleepFlags()
        let (control, watchID) = try watch(peer: peer, dataBell: dataBell, spaceBell: spaceBell, sleeping: sleeping)
        let lease = IvshmemLease(node: self, slot: slot, side: side, owner: owner, watchID: watchID)
        var link = EstablishedLink(
            control: control, peer: credentials(of: peer.id), localRegion: localRegion, peerRegion: peerRegion,
            dataBell: dataBell, spaceBell: spaceBell, peerDataBell: bell, peerSpaceBell: bell, ordering: ordering,
            reusable: false, lease: lease)
        link.sleepFlags = sleeping
        if isProcess { link.standing = Standing(processSlotOf: owner, in: view) }
        return link
    }

    /// Marks our side of `slot` done (only if the slot still names `owner`, who we were when we took it, there)
    /// and frees the slot if the other side is done too. Called once nothing of ours touches the slot any more,
    /// so an identity taken back since may release it too: no quarantine is needed for it.
    func release(slot: Int, side: IvshmemSide, owner: IvshmemArena.Owner) {
        let offset = view.arena.slotOffset(slot) + (side == .connector ? IvshmemArena.SlotOffset.connector : IvshmemArena.SlotOffset.listener)
        _ = view.cas64(offset, owner.word, owner.word | IvshmemArena.Owner.releasedBit)
        view.freeIfDone(slot: slot)
    }

    /// A request or connection begun under an identity that vmsockd took back since (`takeNewIdentity`).
    static func identityLost(_ owner: IvshmemArena.Owner) -> VMSockError {
        VMSockError(
            code: ECONNRESET,
            "vmsockd took back this process's slot in its region (\(owner)): the process or its VM stood still for over \(IvshmemLayout.processTimeoutMs) ms, so this connection ended; connect again")
    }

    /// A connector that gives up: tells a listener that may have accepted meanwhile that we are gone (our half's
    /// shutdown bits: it sees end of stream and EPIPE), then releases the slot. The bits go only while the slot is
    /// still ours: one freed behind our back (we stood still too long, `Standing`) may carry another connection,
    /// whose listener would read them as its connector's.
    func abandon(_ request: IvshmemRequest) {
        let offset = view.arena.slotOffset(request.slot) + IvshmemArena.SlotOffset.connector
        if view.load64(offset) == request.owner.word && view.isCurrent(request.owner) {
            LocalHeader(base: view.base + view.arena.connectorHalfOffset(request.slot))
                .addShutdown(RingLayout.Shutdown.write | RingLayout.Shutdown.read | RingLayout.Shutdown.closed)
        }
        release(slot: request.slot, side: .connector, owner: request.owner)
    }
}

/// A connector's request for a connection, until it is answered. Dropping it before it gave a link gives the slot
/// up (`IvshmemNode.abandon`). Its bell is rung by the dispatcher at every pass.
final class IvshmemRequest: @unchecked Sendable {  // one connector at a time
    let node: IvshmemNode
    let slot: Int
    /// Who we were when we claimed the slot.
    let owner: IvshmemArena.Owner
    let listener: IvshmemArena.Owner
    let dialed: IPEndpoint
    let sourcePort: UInt16
    let bell: Doorbell
    private let bellID: Int
    var established = false
    private let creator = Sys.processID()

    init(
        node: IvshmemNode, slot: Int, owner: IvshmemArena.Owner, listener: IvshmemArena.Owner, dialed: IPEndpoint,
        sourcePort: UInt16, bell: Doorbell
    ) {
        self.node = node
        self.slot = slot
        self.owner = owner
        self.listener = listener
        self.dialed = dialed
        self.sourcePort = sourcePort
        self.bell = bell
        bellID = node.addBell(bell, urgent: true)
    }

    deinit {
        guard Sys.processID() == creator else { return }  // a forked child's copy abandons nothing of the parent's
        node.removeBell(bellID)
        if !established { node.abandon(self) }
    }
}

/// A listener's presence in the region: its listen entries and the bell the dispatcher rings.
final class IvshmemListening: @unchecked Sendable {  // immutable but for `published`, behind its lock
    let node: IvshmemNode
    let bound: IPEndpoint
    let options: VMSocketOptions
    let bell: Doorbell
    private let bellID: Int
    /// The entries, and the identity that owns them; none once closed.
    private let published: Mutex<(owner: IvshmemArena.Owner, entries: [Int], closed: Bool)>
    /// The process whose entries these are: a forked child's copy withdraws nothing.
    private let creator = Sys.processID()

    var port: UInt16 { bound.port }

    /// Publishes `bound` (and, for a wildcard, each address of this host's interfaces of its family, and of
    /// IPv4's too for IPv6's wildcard, which accepts both, so that a peer on another host, a guest, finds it by the
    /// address it dials).
    init(node: IvshmemNode, bound: IPEndpoint, options: VMSocketOptions) throws(VMSockError) {
        self.node = node
        self.bound = bound
        self.options = options
        bell = try Doorbell.create()  // first: entries published before a failure here would stay behind
        let owner = node.me
        published = Mutex((owner, try Self.publish(bound, on: node, as: owner), false))
        bellID = node.addBell(bell, urgent: false)
    }

    /// Every entry for `bound`, or none (ENOSPC when the table is full).
    private static func publish(_ bound: IPEndpoint, on node: IvshmemNode, as owner: IvshmemArena.Owner) throws(VMSockError) -> [Int] {
        var entries: [Int] = []
        do throws(VMSockError) {
            var addresses = [bound] + (bound.isWildcard ? LocalAddresses.interfaceAddresses(bound.family) : [])
            if bound.isWildcard && bound.family == .v6 { addresses += LocalAddresses.interfaceAddresses(.v4) }
            for address in addresses { entries.append(try node.publishListen(address, port: bound.port, as: owner)) }
        } catch {
            for entry in entries { node.unpublishListen(entry, as: owner) }
            throw error
        }
        return entries
    }

    deinit { close() }

    /// Publishes the entries again when the node has a new identity (vmsockd took a guest process's slot back):
    /// those of the old one name a peer that is no longer current, and no connector would find us. Called before
    /// each look for requests; a failure (the table full) is tried again at the next.
    func republishIfStale() throws(VMSockError) {
        guard Sys.processID() == creator else { return }  // a forked child takes no lock a parent's thread held
        try published.withLock { (published) throws(VMSockError) in
            let now = node.me
            guard !published.closed, published.owner != now else { return }
            for entry in published.entries { node.unpublishListen(entry, as: published.owner) }
            published.entries = []
            published.entries = try Self.publish(bound, on: node, as: now)
            published.owner = now
        }
    }

    /// Whether a connection dialed to `dialed` is ours: any address for a wildcard listener, else our own.
    func accepts(_ dialed: IPEndpoint) -> Bool {
        bound.isWildcard || (bound.mappedIPv4 ?? bound).addressBytes == dialed.addressBytes
    }

    /// Withdraws the listen entries (idempotent). Requests already accepted are connections of their own.
    func close() {
        guard Sys.processID() == creator else { return }  // a forked child withdraws nothing, and takes no lock
        let first = published.withLock { (published) -> Bool in
            guard !published.closed else { return false }
            published.closed = true
            for entry in published.entries { node.unpublishListen(entry, as: published.owner) }
            return true
        }
        if first { node.removeBell(bellID) }
    }
}
