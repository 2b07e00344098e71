import Glibc
import Synchronization
import VMSockRing

/// What both sides hold once the handshake succeeded: their own region and bells, the peer's (checked) region and
/// bells, and the control socket that now serves as the liveness channel.
struct EstablishedLink {
    let control: Descriptor
    let peer: PeerCredentials
    let localRegion: SharedRegion
    let peerRegion: SharedRegion
    let dataBell: Doorbell
    let spaceBell: Doorbell
    let peerDataBell: PeerBell
    let peerSpaceBell: PeerBell
    /// The address and port the connector dialed (both sides know it after the hello, or a reopen).
    var dialed: IPEndpoint?
    /// The connector's own address and port, as its hello (or reopen) said: what the listener reports as the
    /// peer's address (nil if it said neither).
    var source: IPEndpoint? = nil
    /// `asymmetric` when both processes offered it.
    let ordering: WakeUpOrdering
    /// Whether both sides agreed to keep the link for another connection once this one is closed (`LinkReuse`).
    let reusable: Bool
    /// The connection's generation on this link: 0 for the first, one more at each reopen (`LinkReuse`).
    var generation: UInt32 = 0
    /// Where the connection starts: our producer position and our consumer position in the peer's ring (0 on a
    /// new link; where the last connection left them on a reopened one, and the consumer position moved past
    /// what it left unread).
    var start: (produced: UInt64, consumed: UInt64) = (0, 0)
    /// The listener kept this parked link past its time once already, for a reopen its connector had begun.
    var keptForReopen = false
    /// The process that made the link.
    let creator = Sys.processID()
    /// For a connection inside vmsockd's region: its connection slot, released when the link goes.
    var lease: IvshmemLease? = nil
    /// Whether we may still write our half (a guest process in vmsockd's region may lose that right; `Standing`).
    var standing = Standing.always
    /// For a connection inside vmsockd's region: whether our reader or writer sleeps, for the region's dispatcher.
    var sleepFlags: SleepFlags? = nil
    /// Both regions' memfds (ours, then the peer's), kept only when the answer was asked to: vmsock-run's
    /// listener hands a welcomed link to a forked sibling that accepted its connection, which maps them itself.
    var memory: [Descriptor] = []

    /// Whether this process made the link. A forked child shares the parent's rings, so it must never park,
    /// reopen or answer a reopen of a link: every place a link changes hands asks this.
    var isOwnedByThisProcess: Bool { Sys.processID() == creator }
}

/// Our half of a connection before the peer has seen it: the region and bells we are about to pass.
struct LocalHalf: Sendable {
    let region: SharedRegion
    let memfd: Descriptor
    let dataBell: Doorbell
    let spaceBell: Doorbell

    private init(capacity: Int, sealWrites: Bool = true) throws(VMSockError) {
        (region, memfd) = try SharedRegion.create(capacity: capacity, sealWrites: sealWrites)
        dataBell = try Doorbell.create()
        spaceBell = try Doorbell.create()
    }

    /// A half whose region can still be mapped writable (`SharedRegion.sealWrites` ends that).
    init(forHandOff capacity: Int) throws(VMSockError) { try self.init(capacity: capacity, sealWrites: false) }

    var descriptors: [Int32] { [memfd.raw, dataBell.sender.raw, spaceBell.sender.raw] }

    // Making a half costs about eight system calls (memfd, seals, two mappings, two socketpairs): a quarter of a
    // connection's set-up. So a listener keeps one spare, made while nothing waits (before it sleeps, unless a
    // connector's hello is on its way) or while its connector maps its welcome, and the next connect or accept
    // takes it; closing a listener frees it. A connector that does not offer link reuse (`reusesLinks` false, and
    // vmsock-run's connections), from its second hello on, makes the next one's spare while the listener answers
    // (one that reuses links makes new ones only now and then, and a spare would wait for good). A half is never
    // reused once a peer has seen it, and only the process that made it takes it: a forked child holds a copy of
    // the same memory, and two connections must never share it. A spare replaced or taken out is released
    // outside the lock, so that a fork never finds the lock held by a thread busy with munmap and close.
    private static let spare = Mutex<(half: LocalHalf, owner: pid_t)?>(nil)
    /// Hellos this process sent (and its parent before a fork: a count, not a record).
    private static let hellos = Atomic<Int>(0)

    /// A fresh half of `capacity` bytes: the spare when it fits, else a new one. Short of descriptors or of the
    /// memory budget, a spare of another size is freed for it (its five descriptors and its ring's charge).
    static func take(capacity: Int) throws(VMSockError) -> LocalHalf {
        let me = Sys.processID()
        let kept = spare.withLock { spare -> (half: LocalHalf, owner: pid_t)? in
            guard let kept = spare, kept.half.region.capacity == capacity else { return nil }
            spare = nil
            return kept
        }
        if let kept, kept.owner == me { return kept.half }  // (a parent's, in a forked child, goes here)
        do throws(VMSockError) { return try LocalHalf(capacity: capacity) } catch {
            // Short of descriptors, or of the memory budget (ENOMEM): a spare of another size holds some.
            guard error.code == EMFILE || error.code == ENFILE || error.code == ENOMEM, dropSpare() else { throw error }
            return try LocalHalf(capacity: capacity)
        }
    }

    /// Frees the spare, if any (its five descriptors with it): whether there was one.
    @discardableResult
    static func dropSpare() -> Bool {
        let dropped = spare.withLock { spare in
            defer { spare = nil }
            return spare
        }
        return dropped != nil
    }

    /// For a connector that has sent its hello: makes the spare while the listener answers, when the hello did
    /// not offer link reuse and is not this process's first, and there is no spare of this process's already (a
    /// listener's of another ring size is not replaced: the two would take turns throwing each other's away).
    /// Returns whether this process keeps spares for its connects (the hello was not its first and did not offer
    /// reuse), whether or not one was made now: the caller may then bind the next connection's port too.
    static func prepareSpareAfterHello(capacity: Int, reusable: Bool) -> Bool {
        let count = hellos.add(1, ordering: .relaxed).newValue
        guard !reusable, count >= 2 else { return false }
        let owner = Sys.processID()
        guard spare.withLock({ $0 == nil || $0!.owner != owner }) else { return true }
        store(try? LocalHalf(capacity: capacity), owner: owner, replacingOurs: false)
        return true
    }

    /// Makes the spare now if there is none of this size: call where nothing waits for this thread (before a
    /// listener sleeps, or while its connector maps the welcome), so the next connection need not.
    static func prepareSpare(capacity: Int) {
        let owner = Sys.processID()
        guard spare.withLock({ $0?.half.region.capacity != capacity || $0?.owner != owner }) else { return }
        store(try? LocalHalf(capacity: capacity), owner: owner, replacingOurs: true)
    }

    /// Stores `half` as the spare: in place of a forked parent's, and of one of ours only if `replacingOurs`
    /// (else `half` goes). Whatever goes is released after the lock.
    private static func store(_ half: LocalHalf?, owner: pid_t, replacingOurs: Bool) {
        guard let half else { return }
        let unused = spare.withLock { spare -> LocalHalf? in
            if let kept = spare, kept.owner == owner, !replacingOurs { return half }
            defer { spare = (half, owner) }
            return spare?.half
        }
        _ = unused
    }
}

/// The connect handshake. Connector: hello with its memory and bells; listener: welcome with its own, or reject.
enum Handshake {
    /// The connector's hello, sent: our half of the connection, kept until the listener's answer.
    struct HelloSent {
        fileprivate let mine: LocalHalf
        let dialed: IPEndpoint
        let reusable: Bool
        /// Whether this process makes the next connection's parts while the listener answers (its spare half).
        let preparesNext: Bool
    }

    /// The connector's first step: makes our region and bells and sends them in a hello. Never waits (a fresh
    /// control socket has room for one message).
    static func sendHello(
        _ control: Descriptor, dialed: IPEndpoint, source: IPEndpoint?, address: ControlAddress, capacity: Int,
        reusable: Bool = false
    ) throws(VMSockError) -> HelloSent {
        let mine: LocalHalf
        do throws(VMSockError) { mine = try LocalHalf.take(capacity: capacity) } catch {
            throw error.because(.outOfResources)
        }
        let hello = HandshakeMessage(
            kind: .hello, ringCapacity: UInt32(capacity), dialed: dialed, source: source,
            ordering: Membarrier.offered,
            reusable: reusable)
        do throws(VMSockError) {
            try ControlSocket.send(control.raw, hello.encoded(), descriptors: mine.descriptors)
        } catch where error.code == ECONNRESET || error.code == EPIPE {
            // A listener checks who we are when it takes us in, and one whose policy does not admit us (or that
            // has no descriptor left) sends a reject and closes, maybe before our hello goes: the send fails with
            // ECONNRESET or EPIPE. The reject is still queued for us, and it says why where the hang-up alone
            // would say only that the handshake failed.
            if let reply = try? ControlSocket.receiveIfReady(control.raw), let message = try? decode(reply, from: "listener"),
                message.kind == .reject
            {
                throw refusal(message, address: address)
            }
            throw error
        }
        let preparing = LocalHalf.prepareSpareAfterHello(capacity: capacity, reusable: reusable)
        return HelloSent(mine: mine, dialed: dialed, reusable: reusable, preparesNext: preparing)
    }

    /// The connector's second step, with the listener's answer: the link, or why not.
    static func finishConnect(
        _ sent: HelloSent, reply: ControlSocket.Received, control: Descriptor, peer: PeerCredentials,
        address: ControlAddress
    ) throws(VMSockError) -> EstablishedLink {
        if reply.bytes.isEmpty && !reply.truncated {
            throw VMSockError(code: ECONNRESET, "the listener at \(address) closed the connection during the handshake")
        }
        let message = try decode(reply, from: "listener")
        switch message.kind {
        case .welcome: break
        case .reject:
            throw refusal(message, address: address)
        case .hello, .reopen:
            throw .protocolFault("listener answered the handshake with a \(message.kind)")
        }
        guard message.version == HandshakeMessage.protocolVersion else {
            throw VMSockError.protocolFault(
                "listener welcomed us with protocol \(message.version), we speak \(HandshakeMessage.protocolVersion)"
            ).because(.versionMismatch)
        }
        let theirs = try adopt(reply.descriptors, capacity: Int(message.ringCapacity), from: "listener")
        let mine = sent.mine
        return EstablishedLink(
            control: control, peer: peer, localRegion: mine.region, peerRegion: theirs.region,
            dataBell: mine.dataBell, spaceBell: mine.spaceBell,
            peerDataBell: theirs.dataBell, peerSpaceBell: theirs.spaceBell, dialed: sent.dialed,
            ordering: agreed(message.ordering), reusable: sent.reusable && message.reusable)
    }

    /// The error for a listener's reject, with the fallback reason its reject reason gives.
    private static func refusal(_ message: HandshakeMessage, address: ControlAddress) -> VMSockError {
        let reason = HandshakeMessage.RejectReason(rawValue: message.rejectReason).map { "\($0)" }
            ?? "reason \(message.rejectReason)"
        let detail = message.rejectReason == HandshakeMessage.RejectReason.versionMismatch.rawValue
            ? " (listener speaks protocol \(message.version), we speak \(HandshakeMessage.protocolVersion))" : ""
        let fallback: FallbackReason = switch HandshakeMessage.RejectReason(rawValue: message.rejectReason) {
        case .versionMismatch: .versionMismatch
        case .notPermitted: .refusedByListener
        case .outOfResources: .outOfResources
        case .badRequest, nil: .handshakeFailed
        }
        return VMSockError(code: ECONNREFUSED, "the listener at \(address) refused the connection: \(reason)\(detail)")
            .because(fallback)
    }

    /// The listener's side, first step, on a control socket just accepted: checks who connected (SO_PEERCRED).
    /// A connector the policy does not admit gets a reject, and this throws EACCES.
    static func admit(_ control: Descriptor, policy: PeerPolicy) throws(VMSockError) -> PeerCredentials {
        let peer = try ControlSocket.peerCredentials(control.raw)
        guard policy.admits(peer) else {
            reject(control, .notPermitted)
            throw VMSockError(code: EACCES, "refused a connector with uid \(peer.uid) (pid \(peer.pid)) by policy")
        }
        return peer
    }

    /// The listener's side, second step, once the hello has arrived (the control socket polled readable): never
    /// waits. A hello that is malformed or of another version gets a reject saying why, and this throws.
    /// `reusable`: whether this listener keeps links for reuse; the link is reusable when the hello says so too.
    /// `received`: the hello, if the caller has received it already.
    static func answer(
        _ control: Descriptor, peer: PeerCredentials, capacity: Int, reusable: Bool, keepMemory: Bool = false,
        received: ControlSocket.Received? = nil
    ) throws(VMSockError) -> EstablishedLink {
        let request: ControlSocket.Received
        if let received { request = received } else { request = try ControlSocket.receiveReady(control.raw) }
        if request.bytes.isEmpty && !request.truncated {
            throw VMSockError(code: ECONNRESET, "connector closed the connection before its hello")
        }
        let theirs: PeerHalf
        let dialed: IPEndpoint?
        let source: IPEndpoint?
        let ordering: WakeUpOrdering
        let agreedReuse: Bool
        do throws(VMSockError) {
            let hello = try decode(request, from: "connector")
            guard hello.version == HandshakeMessage.protocolVersion else {
                reject(control, .versionMismatch)  // the one answer: the catch below sends no second
                throw VMSockError.protocolFault(
                    "connector speaks protocol \(hello.version), we speak \(HandshakeMessage.protocolVersion)"
                ).because(.versionMismatch)
            }
            guard hello.kind == .hello else { throw VMSockError.protocolFault("connector sent a \(hello.kind) instead of a hello") }
            dialed = hello.dialed
            source = hello.source
            ordering = agreed(hello.ordering)
            agreedReuse = reusable && hello.reusable
            theirs = try adopt(request.descriptors, capacity: Int(hello.ringCapacity), from: "connector")
        } catch {
            if error.code == EPROTO && error.fallback != .versionMismatch { reject(control, .badRequest) }
            if error.isShortOfResources { reject(control, .outOfResources) }  // e.g. no room to map their ring
            throw error
        }
        let mine: LocalHalf
        do throws(VMSockError) {
            // A half kept for a sibling to map writable is made for it (the spare is sealed already).
            mine = keepMemory ? try LocalHalf(forHandOff: capacity) : try LocalHalf.take(capacity: capacity)
        } catch {
            reject(control, .outOfResources)
            throw error
        }
        let welcome = HandshakeMessage(
            kind: .welcome, ringCapacity: UInt32(capacity), ordering: Membarrier.offered, reusable: agreedReuse)
        try ControlSocket.send(control.raw, welcome.encoded(), descriptors: mine.descriptors)
        var link = EstablishedLink(
            control: control, peer: peer, localRegion: mine.region, peerRegion: theirs.region,
            dataBell: mine.dataBell, spaceBell: mine.spaceBell,
            peerDataBell: theirs.dataBell, peerSpaceBell: theirs.spaceBell, dialed: dialed, source: source,
            ordering: ordering, reusable: agreedReuse)
        if keepMemory { link.memory = [mine.memfd, theirs.memfd] } else {
            // The connector now maps what we sent: the next connection's half is made meanwhile.
            LocalHalf.prepareSpare(capacity: capacity)
        }
        return link
    }

    /// Asymmetric fences need both processes registered: our barrier must reach the peer's cores and theirs ours.
    private static func agreed(_ theirs: WakeUpOrdering) -> WakeUpOrdering {
        theirs == .asymmetric && Membarrier.isRegistered ? .asymmetric : .fenced
    }

    /// Turns a connector away with `reason`, best effort (it may be gone already).
    static func reject(_ control: Descriptor, _ reason: HandshakeMessage.RejectReason) {
        let message = HandshakeMessage(kind: .reject, rejectReason: reason.rawValue)
        try? ControlSocket.send(control.raw, message.encoded(), descriptors: [])
    }

    static func decode(_ received: ControlSocket.Received, from who: String) throws(VMSockError) -> HandshakeMessage {
        if received.truncated {
            // The kernel also truncates when it cannot install the descriptors: that is us out of them, not the
            // peer breaking the rules. One more descriptor, made while the ones received are still held, tells.
            if let short = Sys.descriptorShortage() {
                throw VMSockError(code: short, "no descriptors left to receive \(who)'s handshake (\(VMSockError.name(of: short)))")
            }
            throw .protocolFault("\(who) sent an oversized handshake message or too many descriptors")
        }
        let decoded = received.bytes.withUnsafeBytes { bytes in
            Result { () throws(HandshakeMessage.DecodeError) in try HandshakeMessage.decode(bytes) }
        }
        switch decoded {
        case .success(let message): return message
        case .failure(let error): throw .protocolFault("\(who) sent a malformed handshake: \(error)")
        }
    }

    private struct PeerHalf {
        let region: SharedRegion
        let memfd: Descriptor
        let dataBell: PeerBell
        let spaceBell: PeerBell
    }

    /// Checks and maps what the peer passed: exactly memfd, data bell, space bell. Every received descriptor is
    /// owned by `descriptors`, so whatever we do not keep is closed when this returns or throws.
    private static func adopt(_ descriptors: [Descriptor], capacity: Int, from who: String) throws(VMSockError) -> PeerHalf {
        guard descriptors.count == HandshakeMessage.descriptorCount else {
            throw .protocolFault("\(who) passed \(descriptors.count) descriptors, expected \(HandshakeMessage.descriptorCount)")
        }
        let region = try SharedRegion.attachPeer(fd: descriptors[0].raw, capacity: capacity)
        return PeerHalf(
            region: region, memfd: descriptors[0], dataBell: try PeerBell.adopt(descriptors[1]), spaceBell: try PeerBell.adopt(descriptors[2]))
    }
}
