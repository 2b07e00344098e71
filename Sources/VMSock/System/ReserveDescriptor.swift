import CVMSock
import Glibc
import Synchronization

/// One descriptor held in reserve, so that a process with no other left (EMFILE, ENFILE) can still take a
/// connection in order to refuse it, as libuv and nginx do: `withOneFree` closes it for its body, then makes it
/// again. Without one, a connection that cannot be accepted stays in the backlog, where a level-triggered wait
/// reports it again at once, for as long as the process is out. The reserve is an empty memfd of its own, checked
/// by device and inode before it is closed: a program that closed every descriptor and reused the number keeps
/// its file. `note` and `forget` list it among the library's own descriptors (a forked child closes those).
final class ReserveDescriptor: Sendable {
    private struct Held {
        let fd: Int32
        let device: UInt64
        let inode: UInt64
    }

    private let held = Mutex<Held?>(nil)
    private let note: @Sendable (Int32) -> Void
    private let forget: @Sendable (Int32) -> Void

    init(note: @escaping @Sendable (Int32) -> Void, forget: @escaping @Sendable (Int32) -> Void) {
        self.note = note
        self.forget = forget
        refill()
    }

    /// Makes the reserve if there is none (it could not be made, or another descriptor took its place when it
    /// was free): called where descriptors may be back.
    func refill() {
        held.withLock { held in
            if held == nil { held = make() }
        }
    }

    /// Runs `body` with the reserve's descriptor free, then makes the reserve again; nil, without running `body`,
    /// when there is no reserve (it could not be made, or the program took its number: `refill` tries again).
    func withOneFree<R>(_ body: () -> R) -> R? {
        held.withLock { held -> R? in
            guard let reserve = held else { return nil }
            held = nil
            forget(reserve.fd)
            guard let status = try? Sys.fileStatus(reserve.fd, "fstat(reserve)"),
                UInt64(status.st_dev) == reserve.device, UInt64(status.st_ino) == reserve.inode
            else { return nil }  // not ours any more: left alone
            Sys.close(reserve.fd)
            defer { held = make() }
            return body()
        }
    }

    private func make() -> Held? {
        guard let made = try? Sys.memfdCreate("vmsock-reserve", flags: VMS_MFD_CLOEXEC),
            let status = try? Sys.fileStatus(made.raw, "fstat(reserve)")
        else { return nil }
        let fd = made.release()
        note(fd)
        return Held(fd: fd, device: UInt64(status.st_dev), inode: UInt64(status.st_ino))
    }
}
