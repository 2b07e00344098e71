import Glibc
import Synchronization

/// Takes a link whose connection is gone; false when it was not taken (and the link is freed).
typealias LinkParking = @Sendable (EstablishedLink) -> Bool

/// The connector's parked links, per process, by registration.
final class LinkPool: Sendable {
    static let shared = LinkPool()
    /// Parked links a process keeps; parking another frees the oldest.
    static let limit = 4

    private struct Entry {
        let address: ControlAddress
        let link: EstablishedLink
    }

    private let entries = Mutex<[Entry]>([])

    /// What the connector hands a reusable link: parks it under `address` when its connection is gone.
    func parking(for address: ControlAddress) -> LinkParking {
        { [self] link in park(link, under: address) }
    }

    /// Only the link's creator hands it here (`SharedMemoryStream.detachForReuse`).
    private func park(_ link: EstablishedLink, under address: ControlAddress) -> Bool {
        link.markParked()  // before another thread can take it and start its next generation
        let evicted = entries.withLock { entries -> Entry? in
            let oldest = entries.count >= Self.limit ? entries.removeFirst() : nil
            entries.append(Entry(address: address, link: link))
            return oldest
        }
        _ = evicted  // freed here, outside the lock
        return true
    }

    /// A parked link to `address` whose listener side is parked too, of our ring size, whose owner `policy`
    /// still trusts; nil if there is none. The caller owns it: reopened, or freed. Links to `address` whose
    /// listener side retired them are freed on the way (`LinkReuse`), and in a forked child every link the parent
    /// parked.
    func take(_ address: ControlAddress, capacity: Int, policy: PeerPolicy) -> EstablishedLink? {
        let (taken, retired) = entries.withLock { entries -> (EstablishedLink?, [Entry]) in
            // A forked child frees the parent's links it inherited (it never reuses them, and its copies of their
            // control sockets would keep the listener from seeing the parent's exit); the process ID is asked once.
            let me = Sys.processID()
            let gone = { (entry: Entry) in entry.link.creator != me || (entry.address == address && entry.link.peerRetired) }
            let retired = entries.filter(gone)
            entries.removeAll(where: gone)
            guard let index = entries.firstIndex(where: {
                $0.address == address && $0.link.localRegion.capacity == capacity && policy.admits($0.link.peer)
                    && $0.link.peerParked
            }) else { return (nil, retired) }
            return (entries.remove(at: index).link, retired)
        }
        _ = retired  // freed here, outside the lock
        return taken
    }

    /// Frees every parked link, or those parked for `address`.
    func removeAll(for address: ControlAddress? = nil) {
        let dropped = entries.withLock { entries in
            let matching = entries.filter { address == nil || $0.address == address }
            entries.removeAll { address == nil || $0.address == address }
            return matching
        }
        _ = dropped  // freed here, outside the lock
    }

    var count: Int { entries.withLock { $0.count } }
}
