import CVMSock
import Foundation
import Glibc
import VMSock
import VMSockRing

/// Hostile peers of a vmsockd region, for the tests that check that the others fail cleanly, never crash or hang:
///
/// - `ivshmem-scribble PATH SECONDS`: joins, prints `ready`, then writes random bytes over the whole region
///   (header, peer slots, listen table, connection slots, rings) for SECONDS, and exits 0.
/// - `ivshmem-claim-all PATH`: joins, claims every connection slot and every listen entry with its own owner word
///   (as a peer that leaks them would), prints `claimed N`, and sits until killed.
enum IvshmemHostile {
    static func scribble(path: String, seconds: Double) throws {
        let client = try IvshmemClient.connect(path: path)
        say("ready")
        let base = client.region.base
        let size = client.region.size
        var rng = SystemRandomNumberGenerator()
        let end = Date().addingTimeInterval(seconds)
        while Date() < end {
            // Bursts of random words at random places, and now and then a whole random page.
            for _ in 0..<4096 {
                let offset = Int.random(in: 0..<(size / 8), using: &rng) * 8
                base.storeBytes(of: rng.next() as UInt64, toByteOffset: offset, as: UInt64.self)
            }
            let page = Int.random(in: 0..<(size / 4096), using: &rng) * 4096
            for word in stride(from: 0, to: 4096, by: 8) {
                base.storeBytes(of: rng.next() as UInt64, toByteOffset: page + word, as: UInt64.self)
            }
        }
        withExtendedLifetime(client) {}
    }

    static func claimAll(path: String) throws {
        let client = try IvshmemClient.connect(path: path)
        guard let arena = IvshmemArena.Geometry(client.region.geometry) else { fail("region too small") }
        let view = IvshmemArenaView(base: client.region.base, region: client.region.geometry, arena: arena)
        let me = IvshmemArena.Owner(id: client.id, epoch: client.epoch).word
        var claimed = 0
        for slot in 0..<arena.slots where view.cas64(arena.slotOffset(slot) + IvshmemArena.SlotOffset.connector, 0, me) {
            claimed += 1
        }
        for entry in 0..<arena.listenEntries
        where view.cas64(arena.listenEntryOffset(entry) + IvshmemArena.ListenOffset.owner, 0, me) {
            claimed += 1
        }
        say("claimed \(claimed)")
        withExtendedLifetime(client) { while true { pause() } }
    }

    private static func say(_ line: String) { FileHandle.standardOutput.write(Data((line + "\n").utf8)) }
}
