// Compiled into the fuzz targets that pass descriptors (tools/fuzz.sh): what a hostile peer could hand us.
import CVMSock
import Glibc
import VMSockRing

/// Descriptors of the kinds a peer could pass instead of (or as) the ones the protocol wants, made from fuzz
/// input. The fuzz process owns every one it makes and closes them all with `closeAll`; the library under test
/// receives its own copies through SCM_RIGHTS, so a leak on its side shows in `OpenDescriptors`.
struct PeerDescriptors {
    private(set) var made: [Int32] = []

    /// A descriptor of the kind the next byte picks. `ringCapacity` is what the message announced, so that a
    /// well-formed ring memfd can match it; `ivshmemRegion` makes kind 0 a vmsockd region instead of a ring.
    mutating func make(_ input: inout FuzzInput, ringCapacity: Int, ivshmemRegion: Bool = false) -> Int32 {
        let kind = input.byte() % 9
        switch kind {
        case 0: return ivshmemRegion ? region(&input) : ring(&input, announced: ringCapacity)
        case 1: return keep(eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK)))
        case 2:  // a doorbell as the protocol wants it: the ringing end of a Unix stream socketpair
            return socketPair(Int32(SOCK_STREAM.rawValue))
        case 3: return socketPair(Int32(SOCK_SEQPACKET.rawValue))
        case 4, 5:
            var ends: [Int32] = [-1, -1]
            guard pipe(&ends) == 0 else { return keep(-1) }
            _ = keep(ends[0])
            _ = keep(ends[1])
            return ends[kind == 4 ? 0 : 1]
        case 6: return keep(open("/dev/null", O_RDWR | O_CLOEXEC))
        case 7:  // a memfd nobody sealed, or one that cannot be sealed, of a ring's size
            let flags = input.bool() ? VMS_MFD_CLOEXEC : VMS_MFD_CLOEXEC | VMS_MFD_ALLOW_SEALING
            let fd = keep(vms_memfd_create("fuzz-unsealed", flags))
            _ = ftruncate(fd, off_t(RingLayout.regionSize(capacity: max(ringCapacity, 0) & 0xFF_FFFF)))
            return fd
        default:  // a regular file on tmpfs or disk: F_GET_SEALS works on some, says "no seals" on others
            var template = Array("/tmp/vmsock-fuzz-XXXXXX".utf8CString)
            let fd = keep(mkstemp(&template))
            if fd >= 0 { unlink(template) }
            _ = ftruncate(fd, off_t(RingLayout.regionSize(capacity: RingLayout.minimumCapacity)))
            return fd
        }
    }

    /// A ring memfd: its size, its seals and its header from the input, starting from a well-formed one.
    private mutating func ring(_ input: inout FuzzInput, announced: Int) -> Int32 {
        let capacity = input.pick([announced, announced, announced, RingLayout.minimumCapacity, 2 * announced, 1 << 13])
        let sizeDelta = input.pick([0, 0, 0, 0, -1, 1, -4096, 4096, -RingLayout.headerSize - capacity])
        let size = max(0, RingLayout.regionSize(capacity: max(0, capacity) & 0xFF_FFFF) + sizeDelta)
        let seals = Int32(input.byte()) & (VMS_F_SEAL_SEAL | VMS_F_SEAL_SHRINK | VMS_F_SEAL_GROW | VMS_F_SEAL_WRITE
            | VMS_F_SEAL_FUTURE_WRITE)
        let patches = Int(input.byte() % 4)
        let fd = keep(vms_memfd_create("fuzz-ring", VMS_MFD_CLOEXEC | VMS_MFD_ALLOW_SEALING))
        guard fd >= 0, ftruncate(fd, off_t(size)) == 0 else { return fd }
        if size >= RingLayout.headerSize, let base = mapped(fd, RingLayout.headerSize) {
            LocalHeader(base: base).initialize(capacity: capacity)
            for _ in 0..<patches {
                let offset = Int(input.byte()) % 32  // the fixed fields a peer writes once
                base.storeBytes(of: input.byte(), toByteOffset: offset, as: UInt8.self)
            }
            munmap(base, RingLayout.headerSize)
        }
        _ = fcntl(fd, VMS_F_ADD_SEALS, seals)
        return fd
    }

    /// A vmsockd region memfd: size, seals, vectors, live slots and header patches from the input.
    private mutating func region(_ input: inout FuzzInput) -> Int32 {
        let size = input.pick([64 << 10, 64 << 10, 64 << 10, 128 << 10, 1 << 20, 32 << 10, (64 << 10) + 4096, 0])
        let seals = input.bool() ? VMS_F_SEAL_GROW | VMS_F_SEAL_SHRINK : Int32(input.byte() & 0x1F)
        let vectors = Int(input.pick([1, 1, 2, 3, 0, 65] as [UInt8]))
        let live = input.byte()  // bit i: slot i is live, with epoch i + 1
        let patches = Int(input.byte() % 4)
        let fd = keep(vms_memfd_create("fuzz-region", VMS_MFD_CLOEXEC | VMS_MFD_ALLOW_SEALING))
        guard fd >= 0, ftruncate(fd, off_t(size)) == 0 else { return fd }
        let geometry = IvshmemLayout.Geometry(regionSize: size) ?? IvshmemLayout.Geometry(regionSize: 64 << 10)!
        let mappedSize = min(size, geometry.arenaOffset)
        if mappedSize >= IvshmemLayout.headerSize, let base = mapped(fd, mappedSize) {
            let writer = IvshmemHeaderWriter(base: base, geometry: geometry)
            writer.initialize(vectors: vectors, instance: 42, daemonPID: 1)
            for id in 0..<8 where live & (1 << id) != 0 && id < geometry.peerSlots {
                writer.markJoined(id: id, epoch: UInt64(id + 1), pid: 1, uid: 0, gid: 0)
            }
            for _ in 0..<patches {
                let offset = Int(input.byte()) % 96  // the header's fields
                base.storeBytes(of: input.byte(), toByteOffset: offset, as: UInt8.self)
            }
            munmap(base, mappedSize)
        }
        _ = fcntl(fd, VMS_F_ADD_SEALS, seals)
        return fd
    }

    private func mapped(_ fd: Int32, _ length: Int) -> UnsafeMutableRawPointer? {
        let base = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        return base == MAP_FAILED ? nil : base
    }

    private mutating func socketPair(_ type: Int32) -> Int32 {
        var ends: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, type | Int32(SOCK_CLOEXEC.rawValue), 0, &ends) == 0 else { return keep(-1) }
        _ = keep(ends[1])
        return keep(ends[0])
    }

    private mutating func keep(_ fd: Int32) -> Int32 {
        if fd >= 0 { made.append(fd) }
        return fd
    }

    mutating func closeAll() {
        for fd in made { close(fd) }
        made = []
    }
}

/// How many descriptors this process has open (entries of /proc/self/fd): a run must end with as many as it
/// started with, or the library leaked one it received or made.
func openDescriptors() -> Int {
    guard let dir = opendir("/proc/self/fd") else { return -1 }
    defer { closedir(dir) }
    var count = 0
    while readdir(dir) != nil { count += 1 }
    return count
}
