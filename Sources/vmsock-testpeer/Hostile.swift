import CVMSock
import Foundation
@_spi(Testing) import VMSock
import VMSockRing

/// A peer that breaks the rules, to show that the other side tears the connection down cleanly (EPROTO) and
/// neither crashes, reads out of bounds, nor hangs.
enum Hostile {
    /// Connects properly, then corrupts the words of its own region (the only memory it can write) or chatters on
    /// the control socket. Stays alive afterwards, so that the victim cannot mistake the attack for a death.
    ///
    /// HOW: producer-ahead | producer-backwards | consumer-ahead | garbage-flags | unknown-flag | control-chatter |
    ///      control-empty | stuck-bells
    static func connectAndMisbehave(port: UInt16, how: String) throws {
        let socket = try VMSocket.connect(host: "127.0.0.1", port: port, options: VMSocketOptions(transport: .shm))
        let base = socket._localRegionBase
        func store(_ value: UInt64, at offset: Int) {
            vms_store_seqcst_u64((base + offset).assumingMemoryBound(to: UInt64.self), value)
        }
        switch how {
        case "producer-ahead":
            store(UInt64(socket.ringSize) + 4096, at: 128)  // more than a whole ring ahead of the reader
        case "producer-backwards":
            try socket.writeAll([UInt8](repeating: 1, count: 100))
            let victimConsumed = (socket._peerRegionBase + 256).assumingMemoryBound(to: UInt64.self)
            while vms_load_acquire_u64(victimConsumed) < 100 { usleep(1000) }  // the victim has seen 100
            store(10, at: 128)
            socket._ringPeerDataBell()  // make the victim look
        case "consumer-ahead":
            store(1 << 40, at: 256)  // claims to have consumed bytes the victim never wrote
        case "garbage-flags":
            vms_store_seqcst_u64((base + 384).assumingMemoryBound(to: UInt64.self), 0xdead_beef_dead_beef)
            vms_store_seqcst_u64((base + 512).assumingMemoryBound(to: UInt64.self), 0xdead_beef_dead_beef)
            vms_store_seqcst_u32((base + 640).assumingMemoryBound(to: UInt32.self), 0xff)  // every bit, generation 0
        case "unknown-flag":
            vms_store_seqcst_u32((base + 640).assumingMemoryBound(to: UInt32.self), 0x80)  // no bit we define (retired is 0x10)
        case "foreign-generation":
            // Every bit, of a generation this connection is not (its link's first is 0): they are not its bits.
            vms_store_seqcst_u32((base + 640).assumingMemoryBound(to: UInt32.self), 0xffff_ffff)
        case "control-chatter":
            var byte: UInt8 = 0x42
            _ = send(socket._controlDescriptor, &byte, 1, Int32(MSG_NOSIGNAL))
        case "control-empty":
            _ = send(socket._controlDescriptor, nil, 0, Int32(MSG_NOSIGNAL))  // a zero-length SEQPACKET message
        case "stuck-bells":
            // Make every socket we hold blocking (that includes the victim's bells: the flag lives in the shared
            // file description), claim to sleep in both directions, and never drain or consume anything.
            for fd in Int32(3)..<Int32(1024) where fcntl(fd, F_GETFL) >= 0 {
                _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
            }
            vms_store_seqcst_u64((base + 384).assumingMemoryBound(to: UInt64.self), 1)
            vms_store_seqcst_u64((base + 512).assumingMemoryBound(to: UInt64.self), 1)
        default:
            fail("unknown misbehaviour \(how)")
        }
        ready("done")
        withExtendedLifetime(socket) { while true { pause() } }
    }

    /// Registers for 127.0.0.1:PORT with a bare control socket and answers the first hello wrongly.
    ///
    /// HOW: garbage | short | no-fds | extra-fds | unsealed-memfd | wrong-size | pipe-bell | wrong-version |
    ///      hang-up | silent | reject
    static func answerWrongly(port: UInt16, how: String) throws {
        let listener = try RawControl.listen(IPEndpoint(numericHost: "127.0.0.1", port: port)!)
        ready()
        let fd = accept(listener, nil, nil)
        guard fd >= 0 else { fail("accept failed") }
        let hello = try RawControl.receive(fd, timeoutMs: 5000)
        hello.descriptors.forEach { close($0) }
        let capacity = 64 << 10
        let welcome = HandshakeMessage(kind: .welcome, ringCapacity: UInt32(capacity)).encoded()
        let goodFDs = { () throws -> [Int32] in
            [try RawControl.makeRegion(capacity: capacity), RawControl.makeBell(), RawControl.makeBell()]
        }
        switch how {
        case "garbage":
            try RawControl.send(fd, [UInt8](repeating: 0xAB, count: 32), descriptors: try goodFDs())
        case "short":
            try RawControl.send(fd, Array(welcome.prefix(7)), descriptors: try goodFDs())
        case "no-fds":
            try RawControl.send(fd, welcome, descriptors: [])
        case "extra-fds":
            try RawControl.send(fd, welcome, descriptors: try goodFDs() + [RawControl.makeBell()])
        case "unsealed-memfd":
            let memfd = vms_memfd_create("not-sealed", VMS_MFD_CLOEXEC)
            ftruncate(memfd, off_t(RingLayout.regionSize(capacity: capacity)))
            try RawControl.send(fd, welcome, descriptors: [memfd, RawControl.makeBell(), RawControl.makeBell()])
        case "wrong-size":
            let other = HandshakeMessage(kind: .welcome, ringCapacity: UInt32(capacity * 2)).encoded()
            try RawControl.send(fd, other, descriptors: try goodFDs())
        case "pipe-bell":
            var ends: [Int32] = [0, 0]
            pipe(&ends)
            try RawControl.send(fd, welcome, descriptors: [try RawControl.makeRegion(capacity: capacity), ends[1], RawControl.makeBell()])
        case "wrong-version":
            let other = HandshakeMessage(kind: .welcome, ringCapacity: UInt32(capacity), version: 99).encoded()
            try RawControl.send(fd, other, descriptors: try goodFDs())
        case "hang-up":
            close(fd)
        case "silent":
            break
        case "reject":
            let reject = HandshakeMessage(kind: .reject, rejectReason: HandshakeMessage.RejectReason.versionMismatch.rawValue, version: 4)
            try RawControl.send(fd, reject.encoded(), descriptors: [])
        default:
            fail("unknown wrong answer \(how)")
        }
        ready("answered")
        while true { pause() }
    }
}
