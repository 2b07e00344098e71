import CVMSock
import Glibc
import VMSockRing

/// One side's ring region (see `RingLayout`), mapped into this process.
///
/// The data area is mapped twice back to back, so that any slice of up to `capacity` bytes starting inside the
/// first copy is contiguous in memory:
/// ```
///  base                base+4096            base+4096+cap           base+4096+2*cap
///  | header (4 KiB)    | data (file 4096..)  | data again (same pages) |
/// ```
/// Our own region is mapped read-write and sealed before the peer sees it; the peer's is mapped read-only.
final class SharedRegion: @unchecked Sendable {  // immutable once made; the mapping is released in deinit
    let base: UnsafeMutableRawPointer
    let capacity: Int
    private let mappedLength: Int
    /// Our own ring's share of the memory cgroup's limit (`MemoryBudget`), given back with the region.
    private var charge: MemoryCharge? = nil

    var data: UnsafeMutableRawPointer { base + RingLayout.headerSize }

    private init(base: UnsafeMutableRawPointer, capacity: Int) {
        self.base = base
        self.capacity = capacity
        self.mappedLength = RingLayout.headerSize + 2 * capacity
    }

    deinit { Sys.unmap(base, mappedLength) }

    /// Checks a ring size a caller asked for: EINVAL, with the valid range, unless `RingLayout.isValid`.
    static func checkCapacity(_ capacity: Int) throws(VMSockError) {
        guard RingLayout.isValid(capacity: capacity) else {
            throw VMSockError(
                code: EINVAL,
                "ring size \(capacity) is invalid: use a power of two from \(RingLayout.minimumCapacity) to \(RingLayout.maximumCapacity)")
        }
    }

    /// Creates our own region in a new memfd, initialises its header and seals it: it can never grow or shrink,
    /// and nobody can map it writable again (F_SEAL_FUTURE_WRITE), so the peer we pass it to can only read it.
    /// - Returns: the mapping and the memfd to pass to the peer.
    /// - Parameter sealWrites: false leaves out F_SEAL_FUTURE_WRITE and F_SEAL_SEAL, for `sealWrites(_:)` later:
    ///   vmsock-run's listener lets the forked sibling that accepts map the region writable first.
    static func create(capacity: Int, sealWrites: Bool = true) throws(VMSockError) -> (SharedRegion, Descriptor) {
        try checkCapacity(capacity)
        let size = RingLayout.regionSize(capacity: capacity)
        let charge = try MemoryBudget.charge(size)
        let fd = try Sys.memfdCreate("vmsock-ring", flags: VMS_MFD_CLOEXEC | VMS_MFD_ALLOW_SEALING)
        try Sys.truncate(fd.raw, to: size, "ftruncate(memfd, \(size))")
        let region = try map(fd: fd.raw, capacity: capacity, writable: true)
        region.charge = charge
        LocalHeader(base: region.base).initialize(capacity: capacity)
        // The first data page too, where a new link's first write lands: its page is allocated now (made ahead
        // as a spare, off the connection's way) rather than by a fault in that write.
        region.data.storeBytes(of: 0, as: UInt8.self)
        let seals = VMS_F_SEAL_GROW | VMS_F_SEAL_SHRINK | (sealWrites ? VMS_F_SEAL_FUTURE_WRITE | VMS_F_SEAL_SEAL : 0)
        try Sys.addSeals(fd.raw, seals)
        return (region, fd)
    }

    /// The seals `create(capacity:sealWrites: false)` left out: nobody maps the region writable any more.
    static func sealWrites(_ fd: Int32) throws(VMSockError) {
        try Sys.addSeals(fd, VMS_F_SEAL_FUTURE_WRITE | VMS_F_SEAL_SEAL)
    }

    /// Maps the peer's region read-only after checking that it is safe to touch: a sealed memfd (it cannot shrink
    /// under us, which would turn our reads into SIGBUS) of exactly the announced size, with a valid header.
    static func attachPeer(fd: Int32, capacity: Int) throws(VMSockError) -> SharedRegion {
        guard RingLayout.isValid(capacity: capacity) else {
            throw .protocolFault("peer announced ring size \(capacity), which is not a power of two in 4 KiB...64 MiB")
        }
        guard let seals = try? Sys.seals(fd) else {
            throw .protocolFault("peer's ring memory is not a memfd (F_GET_SEALS failed)")
        }
        let required = VMS_F_SEAL_GROW | VMS_F_SEAL_SHRINK
        guard seals & required == required else {
            throw .protocolFault("peer's ring memory is not sealed against resizing (seals 0x\(String(seals, radix: 16)))")
        }
        let info = try Sys.fileStatus(fd, "fstat(peer memfd)")
        let expected = RingLayout.regionSize(capacity: capacity)
        guard (info.st_mode & S_IFMT) == S_IFREG, Int(info.st_size) == expected else {
            throw .protocolFault("peer's ring memory has size \(info.st_size), expected \(expected)")
        }
        let region = try map(fd: fd, capacity: capacity, writable: false)
        do throws(RingViolation) {
            try PeerHeader(base: region.base).validate(expectedCapacity: capacity)
        } catch {
            throw .protocolFault(error)
        }
        return region
    }

    /// One half of a connection inside vmsockd's region (`IvshmemArena`): the ring header and data at `offset` of the
    /// region's memfd, mapped as a region of our own is (data twice), read-write for our half and read-only for the
    /// peer's. The memfd was checked at join (sealed against resizing, its size known), and `offset` comes from the
    /// arena's geometry, so the span lies inside it. Its header is not initialized here.
    ///
    /// `fd` may also be a guest's PCI resource file or vfio device (`IvshmemDevice`), which refuse a mapping that
    /// reaches past the BAR: so the span is reserved anonymously first, and both views replace parts of it.
    static func mapIvshmemHalf(fd: Int32, offset: Int, capacity: Int, writable: Bool) throws(VMSockError) -> SharedRegion {
        try map(fd: fd, capacity: capacity, writable: writable, offset: offset, reserveFirst: true)
    }

    /// Maps the file's header and data, then the data again over the span's tail, so that every slice of up to
    /// `capacity` bytes is contiguous. A memfd is mapped for the whole span at once (the part past its end is never
    /// touched before the second view replaces it): two system calls. `reserveFirst` reserves the span
    /// anonymously first, so that every mapping stays inside the file: a PCI resource or vfio device refuses one
    /// that reaches past its BAR.
    private static func map(
        fd: Int32, capacity: Int, writable: Bool, offset: Int = 0, reserveFirst: Bool = false
    ) throws(VMSockError) -> SharedRegion {
        let header = RingLayout.headerSize
        let total = header + 2 * capacity
        let protection = writable ? PROT_READ | PROT_WRITE : PROT_READ
        let base = reserveFirst
            ? try Sys.map(
                at: nil, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, offset: 0, "mmap(ring span, \(total) bytes)")
            : try Sys.map(at: nil, total, protection, MAP_SHARED, fd, offset: offset, "mmap(ring memory, \(total) bytes)")
        do throws(VMSockError) {
            if reserveFirst {
                _ = try Sys.map(
                    at: base, header + capacity, protection, MAP_SHARED | MAP_FIXED, fd, offset: offset, "mmap(ring memory)")
            }
            _ = try Sys.map(
                at: base + header + capacity, capacity, protection, MAP_SHARED | MAP_FIXED, fd, offset: offset + header,
                "mmap(ring memory, second view)")
        } catch {
            Sys.unmap(base, total)
            throw error
        }
        return SharedRegion(base: base, capacity: capacity)
    }
}
