import CVMSock
import Glibc

// Devices: sysfs files and directories, and VFIO (through CVMSock's vfio.c), for a guest's ivshmem-doorbell
// device (`IvshmemDevice`). See `Sys` in Syscalls.swift for the rules every call here follows.

extension Sys {
    /// open(2), close-on-exec: a descriptor we own.
    static func open(_ path: String, _ flags: Int32, _ what: @autoclosure () -> String) throws(VMSockError) -> Descriptor {
        Descriptor(try check(what()) { Glibc.open(path, flags | O_CLOEXEC) })
    }

    /// open(2), write(2) and close(2): writes `text` to a sysfs attribute (one write, as sysfs wants it).
    static func writeSmallFile(_ path: String, _ text: String) throws(VMSockError) {
        let fd = try open(path, O_WRONLY, "open(\(path))")
        let bytes = Array(text.utf8)
        let written = bytes.withUnsafeBytes { buffer in retryingEINTR { Glibc.write(fd.raw, buffer.baseAddress, buffer.count) } }
        guard written == bytes.count else { throw .system("write(\(path))") }
    }

    /// A small sysfs attribute as text, without the trailing newline; nil when it cannot be read.
    static func readAttribute(_ path: String) -> String? {
        guard let bytes = readSmallFile(path, limit: 256) else { return nil }
        var text = String(decoding: bytes, as: UTF8.self)
        while text.last == "\n" { text.removeLast() }
        return text
    }

    /// readlink(2): where a symbolic link points, or nil (no link there).
    static func readLink(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX))
        let n = readlink(path, &buffer, buffer.count - 1)
        guard n > 0 else { return nil }
        return buffer.withUnsafeBufferPointer { String(decoding: UnsafeRawBufferPointer($0).prefix(n), as: UTF8.self) }
    }

    /// opendir(3)/readdir(3): the names in a directory, "." and ".." left out, sorted; empty when it cannot be read.
    static func directoryNames(_ path: String) -> [String] {
        guard let directory = opendir(path) else { return [] }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    // MARK: VFIO

    /// Opens the vfio-pci device `address` (a PCI address such as 0000:00:03.0) through its IOMMU group.
    static func vfioOpen(_ address: String) throws(VMSockError) -> vms_vfio {
        var vfio = vms_vfio()
        try check("open vfio device \(address) (container, group, VFIO_GROUP_GET_DEVICE_FD)") { vms_vfio_open(address, &vfio) }
        return vfio
    }

    /// VFIO_DEVICE_GET_REGION_INFO: the offset of region `index` in the device descriptor, and its size.
    static func vfioRegion(_ vfio: vms_vfio, _ index: UInt32) throws(VMSockError) -> (offset: Int, size: Int) {
        var offset: UInt64 = 0
        var size: UInt64 = 0
        _ = try withUnsafePointer(to: vfio) { (pointer) throws(VMSockError) in
            try check("VFIO_DEVICE_GET_REGION_INFO(\(index))") { vms_vfio_region(pointer, index, &offset, &size) }
        }
        return (Int(offset), Int(size))
    }

    /// Sets Bus Master (PCI command register, through the device's config region).
    static func vfioEnableBusMaster(_ vfio: vms_vfio) throws(VMSockError) {
        _ = try withUnsafePointer(to: vfio) { (pointer) throws(VMSockError) in
            try check("enable bus mastering (vfio config region)") { vms_vfio_enable_bus_master(pointer) }
        }
    }

    /// VFIO_DEVICE_GET_IRQ_INFO for MSI-X: how many vectors the device has.
    static func vfioMSIXVectors(_ vfio: vms_vfio) throws(VMSockError) -> Int {
        try withUnsafePointer(to: vfio) { (pointer) throws(VMSockError) in
            Int(try check("VFIO_DEVICE_GET_IRQ_INFO(MSI-X)") { vms_vfio_msix_vectors(pointer) })
        }
    }

    /// VFIO_DEVICE_SET_IRQS: MSI-X vector i signals `eventFDs[i]`.
    static func vfioRouteMSIX(_ vfio: vms_vfio, to eventFDs: [Int32]) throws(VMSockError) {
        _ = try withUnsafePointer(to: vfio) { (pointer) throws(VMSockError) in
            try check("VFIO_DEVICE_SET_IRQS(MSI-X, \(eventFDs.count) eventfds)") {
                vms_vfio_route_msix(pointer, eventFDs, UInt32(eventFDs.count))
            }
        }
    }

    /// Closes what `vfioOpen` opened.
    static func vfioClose(_ vfio: inout vms_vfio) { vms_vfio_close(&vfio) }
}
