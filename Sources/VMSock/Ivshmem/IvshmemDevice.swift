import CVMSock
import Glibc
import VMSockRing

/// This process as a peer of vmsockd's region from inside a QEMU guest, through the `ivshmem-doorbell` PCI device
/// (vendor 0x1af4, device 0x1110) that QEMU made on vmsockd's socket. The guest's side of `IvshmemAttachment`:
///
/// - The region is BAR2; our id is the IVPosition register (BAR0 + 8); ringing peer p's vector v is a write of
///   `p << 16 | v` to the Doorbell register (BAR0 + 12), which QEMU turns into a write to p's eventfd.
/// - Who is in the region comes from its slot table alone (vmsockd marks a slot live with a new epoch at each
///   join and clears it at the leave); a guest gets no join or leave messages, so `readLeaves` has nothing to say.
/// - Receiving rings: the device raises MSI-X interrupts only. A device bound to vfio-pci (the guest needs an
///   IOMMU: QEMU's `-device intel-iommu` and `intel_iommu=on`) has each vector routed to an eventfd of ours
///   (`IvshmemMode.vfio`). Any other device is used through its sysfs resource files, which need no driver but
///   give no interrupts: the node then polls the region (`IvshmemMode.polling`).
///
/// Opening the device needs root (sysfs resource files and /dev/vfio). It is never bound or unbound here: binding
/// to vfio-pci is the administrator's choice (see README, "vmsock between your VMs").
final class IvshmemDevice: IvshmemAttachment, @unchecked Sendable {  // immutable after init; deinit releases all
    /// The PCI address, such as 0000:00:03.0.
    let address: String
    let id: Int
    let epoch: UInt64
    let region: IvshmemRegion
    let memoryOffset: Int
    let mode: IvshmemMode
    let interrupts: [Int32]
    var news: Int32? { nil }
    var sharesItsID: Bool { true }
    var memoryFD: Int32 { memoryFile.raw }

    /// BAR0, mapped (one page): the registers.
    private let registers: UnsafeMutableRawPointer
    private let memoryFile: Descriptor
    private let registerFile: Descriptor?
    private let vectorEvents: [Descriptor]
    private var vfio: vms_vfio

    static let vendor = "0x1af4"
    static let device = "0x1110"
    static let devicesDirectory = "/sys/bus/pci/devices"

    private enum Register {
        static let ivPosition = 8
        static let doorbell = 12
    }

    private init(
        address: String, id: Int, epoch: UInt64, region: IvshmemRegion, memoryFile: Descriptor, memoryOffset: Int,
        registers: UnsafeMutableRawPointer, registerFile: Descriptor?, vectorEvents: [Descriptor], vfio: vms_vfio
    ) {
        self.address = address
        self.id = id
        self.epoch = epoch
        self.region = region
        self.memoryFile = memoryFile
        self.memoryOffset = memoryOffset
        self.registers = registers
        self.registerFile = registerFile
        self.vectorEvents = vectorEvents
        self.vfio = vfio
        mode = vfio.device >= 0 ? .vfio : .polling
        interrupts = vectorEvents.map(\.raw)
    }

    deinit {
        Sys.unmap(registers, Int(getpagesize()))
        Sys.vfioClose(&vfio)
    }

    /// The ivshmem devices of this machine (their PCI addresses), in address order.
    static func all() -> [String] {
        Sys.directoryNames(devicesDirectory).filter { name in
            Sys.readAttribute("\(devicesDirectory)/\(name)/vendor") == vendor
                && Sys.readAttribute("\(devicesDirectory)/\(name)/device") == device
        }
    }

    /// Opens the device `spec` names: `pci` for the first ivshmem device that holds a vmsockd region, or
    /// `pci:ADDRESS` for that one.
    /// - Throws: ENODEV when there is none (saying why each one was not used); EACCES/EPERM without root;
    ///   EPROTO for a device that is not on a vmsockd's socket.
    static func open(_ spec: String) throws(VMSockError) -> IvshmemDevice {
        let named = spec.hasPrefix("pci:") ? String(spec.dropFirst(4)) : nil
        let candidates = named.map { [$0] } ?? all()
        guard !candidates.isEmpty else {
            throw VMSockError(code: ENODEV, "no ivshmem PCI device (\(vendor):\(device)) in \(devicesDirectory)")
        }
        var problems: [String] = []
        for address in candidates {
            do throws(VMSockError) {
                return try open(address: address)
            } catch {
                if named != nil { throw error }
                problems.append("\(address): \(error.message)")
            }
        }
        throw VMSockError(code: ENODEV, "no ivshmem PCI device holds a vmsockd region (\(problems.joined(separator: "; ")))")
    }

    /// Opens one device: through vfio when it is bound to vfio-pci, else through its sysfs resource files.
    static func open(address: String) throws(VMSockError) -> IvshmemDevice {
        let directory = "\(devicesDirectory)/\(address)"
        guard Sys.readAttribute("\(directory)/vendor") == vendor, Sys.readAttribute("\(directory)/device") == device else {
            throw VMSockError(code: ENODEV, "\(directory) is no ivshmem device (\(vendor):\(device))")
        }
        let driver = Sys.readLink("\(directory)/driver").map { String($0.split(separator: "/").last ?? "") }
        return driver == "vfio-pci" ? try openVFIO(address) : try openResources(address, directory: directory)
    }

    /// No driver (or one that leaves the BARs alone): BAR0 and BAR2 through `resource0` and `resource2`; no
    /// interrupts.
    private static func openResources(_ address: String, directory: String) throws(VMSockError) -> IvshmemDevice {
        // Memory decoding must be on for the BARs to answer; "1" when it already is changes nothing.
        try Sys.writeSmallFile("\(directory)/enable", "1")
        let registerFile = try Sys.open("\(directory)/resource0", O_RDWR | O_SYNC, "open(\(directory)/resource0)")
        let page = Int(getpagesize())
        let registers = try Sys.map(at: nil, page, PROT_READ | PROT_WRITE, MAP_SHARED, registerFile.raw, offset: 0, "mmap(\(address) BAR0)")
        do throws(VMSockError) {
            let memoryFile = try Sys.open("\(directory)/resource2", O_RDWR, "open(\(directory)/resource2)")
            let size = Int(try Sys.fileStatus(memoryFile.raw, "fstat(\(directory)/resource2)").st_size)
            let (region, _) = try IvshmemRegion.attachDevice(memoryFile.raw, offset: 0, size: size, what: "\(address) BAR2")
            let (id, epoch) = try identify(registers, region: region, address: address)
            return IvshmemDevice(
                address: address, id: id, epoch: epoch, region: region, memoryFile: memoryFile, memoryOffset: 0,
                registers: registers, registerFile: registerFile, vectorEvents: [], vfio: vms_vfio(container: -1, group: -1, device: -1))
        } catch {
            Sys.unmap(registers, page)
            throw error
        }
    }

    /// Bound to vfio-pci: BAR0 and BAR2 through the vfio device, bus mastering on, every MSI-X vector routed to an
    /// eventfd of ours.
    private static func openVFIO(_ address: String) throws(VMSockError) -> IvshmemDevice {
        var vfio = try Sys.vfioOpen(address)
        let page = Int(getpagesize())
        var registers: UnsafeMutableRawPointer? = nil
        do throws(VMSockError) {
            let device = try Sys.duplicate(vfio.device)  // the mapping source; vfio keeps its own
            let bar0 = try Sys.vfioRegion(vfio, 0)
            let bar2 = try Sys.vfioRegion(vfio, 2)
            registers = try Sys.map(at: nil, page, PROT_READ | PROT_WRITE, MAP_SHARED, vfio.device, offset: bar0.offset, "mmap(\(address) BAR0, vfio)")
            let (region, fields) = try IvshmemRegion.attachDevice(device.raw, offset: bar2.offset, size: bar2.size, what: "\(address) BAR2")
            let (id, epoch) = try identify(registers!, region: region, address: address)
            try Sys.vfioEnableBusMaster(vfio)
            let count = min(fields.vectors, try Sys.vfioMSIXVectors(vfio))
            guard count > 0 else { throw VMSockError(code: ENODEV, "\(address) has no MSI-X vector") }
            var events: [Descriptor] = []
            for _ in 0..<count { events.append(try Sys.eventFD(flags: Int32(EFD_NONBLOCK) | Int32(EFD_CLOEXEC))) }
            try Sys.vfioRouteMSIX(vfio, to: events.map(\.raw))
            return IvshmemDevice(
                address: address, id: id, epoch: epoch, region: region, memoryFile: device, memoryOffset: bar2.offset,
                registers: registers!, registerFile: nil, vectorEvents: events, vfio: vfio)
        } catch {
            if let registers { Sys.unmap(registers, page) }
            Sys.vfioClose(&vfio)
            throw error
        }
    }

    /// Our id (IVPosition) and, from our slot, our epoch: the slot must be live, or the device is not (yet) on
    /// vmsockd's socket.
    private static func identify(_ registers: UnsafeMutableRawPointer, region: IvshmemRegion, address: String) throws(VMSockError) -> (Int, UInt64) {
        let position = vms_mmio_read32(registers + Register.ivPosition)
        let id = Int(Int32(bitPattern: position))
        guard id >= 0, id < region.geometry.peerSlots else {
            throw .protocolFault("\(address) says our id is \(id), outside the region's \(region.geometry.peerSlots) peer slots")
        }
        let own = IvshmemHeader(base: region.base).liveness(of: id, in: region.geometry)
        guard own.live, own.epoch > 0 else {
            throw .protocolFault("\(address): our slot \(id) in vmsockd's region is not marked live")
        }
        return (id, own.epoch)
    }

    // MARK: IvshmemAttachment

    func readLeaves() throws(VMSockError) -> [Int] { [] }

    func bell(for peer: IvshmemArena.Owner, ringer: EventRinger) throws(VMSockError) -> PeerBell? {
        guard peer.id < region.geometry.peerSlots else { return nil }
        let slot = IvshmemHeader(base: region.base).liveness(of: peer.id, in: region.geometry)
        guard slot.live, slot.epoch == peer.epoch else { return nil }
        return PeerBell.deviceRegister(registers + Register.doorbell, value: UInt32(peer.id) << 16, owner: self)
    }
}
