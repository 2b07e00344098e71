import CVMSock
import Glibc
import VMPerfSupport

/// Owns the mapping of the shared page (and, in the parent, the memfd until the peer has inherited it).
///
/// A memfd has no name in any file system: nothing is left in /dev/shm or elsewhere, whatever happens, once the
/// two processes are gone.
final class PageMapping {
    let page: PaperPage
    private var descriptor: Int32

    private init(descriptor: Int32, base: UnsafeMutableRawPointer) {
        self.descriptor = descriptor
        page = PaperPage(base: base)
    }

    deinit {
        closeDescriptor()
        munmap(page.base, PaperLayout.size)
    }

    /// The parent's side: a new zeroed page. The memfd is made without close-on-exec, so that the peer started
    /// next inherits it under the same number; the parent closes its copy once the peer runs.
    static func create() throws -> PageMapping {
        let fd = vms_memfd_create("vmperf-paper", 0)
        guard fd >= 0 else { throw Failure("--paper: memfd_create failed: \(String(cString: strerror(errno)))") }
        guard ftruncate(fd, off_t(PaperLayout.size)) == 0 else {
            let code = errno
            _ = close(fd)
            throw Failure("--paper: sizing the shared page failed: \(String(cString: strerror(code)))")
        }
        return try map(fd)
    }

    /// The peer's side: the page the parent made, inherited as descriptor `fd`.
    static func attach(_ fd: Int32) throws -> PageMapping {
        var info = stat()
        guard fstat(fd, &info) == 0, info.st_size == PaperLayout.size else {
            throw Failure("--paper-peer: descriptor \(fd) is not the parent's shared page")
        }
        let mapping = try map(fd)
        mapping.closeDescriptor()
        guard mapping.page.magic == PaperLayout.magic, mapping.page.version == PaperLayout.version else {
            throw Failure("--paper-peer: the shared page has the wrong magic or version (a different vmperf build?)")
        }
        return mapping
    }

    var fd: Int32 { descriptor }

    func closeDescriptor() {
        if descriptor >= 0 { _ = close(descriptor) }  // never retried after EINTR: the descriptor is gone either way
        descriptor = -1
    }

    private static func map(_ fd: Int32) throws -> PageMapping {
        let base = mmap(nil, PaperLayout.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        guard let base, base != UnsafeMutableRawPointer(bitPattern: -1) else {
            let code = errno
            _ = close(fd)
            throw Failure("--paper: mapping the shared page failed: \(String(cString: strerror(code)))")
        }
        return PageMapping(descriptor: fd, base: base)
    }
}
