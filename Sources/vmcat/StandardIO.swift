import Glibc

/// The syscalls vmcat makes on stdin and stdout, one small function each. stdin and stdout keep the blocking mode
/// they came with (a terminal or a pipe is shared with the shell; OpenBSD nc leaves them alone too): stdin is read
/// once per readiness callback, which never blocks, and stdout is written blocking, as nc does.
enum StandardIO {
    /// Whether epoll can watch `fd`. Regular files, block devices and character devices that are not terminals
    /// (/dev/null, /dev/zero) cannot: epoll_ctl fails with EPERM. They never make a read wait, so vmcat reads them
    /// directly instead of watching them. nil: the descriptor is not open.
    static func isPollable(_ fd: Int32) -> Bool? {
        var status = stat()
        guard fstat(fd, &status) == 0 else { return nil }
        switch status.st_mode & S_IFMT {
        case S_IFREG, S_IFBLK, S_IFDIR: return false
        case S_IFCHR: return isatty(fd) == 1
        default: return true  // pipes, sockets
        }
    }

    /// Grows a pipe on `fd` to 1 MiB (the unprivileged maximum): a 64 KiB pipe makes a bulk transfer cost one loop
    /// round and one read per 64 KiB, which halves the rate. Anything else, or a refusal, is left as it is.
    static func growPipe(_ fd: Int32) {
        var status = stat()
        guard fstat(fd, &status) == 0, status.st_mode & S_IFMT == S_IFIFO else { return }
        let setPipeSize: Int32 = 1031  // F_SETPIPE_SZ (F_LINUX_SPECIFIC_BASE + 7); Glibc does not export it to Swift
        _ = fcntl(fd, setPipeSize, Int32(1 << 20))
    }

    /// One read(2), retried after EINTR: the count, 0 at end of file. EAGAIN (a descriptor someone made
    /// non-blocking) comes back as nil.
    static func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> Int? {
        while true {
            let n = Glibc.read(fd, buffer.baseAddress, buffer.count)
            if n >= 0 { return n }
            switch errno {
            case EINTR: continue
            case EAGAIN: return nil
            default: throw SystemError(what: "read from stdin", code: errno)
            }
        }
    }

    /// Writes every byte. A non-blocking descriptor that is full is waited on with poll(POLLOUT).
    static func writeAll(_ fd: Int32, _ buffer: UnsafeRawBufferPointer) throws(SystemError) {
        var done = 0
        while done < buffer.count {
            let n = Glibc.write(fd, buffer.baseAddress! + done, buffer.count - done)
            if n >= 0 {
                done += n
                continue
            }
            switch errno {
            case EINTR: continue
            case EAGAIN:
                var entry = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                _ = poll(&entry, 1, -1)
            default: throw SystemError(what: "write to stdout", code: errno)
            }
        }
    }

    /// Prints one line on stderr: "vmcat: message" for errors, the bare text for -v reports.
    static func report(_ line: String) {
        let bytes = Array((line + "\n").utf8)
        _ = bytes.withUnsafeBytes { Glibc.write(2, $0.baseAddress, $0.count) }
    }
}

/// A failed call on stdin or stdout.
struct SystemError: Error {
    let what: String
    let code: Int32

    var description: String { "\(what): \(String(cString: strerror(code)))" }
}
