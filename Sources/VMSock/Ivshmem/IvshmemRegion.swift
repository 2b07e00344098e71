import CVMSock
import Glibc
import VMSockRing

/// The region vmsockd shares with every ivshmem peer (layout: `IvshmemLayout`), mapped read-write into this
/// process. The daemon creates it; a client attaches the memfd the daemon sent it.
package final class IvshmemRegion: @unchecked Sendable {  // immutable after init; the mapping goes in deinit
    package let base: UnsafeMutableRawPointer
    package let geometry: IvshmemLayout.Geometry

    package var size: Int { geometry.regionSize }

    private init(base: UnsafeMutableRawPointer, geometry: IvshmemLayout.Geometry) {
        self.base = base
        self.geometry = geometry
    }

    deinit { Sys.unmap(base, geometry.regionSize) }

    /// Checks a region size a user asked for: EINVAL, with the rule, unless `IvshmemLayout.isValid(regionSize:)`.
    static func checkSize(_ size: Int) throws(VMSockError) {
        guard IvshmemLayout.isValid(regionSize: size) else {
            throw VMSockError(
                code: EINVAL,
                "region size \(size) is invalid: use a power of two from \(describe(IvshmemLayout.minimumRegionSize)) to \(describe(IvshmemLayout.maximumRegionSize))")
        }
    }

    /// Creates the region in a new memfd of exactly `size` bytes, sealed so that nobody can resize it (a peer
    /// shrinking it would turn every other mapper's access into SIGBUS), maps it, and writes the header.
    /// - Returns: the mapping and the memfd to send to each client.
    static func create(size: Int, vectors: Int) throws(VMSockError) -> (IvshmemRegion, Descriptor) {
        try checkSize(size)
        let geometry = IvshmemLayout.Geometry(regionSize: size)!
        let fd = try Sys.memfdCreate("vmsockd-region", flags: VMS_MFD_CLOEXEC | VMS_MFD_ALLOW_SEALING)
        try Sys.truncate(fd.raw, to: size, "ftruncate(memfd, \(size))")
        try Sys.addSeals(fd.raw, VMS_F_SEAL_GROW | VMS_F_SEAL_SHRINK | VMS_F_SEAL_SEAL)
        let base = try Sys.map(
            at: nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.raw, offset: 0, "mmap(region, \(size) bytes)")
        let region = IvshmemRegion(base: base, geometry: geometry)
        IvshmemHeaderWriter(base: base, geometry: geometry)
            .initialize(vectors: vectors, instance: UInt64.random(in: 1...UInt64.max), daemonPID: UInt32(Sys.processID()))
        return (region, fd)
    }

    /// Maps the memfd vmsockd sent, after checking that it is safe to touch and is a vmsockd region: a memfd sealed
    /// against resizing (it cannot shrink under us) but not against writing, of a valid size, with a header that
    /// matches that size.
    /// - Throws: EPROTO saying what is wrong.
    static func attach(_ fd: Int32) throws(VMSockError) -> (IvshmemRegion, IvshmemHeader.Fields) {
        let info = try Sys.fileStatus(fd, "fstat(region)")
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw .protocolFault("vmsockd's shared memory is not a regular file (\(Sys.describe(fd)))")
        }
        let size = Int(info.st_size)
        guard IvshmemLayout.isValid(regionSize: size) else {
            throw .protocolFault("vmsockd's shared memory has \(size) bytes, not a power of two from 64 KiB to 64 GiB")
        }
        guard let seals = try? Sys.seals(fd) else {
            throw .protocolFault("vmsockd's shared memory is not a memfd (F_GET_SEALS failed)")
        }
        let required = VMS_F_SEAL_GROW | VMS_F_SEAL_SHRINK
        guard seals & required == required else {
            throw .protocolFault("vmsockd's shared memory is not sealed against resizing (seals 0x\(String(seals, radix: 16)))")
        }
        // Every peer writes the region, and we map it writable: memory sealed against writing would fail that
        // mapping with EPERM rather than this check with EPROTO (found by Fuzz/ivshmem-client.swift).
        guard seals & (VMS_F_SEAL_WRITE | VMS_F_SEAL_FUTURE_WRITE) == 0 else {
            throw .protocolFault("vmsockd's shared memory is sealed against writing (seals 0x\(String(seals, radix: 16)))")
        }
        let base = try Sys.map(at: nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, offset: 0, "mmap(region, \(size) bytes)")
        let region = IvshmemRegion(base: base, geometry: IvshmemLayout.Geometry(regionSize: size)!)
        do throws(IvshmemLayoutViolation) {
            return (region, try IvshmemHeader(base: base).validate(regionSize: size))
        } catch {
            throw .protocolFault("vmsockd's shared memory: \(error)")
        }
    }

    /// Maps a guest's view of the region: `size` bytes of `fd` (the PCI resource file of BAR2, or the vfio device)
    /// from `offset`, after checking that the size is one vmsockd makes and that the header says so too. The BAR
    /// cannot change size under us, so there are no seals to check.
    /// - Throws: EPROTO saying what is wrong (most likely: the device is not on a vmsockd's socket).
    static func attachDevice(_ fd: Int32, offset: Int, size: Int, what: String) throws(VMSockError) -> (IvshmemRegion, IvshmemHeader.Fields) {
        guard IvshmemLayout.isValid(regionSize: size) else {
            throw .protocolFault("\(what) has \(size) bytes, not a power of two from 64 KiB to 64 GiB")
        }
        let base = try Sys.map(at: nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, offset: offset, "mmap(\(what), \(size) bytes)")
        let region = IvshmemRegion(base: base, geometry: IvshmemLayout.Geometry(regionSize: size)!)
        do throws(IvshmemLayoutViolation) {
            return (region, try IvshmemHeader(base: base).validate(regionSize: size))
        } catch {
            throw .protocolFault("\(what) is not a vmsockd region: \(error)")
        }
    }

    /// "64 MiB", "4 GiB", "65536 bytes": a size as people write it.
    package static func describe(_ bytes: Int) -> String {
        for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] where bytes >= 1 << shift && bytes & ((1 << shift) - 1) == 0 {
            return "\(bytes >> shift) \(unit)"
        }
        return "\(bytes) bytes"
    }
}
