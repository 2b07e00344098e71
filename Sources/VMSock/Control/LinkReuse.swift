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
// shutdown word. The connector's next connect to the same registration takes a link whose listener side shows
// `parked`, resets its own ring header and sends a `reopen` on the link's control socket. The listener, which
// watches its parked links alongside its pending handshakes, resets its own header and answers with a welcome.
// That is one message each way, without descriptors or mappings.
//
// Safety. A link is only reused between the two processes that made it: its control socket is a connected Unix
// socket, whose peer never changes, so nobody is shown memory it was not given before. Each side resets only its
// own header, and only while the other side's connection is gone too. The reopen checks what a hello checks
// that could have changed (ring sizes); a reopen that fails in any way drops the link, and the connector makes a
// new one. A parked link is freed when the listener side has held it for the handshake timeout, when the
// listener closes, when either process exits (the control socket hangs up), beyond `LinkPool.limit` parked
// links in a connector process or `PendingHandshakes.parkedLimit` in a listener, and in a forked child (which
// must not share the parent's rings).

extension EstablishedLink {
    /// Whether the peer has parked its side: its connection on this link is gone.
    var peerParked: Bool { PeerHeader(base: peerRegion.base).shutdownFlags & RingLayout.Shutdown.parked != 0 }

    /// This link, reopened for a connection to `dialed`.
    func reopened(for dialed: IPEndpoint, source: IPEndpoint?) -> EstablishedLink {
        var link = self
        link.dialed = dialed
        link.source = source
        return link
    }

    /// Our side as a new link has it: zero positions, no waiting flags, no shutdown bits. The bells are not
    /// drained (two system calls): a close rings ours only when a thread of ours may sleep, and the peer's writes
    /// and reads only for an announcement of ours, so after most connections they are empty. A shutdown rings
    /// all four bells, and rings left over cost the next connection's waits a few spurious wake-ups (a blocking
    /// wait drains after waking, arming drains first, each drain takes up to 64 rings).
    func resetLocalSide() {
        LocalHeader(base: localRegion.base).reset()
    }
}

extension Handshake {
    /// The connector's side of a reopen, first step: resets our side and asks the listener to reopen the link
    /// for a connection to `dialed`. Never waits. Any failure means the link is unusable: the caller frees it.
    static func sendReopen(_ link: EstablishedLink, dialed: IPEndpoint, source: IPEndpoint?) throws(VMSockError) {
        link.resetLocalSide()
        let request = HandshakeMessage(
            kind: .reopen, ringCapacity: UInt32(link.localRegion.capacity), dialed: dialed, source: source)
        try ControlSocket.send(link.control.raw, request.encoded(), descriptors: [])
    }

    /// The connector's side of a reopen, second step, with the listener's answer: the reopened link, or why not.
    static func finishReopen(
        _ link: EstablishedLink, reply: ControlSocket.Received, dialed: IPEndpoint, source: IPEndpoint?
    ) throws(VMSockError) -> EstablishedLink {
        if reply.bytes.isEmpty && !reply.truncated {
            throw VMSockError(code: ECONNRESET, "the listener dropped the parked link")
        }
        let message = try decode(reply, from: "listener")
        guard message.kind == .welcome, message.version == HandshakeMessage.protocolVersion,
            reply.descriptors.isEmpty, Int(message.ringCapacity) == link.peerRegion.capacity
        else {
            throw .protocolFault("listener answered a reopen with a \(message.kind) (version \(message.version), \(reply.descriptors.count) descriptors, ring \(message.ringCapacity))")
        }
        return link.reopened(for: dialed, source: source)
    }

    /// The listener's side of a reopen, once the parked link's control socket polled readable: never waits.
    /// Throws ECONNRESET when the connector dropped the link, EPROTO for anything but a well-formed reopen (with
    /// a reject), ENOBUFS when our ring size has changed since (with a reject: the connector makes a new link).
    static func answerReopen(_ link: EstablishedLink, capacity: Int) throws(VMSockError) -> EstablishedLink {
        let request = try ControlSocket.receiveReady(link.control.raw)
        if request.bytes.isEmpty && !request.truncated {
            throw VMSockError(code: ECONNRESET, "connector dropped its parked link")
        }
        let message: HandshakeMessage
        do throws(VMSockError) { message = try decode(request, from: "connector") } catch {
            reject(link.control, .badRequest)
            throw error
        }
        guard message.kind == .reopen, message.version == HandshakeMessage.protocolVersion,
            request.descriptors.isEmpty, Int(message.ringCapacity) == link.peerRegion.capacity,
            let dialed = message.dialed
        else {
            reject(link.control, .badRequest)
            throw .protocolFault("connector sent a \(message.kind) on a parked link (version \(message.version), \(request.descriptors.count) descriptors, ring \(message.ringCapacity))")
        }
        guard capacity == link.localRegion.capacity else {
            reject(link.control, .outOfResources)
            throw VMSockError(code: ENOBUFS, "parked link has a \(link.localRegion.capacity)-byte ring, the listener now makes \(capacity)")
        }
        link.resetLocalSide()
        let welcome = HandshakeMessage(kind: .welcome, ringCapacity: UInt32(capacity))
        try ControlSocket.send(link.control.raw, welcome.encoded(), descriptors: [])
        return link.reopened(for: dialed, source: message.source)
    }
}
