import Glibc
import VMPerfSupport
import VMSock

/// A connected byte stream a test runs over: a `VMSocket` (shared memory or TCP) or a Unix-domain socket.
///
/// The pumps in `Pump` are generic over this protocol and called with the concrete type, so the compiler
/// specializes them: no existential dispatch per block.
protocol ByteStream: AnyObject {
    /// Writes the whole block. Over rings (shared memory, a vmsockd region) the block is copied straight into the
    /// ring (`writeInPlace`).
    func send(block: UnsafeRawBufferPointer) throws
    /// Takes what has arrived, at least one byte, and loads every cache line of it (so the bytes really cross to
    /// this core); 0 at end of stream. TCP and Unix sockets read into `scratch`; rings are read in place.
    func receive(scratch: UnsafeMutableRawBufferPointer) throws -> Int
    /// Fills `buffer` completely; false at end of stream before the first byte.
    func readExactly(_ buffer: UnsafeMutableRawBufferPointer) throws -> Bool
    func writeAll(_ buffer: UnsafeRawBufferPointer) throws
    func shutdownWrite() throws
    func close()
    /// Gives up a blocked read after `seconds` (nil: wait for ever) with ETIMEDOUT.
    func setReadTimeout(_ seconds: Double?)
    /// Whether a read would not wait now: bytes arrived, or the peer shut down or is gone. Reads nothing.
    func hasInput() -> Bool
}

/// A read that waited out `setReadTimeout` on a Unix socket (a `VMSocket` throws its own ETIMEDOUT).
struct ReadTimedOut: Error {}

/// Whether `error` is a read that waited out its timeout, on either kind of stream.
func isReadTimeout(_ error: Error) -> Bool {
    if let error = error as? VMSockError { return error.code == ETIMEDOUT }
    return error is ReadTimedOut
}

extension ByteStream {
    func readExactly(_ buffer: UnsafeMutableRawBufferPointer, reading read: (UnsafeMutableRawBufferPointer) throws -> Int) throws -> Bool {
        var done = 0
        while done < buffer.count {
            let n = try read(UnsafeMutableRawBufferPointer(rebasing: buffer[done...]))
            if n == 0 {
                if done == 0 { return false }
                throw Failure("the peer closed the connection in the middle of a message")
            }
            done += n
        }
        return true
    }
}

/// Loads one byte of every cache line, so that the lines move to this core as a reader's would.
@inline(__always)
func touchCacheLines(_ bytes: UnsafeRawBufferPointer) -> UInt8 {
    var sum: UInt8 = 0
    var offset = 0
    while offset < bytes.count {
        sum &+= bytes[offset]
        offset &+= 64
    }
    return sum
}

extension VMSocket: ByteStream {
    func hasInput() -> Bool {
        defer { disarmReadable() }
        // Arming says it for bytes already taken in (and for rings); the kernel says it for what is still in the
        // socket, or its end (TCP).
        if (try? armReadable()) == true { return true }
        var entry = pollfd(fd: readInterest.descriptor, events: readInterest.events, revents: 0)
        return poll(&entry, 1, 0) > 0
    }

    @inline(__always)
    func send(block: UnsafeRawBufferPointer) throws {
        guard transport.usesRings else { return try writeAll(block) }
        var done = 0
        while done < block.count {
            // writeInPlace caps `minimum` at the ring size itself: a block larger than the ring goes in pieces.
            // The closure captures only constants: a captured `var` would be stored to the stack on every block,
            // and at 64-byte blocks the writer is bound by its stores (see SharedMemoryStream+FastPath.swift).
            let rest = UnsafeRawBufferPointer(rebasing: block[done...])
            done += try writeInPlace(minimum: rest.count) { space in
                let n = min(space.count, rest.count)
                space.baseAddress!.copyMemory(from: rest.baseAddress!, byteCount: n)
                return n
            }
        }
    }

    @inline(__always)
    func receive(scratch: UnsafeMutableRawBufferPointer) throws -> Int {
        guard transport.usesRings else {
            let n = try read(into: scratch)
            return n
        }
        var sum: UInt8 = 0
        // At most a scratch buffer's worth per call, as a copying reader would take: room returns to the writer
        // piece by piece instead of once per whole ring.
        let n = try readInPlace { view in
            let piece = UnsafeRawBufferPointer(rebasing: view[..<min(view.count, scratch.count)])
            sum = touchCacheLines(piece)
            return piece.count
        }
        // Kept, so the loads are not optimized away, in the caller's scratch (which the in-place read leaves
        // unused): each stream has its own, where a global written by every receiving thread was a data race
        // (ThreadSanitizer) and one cache line bounced between them.
        scratch.baseAddress?.storeBytes(of: sum, as: UInt8.self)
        return n
    }

    func readExactly(_ buffer: UnsafeMutableRawBufferPointer) throws -> Bool {
        try readExactly(buffer) { try read(into: $0) }
    }

    func shutdownWrite() throws { try shutdown(.write) }

    func setReadTimeout(_ seconds: Double?) {
        readTimeout = seconds.map { .milliseconds(Int64($0 * 1000)) }
    }
}
