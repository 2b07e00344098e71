import CVMSock
import Glibc

/// QEMU's ivshmem-server protocol (QEMU `docs/specs/ivshmem-spec.rst`), which vmsockd speaks and `IvshmemClient`
/// reads: an AF_UNIX stream socket on which only the server talks. Every message is one little-endian int64,
/// sent in one sendmsg, with at most one descriptor attached by SCM_RIGHTS.
///
/// When client N connects (every client has the same V vectors):
/// 1. to N: `0` (the protocol version); N's id; `-1` with the shared memory;
/// 2. to every other client: N's id V times, each with one of N's eventfds (vector 0, 1, ...);
/// 3. to N: every other client's id V times with its eventfds, then N's own id V times with its own eventfds.
///
/// When a client leaves, every other client gets its id with no descriptor. Clients never send: the server takes
/// anything from a client, hang-up included, as its leaving.
enum IvshmemWire {
    /// The abstract name a vmsock client binds its socket to before it connects (this, its pid and a random
    /// number). vmsockd sees it (getpeername) and knows a vmsock client from QEMU, which binds none and cannot
    /// take an id it heard leave again (`IvshmemServer.leftAtJoin`).
    static let clientNamePrefix = "vmsock-ivshmem-client."
    static let protocolVersion: Int64 = 0
    /// The value of the message that carries the shared memory.
    static let sharedMemory: Int64 = -1
    static let messageSize = 8

    /// How a non-blocking send went.
    enum SendOutcome: Equatable {
        case sent
        /// EAGAIN: the socket's buffer is full. Nothing was sent.
        case full
    }

    /// Sends one message, with `descriptor` attached when given, without waiting (MSG_DONTWAIT) nor raising
    /// SIGPIPE (MSG_NOSIGNAL).
    /// - Throws: the errno of any other failure: EPIPE or ECONNRESET for a client gone, ETOOMANYREFS when too many
    ///   descriptors are in flight (the sending user's RLIMIT_NOFILE), EPROTO for a short send.
    static func send(_ fd: Int32, _ value: Int64, descriptor: Int32?) throws(VMSockError) -> SendOutcome {
        var payload = value.littleEndian
        let controlLength = descriptor == nil ? 0 : vms_cmsg_space(MemoryLayout<Int32>.size)
        var control = [UInt8](repeating: 0, count: max(controlLength, 1))
        let outcome = withUnsafeMutableBytes(of: &payload) { data in
            control.withUnsafeMutableBytes { control in
                var iov = iovec(iov_base: data.baseAddress, iov_len: data.count)
                return withUnsafeMutablePointer(to: &iov) { iovPointer in
                    var msg = msghdr()
                    msg.msg_iov = iovPointer
                    msg.msg_iovlen = 1
                    if let descriptor {
                        msg.msg_control = control.baseAddress
                        msg.msg_controllen = controlLength
                        let cmsg = vms_cmsg_firsthdr(&msg)!
                        cmsg.pointee.cmsg_level = SOL_SOCKET
                        cmsg.pointee.cmsg_type = Int32(SCM_RIGHTS)
                        cmsg.pointee.cmsg_len = vms_cmsg_len(MemoryLayout<Int32>.size)
                        UnsafeMutableRawPointer(vms_cmsg_data(cmsg)!).storeBytes(of: descriptor, as: Int32.self)
                    }
                    return Result { () throws(VMSockError) in
                        try Sys.sendMessage(fd, &msg, Int32(MSG_DONTWAIT) | Int32(MSG_NOSIGNAL), "sendmsg(ivshmem)")
                    }
                }
            }
        }
        let sent: Int
        do {
            sent = try outcome.get()
        } catch where error.code == EAGAIN {
            return .full
        }
        // A stream socket takes a small send whole or not at all; anything else would leave the stream out of step.
        guard sent == messageSize else { throw .protocolFault("short send of an ivshmem message (\(sent) bytes)") }
        return .sent
    }

    /// One received message: its value and the descriptor that came with it, if any (owned: closed unless kept).
    struct Message {
        let value: Int64
        let descriptor: Descriptor?
    }

    /// Reassembles messages from a non-blocking stream socket. A message is normally one segment of 8 bytes, but
    /// a stream may deliver it in pieces; the pieces and any descriptor are kept until all 8 bytes are there.
    struct Reader {
        private var bytes: [UInt8] = []
        private var descriptor: Descriptor?

        /// Receives what has arrived of the next message: the message once whole, nil when it is not yet.
        /// - Throws: ECONNRESET when the server hung up (or reset the connection); EPROTO for a message that
        ///   carries more than one descriptor, or descriptors the receive could not take in whole (MSG_CTRUNC: the
        ///   kernel closed the rest).
        mutating func next(_ fd: Int32) throws(VMSockError) -> Message? {
            while bytes.count < IvshmemWire.messageSize {
                let (chunk, descriptors, truncated) = try receive(fd, upTo: IvshmemWire.messageSize - bytes.count)
                guard let chunk else { return nil }
                if truncated { throw .protocolFault("vmsockd sent more descriptors than a message may carry") }
                for received in descriptors {
                    guard descriptor == nil else {
                        throw .protocolFault("vmsockd sent an ivshmem message with more than one descriptor")
                    }
                    descriptor = received
                }
                bytes += chunk
            }
            let value = bytes.withUnsafeBytes { Int64(littleEndian: $0.loadUnaligned(as: Int64.self)) }
            let message = Message(value: value, descriptor: descriptor)
            bytes = []
            descriptor = nil
            return message
        }

        /// One recvmsg(MSG_DONTWAIT | MSG_CMSG_CLOEXEC) of up to `count` bytes: nil bytes when nothing is there
        /// (EAGAIN). Room is left for 4 descriptors, so that an overfull message is seen as such.
        private func receive(_ fd: Int32, upTo count: Int) throws(VMSockError) -> ([UInt8]?, [Descriptor], Bool) {
            let message: Sys.MessageWithDescriptors
            do {
                message = try Sys.receiveWithDescriptors(fd, byteCount: count, maxDescriptors: 4, "recvmsg(ivshmem)")
            } catch where error.code == EAGAIN {
                return (nil, [], false)
            } catch where error.code == ECONNRESET {
                throw VMSockError(code: ECONNRESET, "vmsockd reset the connection")
            }
            if message.bytes.isEmpty { throw VMSockError(code: ECONNRESET, "vmsockd closed the connection") }
            return (message.bytes, message.descriptors, message.flags & Int32(MSG_CTRUNC) != 0)
        }
    }
}
