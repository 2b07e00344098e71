// The data path: vmsock_read, vmsock_write, vmsock_readv, vmsock_writev. No lock, no allocation and no ARC traffic
// per call (the handle table's notes say how); over shared memory no system call while data or room is there.
import CVMSockAPI
import Glibc
import VMSock
import VMSockHandles

@_cdecl("vmsock_read")
public func cRead(_ handle: Int32, _ buffer: UnsafeMutableRawPointer?, _ length: Int) -> Int {
    Errno.returning { () throws(VMSockError) in
        try HandleTable.withConnection(handle) { (socket) throws(VMSockError) in
            if buffer == nil && length != 0 { throw nullBuffer }
            // A size_t above SSIZE_MAX arrives negative: read what fits in an Int, as Linux caps a read.
            let count = length < 0 ? Int.max : length
            return try socket.read(into: UnsafeMutableRawBufferPointer(start: buffer, count: count))
        }
    }
}

@_cdecl("vmsock_write")
public func cWrite(_ handle: Int32, _ buffer: UnsafeRawPointer?, _ length: Int) -> Int {
    Errno.returning { () throws(VMSockError) in
        try HandleTable.withConnection(handle) { (socket) throws(VMSockError) in
            if buffer == nil && length != 0 { throw nullBuffer }
            return try socket.write(UnsafeRawBufferPointer(start: buffer, count: length < 0 ? Int.max : length))
        }
    }
}

@_cdecl("vmsock_readv")
public func cReadv(_ handle: Int32, _ vectors: UnsafePointer<iovec>?, _ count: Int32) -> Int {
    Errno.returning { () throws(VMSockError) in
        try HandleTable.withConnection(handle) { (socket) throws(VMSockError) in
            try socket.readv(vectors: checked(vectors, count))
        }
    }
}

@_cdecl("vmsock_writev")
public func cWritev(_ handle: Int32, _ vectors: UnsafePointer<iovec>?, _ count: Int32) -> Int {
    Errno.returning { () throws(VMSockError) in
        try HandleTable.withConnection(handle) { (socket) throws(VMSockError) in
            try socket.writev(vectors: checked(vectors, count))
        }
    }
}

/// The vectors of a readv or writev, checked as the kernel checks them: EINVAL for a count outside 0...IOV_MAX or
/// lengths that sum beyond SSIZE_MAX, EFAULT for a NULL array or a NULL buffer with a length.
@inline(__always)
private func checked(
    _ vectors: UnsafePointer<iovec>?, _ count: Int32
) throws(VMSockError) -> UnsafeBufferPointer<iovec> {
    guard count >= 0 && count <= 1024 else {
        throw VMSockError(code: EINVAL, "iovcnt \(count) is outside 0...1024 (IOV_MAX)")
    }
    guard let vectors else {
        if count == 0 { return UnsafeBufferPointer(start: nil, count: 0) }
        throw VMSockError(code: EFAULT, "the iovec array is NULL")
    }
    let all = UnsafeBufferPointer(start: vectors, count: Int(count))
    var total = 0
    for vector in all {
        // iov_len is a size_t: above SSIZE_MAX it arrives negative.
        guard vector.iov_len >= 0 else { throw tooLong }
        if vector.iov_base == nil && vector.iov_len != 0 { throw VMSockError(code: EFAULT, "an iovec's base is NULL") }
        let (sum, overflow) = total.addingReportingOverflow(vector.iov_len)
        if overflow { throw tooLong }
        total = sum
    }
    return all
}

private var nullBuffer: VMSockError { VMSockError(code: EFAULT, "the buffer is NULL") }
private var tooLong: VMSockError { VMSockError(code: EINVAL, "the iovec lengths add up to more than SSIZE_MAX") }
