import Foundation
import Glibc
import VMSock

/// `ivshmem-echo PATH`: a vmsockd client in a process of its own, for the tests that kill one (and the QEMU
/// interop test, which watches QEMU join and leave through it).
///
/// It joins, writes its id + 1 into the region's arena at byte `id` (so the test sees the same memory from
/// another process), prints `id N vectors V slots S`, then `ready`. From then on it prints `joined N` and
/// `left N` as peers come and go, and answers every ring on one of its vectors by ringing that vector of every
/// peer it knows (`rung V`). It runs until killed, or until vmsockd goes (`vmsockd gone`, exit 0).
enum IvshmemEcho {
    static func run(path: String) throws {
        let client = try IvshmemClient.connect(path: path)
        let arena = client.region.base + client.region.geometry.arenaOffset
        arena.storeBytes(of: UInt8(truncatingIfNeeded: client.id + 1), toByteOffset: client.id, as: UInt8.self)
        say("id \(client.id) vectors \(client.vectors) slots \(client.region.geometry.peerSlots)")
        for peer in client.peers.keys.sorted() { say("joined \(peer)") }
        say("ready")
        var fds = [pollfd(fd: client.descriptor, events: Int16(POLLIN), revents: 0)]
        for vector in 0..<client.vectors {
            fds.append(pollfd(fd: client.descriptor(ofVector: vector), events: Int16(POLLIN), revents: 0))
        }
        while true {
            guard poll(&fds, nfds_t(fds.count), -1) > 0 else { continue }
            if fds[0].revents != 0 { try report(client) }
            for vector in 0..<client.vectors where fds[vector + 1].revents != 0 {
                guard client.drain(vector: vector) > 0 else { continue }
                for peer in client.peers.keys { try client.ring(peer: peer, vector: vector) }
                say("rung \(vector)")
            }
        }
    }

    /// Prints what changed; exits once vmsockd is gone.
    private static func report(_ client: IvshmemClient) throws(VMSockError) {
        let events: [IvshmemClient.Event]
        do throws(VMSockError) {
            events = try client.update()
        } catch {
            guard error.code == ECONNRESET else { throw error }
            say("vmsockd gone")
            exit(0)
        }
        for event in events {
            switch event {
            case .joined(let peer): say("joined \(peer)")
            case .left(let peer): say("left \(peer)")
            }
        }
    }

    private static func say(_ line: String) {
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }
}
