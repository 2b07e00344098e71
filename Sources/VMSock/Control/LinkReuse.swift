import Glibc
import Synchronization
import VMSockRing

// Link reuse: a closed connection's link (control socket, both rings, four doorbells) serves the next connection
// between the same two processes.
//
// Setting up a link costs each side about forty system calls (memfd and seals, four mappings, two socketpairs,
// descriptor passing and its checks) and a dozen more plus page faults to tear it down: twice a TCP connect here.
// A client that connects to the same server again and again pays that every time. So when both sides said so in
// the handshake (the `reusable` flag), closing a connection keeps its link. Each side parks it once its
// connection object is gone (nothing in the process can touch the rings any more) and then sets `parked` in its
// shutdown word.
//
// Reopening takes one message and no wait. The connector's next connect to the same registration takes a link
// whose listener side shows `parked` (and has read all we sent), starts the next generation of the link in its
// own header, sends a `reopen` on the link's control socket and returns: its connection is usable at once, as a
// TCP connect returns before the server accepts. The listener, which watches its parked links alongside its
// pending handshakes, takes the reopen at its next accept and starts the same generation in its header. Nothing
// answers the reopen.
//
// Generations. Each side's shutdown word carries the generation of the connection its bits belong to (see
// `RingLayout`); a side reads the other's bits only for its own generation. So until the listener has taken the
// reopen, the connector sees its last connection's `closed` and `parked` as no bits at all: an open connection
// that has not written yet. Positions are not reset: each connection carries on where the last left them, the
// connector's consumer position moved past what it left unread. So everything the connector reads of the
// listener before the listener takes the reopen (its positions, its waiting words) is in range and means "no
// data yet": no check on the data path changes, and no value is trusted that was not before.
//
// Retiring. The listener frees a parked link whose time is up, or all of them when it closes. To never drop
// one that a connector has just reopened unseen, each side stores, then reads the other's word, both
// sequentially consistent: the listener sets `retired` and then looks for the next generation in the
// connector's header; the connector stores the next generation and then looks for `retired`. At least one of
// them sees the other: a connector that sees `retired` makes a new link; a listener that sees the new
// generation keeps the link for the reopen on its way (once, for one more timeout), or, when it closes, the
// reopen still has not come or taking it fails, ends that connection by showing the new generation closed and
// reset, and ringing (`refuseReopen`): the connector's calls fail with ECONNRESET, even while another process
// holds the link's descriptors. A side marks a link `parked` only once it keeps it, and `retired` when it does
// not, so a connector never reopens a link its listener is not waiting with.
//
// Safety. A link is only reused between the two processes that made it: its control socket is a connected Unix
// socket, whose peer never changes, so nobody is shown memory it was not given before. Each side changes only
// its own header. The reopen checks what a hello checks that could have changed (ring sizes) and the connector's
// new generation; a reopen that fails in any way drops the link, and the connector's connection fails with
// ECONNRESET, as a TCP connection whose server never accepts it is reset: shown reset, or its listener gone
// (the control socket hangs up) before it started the connection's generation. A parked link is freed when
// the listener side has held it for the handshake timeout (retired, as above), when the listener closes (the
// same), when either process exits (the control socket hangs up), beyond `LinkPool.limit` parked links in a
// connector process or `PendingHandshakes.parkedLimit` in a listener, and in a forked child (which must not
// share the parent's rings).

extension EstablishedLink {
    /// The peer's header as this link's current connection reads it.
    var peerHeader: PeerHeader { PeerHeader(base: peerRegion.base, generation: generation) }

    /// Whether the peer has parked its side of this generation, and not retired it: its connection on this link
    /// is gone and it waits for a reopen.
    var peerParked: Bool {
        let bits = peerHeader.shutdownFlags
        return bits & RingLayout.Shutdown.parked != 0 && bits & RingLayout.Shutdown.retired == 0
    }

    /// Whether the peer has retired its side: the link will never be reopened.
    var peerRetired: Bool { peerHeader.shutdownFlags & RingLayout.Shutdown.retired != 0 }

    /// The next generation, as the shutdown word holds it.
    var nextGeneration: UInt32 { (generation &+ 1) & RingLayout.Shutdown.generationMask }

    /// This link, reopened as generation `generation` for a connection to `dialed`, our consumer position at
    /// `consumed`.
    func reopened(generation: UInt32, consumed: UInt64, for dialed: IPEndpoint, source: IPEndpoint?) -> EstablishedLink {
        var link = self
        link.generation = generation
        link.start.consumed = consumed
        link.keptForReopen = false
        link.dialed = dialed
        link.source = source
        return link
    }

    /// Marks our side parked: its connection is gone and whoever keeps the link now waits for a reopen (the
    /// listener), or will send one (the connector).
    func markParked() { LocalHeader(base: localRegion.base).addShutdown(RingLayout.Shutdown.parked) }

    /// Marks our side retired: the link will not be kept, and a connector that sees it frees its copy.
    func markRetired() { LocalHeader(base: localRegion.base).addShutdown(RingLayout.Shutdown.retired) }

    /// The listener's side of giving a parked link up (its time is up, or the listener closes): marks it retired,
    /// so that no connector reopens it from now on, and returns whether its connector has begun to reopen it
    /// already (see *Retiring* above). Then the reopen is on its way: the caller keeps the link for it, or ends
    /// that connection with `refuseReopen`.
    func retire() -> Bool {
        LocalHeader(base: localRegion.base).addShutdown(RingLayout.Shutdown.retired)  // sequentially consistent
        return peerBeganReopen
    }

    /// Whether the connector has started the link's next generation in its header (read sequentially
    /// consistent, after our own store in `retire`).
    var peerBeganReopen: Bool {
        PeerHeader(base: peerRegion.base).shutdownWordOrdered >> RingLayout.Shutdown.generationShift == nextGeneration
    }

    /// Ends the connection a connector has begun on this link, without taking it: our side of that generation
    /// reads as closed, retired and reset, as a connection reset in a TCP backlog ends (the connector's reads and
    /// writes fail with ECONNRESET, and it does not keep the link), and both its bells are rung for any
    /// thread of its that sleeps, even while another process holds the link's descriptors. The caller frees the
    /// link.
    func refuseReopen() {
        let local = LocalHeader(base: localRegion.base)
        local.reopen(generation: nextGeneration, consumed: nil)
        local.addShutdown(
            RingLayout.Shutdown.write | RingLayout.Shutdown.read | RingLayout.Shutdown.closed | RingLayout.Shutdown.retired
                | RingLayout.Shutdown.reset)
        peerDataBell.ring()
        peerSpaceBell.ring()
    }
}

extension Handshake {
    /// The connector's side of a reopen: starts the link's next generation and tells the listener, without
    /// waiting for it. Any failure means the link is unusable: the caller frees it, and makes a new one.
    ///
    /// The bells are not drained (two system calls): a close rings ours only when a thread of ours may sleep, and
    /// the peer's writes and reads only for an announcement of ours, so after most connections they are empty.
    /// A shutdown rings all four bells, and rings left over cost the next connection's waits a few spurious
    /// wake-ups (a blocking wait drains after waking, arming drains first, each drain takes up to 64 rings).
    static func reopen(_ link: EstablishedLink, dialed: IPEndpoint, source: IPEndpoint?) throws(VMSockError) -> EstablishedLink {
        let peer = link.peerHeader
        // The listener must have read everything we sent: our producer carries on from there.
        let (produced, consumed) = peer.positions
        guard consumed == link.start.produced, produced &- link.start.consumed <= UInt64(link.peerRegion.capacity) else {
            throw VMSockError(code: ECONNRESET, "the parked link's listener side left data unread")
        }
        let generation = link.nextGeneration
        LocalHeader(base: link.localRegion.base).reopen(generation: generation, consumed: produced)
        guard peer.shutdownWordOrdered & RingLayout.Shutdown.retired == 0 else {
            throw VMSockError(code: ECONNRESET, "the listener is freeing the parked link")
        }
        let request = HandshakeMessage(
            kind: .reopen, ringCapacity: UInt32(link.localRegion.capacity), dialed: dialed, source: source)
        // Without waiting: an honest listener has read our last reopen before it parks the link again, so the
        // socket always has room; one that never reads must not hang this connect (EAGAIN frees the link).
        try ControlSocket.send(link.control.raw, request.encoded(), descriptors: [], waits: false)
        return link.reopened(generation: generation, consumed: produced, for: dialed, source: source)
    }

    /// The listener's side of a reopen, once the parked link's control socket polled readable: never waits.
    /// Throws ECONNRESET when the connector dropped the link, EPROTO for anything but a well-formed reopen of the
    /// next generation (with a reject). A link that fails here is freed, and the connector's connection sees its
    /// peer gone. The ring keeps its size: a listener whose size changed since (`setRingSize`) parks no link of
    /// the old size again, so a reopen already on its way is served, as a connection already in a TCP backlog is.
    static func answerReopen(_ link: EstablishedLink) throws(VMSockError) -> EstablishedLink {
        let request = try ControlSocket.receiveReady(link.control.raw)
        if request.bytes.isEmpty && !request.truncated {
            throw VMSockError(code: ECONNRESET, "connector dropped its parked link")
        }
        let message: HandshakeMessage
        do throws(VMSockError) { message = try decode(request, from: "connector") } catch {
            reject(link.control, .badRequest)
            throw error
        }
        let generation = PeerHeader(base: link.peerRegion.base).shutdownWord >> RingLayout.Shutdown.generationShift
        guard message.kind == .reopen, message.version == HandshakeMessage.protocolVersion,
            request.descriptors.isEmpty, Int(message.ringCapacity) == link.peerRegion.capacity,
            let dialed = message.dialed, generation == link.nextGeneration
        else {
            reject(link.control, .badRequest)
            throw .protocolFault("connector sent a \(message.kind) on a parked link (version \(message.version), \(request.descriptors.count) descriptors, ring \(message.ringCapacity), generation \(generation) after \(link.generation))")
        }
        LocalHeader(base: link.localRegion.base).reopen(generation: generation, consumed: nil)
        return link.reopened(generation: generation, consumed: link.start.consumed, for: dialed, source: message.source)
    }
}
