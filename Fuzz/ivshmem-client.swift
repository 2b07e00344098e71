// Fuzz target: vmsockd's wire protocol as IvshmemClient reads it (IvshmemWire.Reader, IvshmemClient.connect and
// update, IvshmemRegion.attach). A thread of this process plays the daemon on a real Unix socket: it sends the
// messages the input describes (values, descriptors of any kind, the region memfd with any size, seals and header,
// messages split into pieces, several descriptors on one message), then hangs up.
// Invariants: no crash and no hang; a failure is EPROTO, ECONNRESET or ETIMEDOUT; a client that joined has an id
// below its region's slot count, a live slot, and only peers other than itself with all their vectors, which can
// be rung; every descriptor it received is closed once it is gone.
import CVMSock
import Glibc
import VMSockRing
@testable import VMSock

// Under $TMPDIR, which tools/fuzz.sh points at a directory it removes: a crashing run leaves nothing behind.
private let directory: String = {
    let parent = getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
    var template = Array("\(parent)/vmsockd-XXXXXX".utf8CString)
    precondition(mkdtemp(&template) != nil)
    return String(cString: template)
}()
private let path = directory + "/vmsockd.sock"
private let listening: Int32 = {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    var (addr, length) = try! ControlSocket.socketAddress(ControlAddress(kind: .path, name: path))
    let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
    precondition(bound == 0 && listen(fd, 4) == 0, "cannot listen on \(path)")
    atexit { unlink(path); rmdir(directory) }
    return fd
}()

/// One message the fake daemon sends: bytes (normally 8, maybe split) and the descriptors attached to its first piece.
private struct Message {
    var bytes: [UInt8]
    var descriptors: [Int32]
    var split: Int
}

/// The messages the input describes. Unless the input says otherwise, a well-formed join comes first (version,
/// id, region), so that runs reach the peers' vectors and leaves without finding it anew.
private func messages(_ input: inout FuzzInput, made: inout PeerDescriptors) -> [Message] {
    func int64(_ value: Int64) -> [UInt8] { withUnsafeBytes(of: value.littleEndian) { Array($0) } }
    var out: [Message] = []
    if input.byte() < 0xC0 {
        out.append(Message(bytes: int64(0), descriptors: [], split: 0))
        out.append(Message(bytes: int64(Int64(input.byte() % 8)), descriptors: [], split: 0))
        out.append(Message(bytes: int64(-1), descriptors: [made.make(&input, ringCapacity: 0, ivshmemRegion: true)], split: 0))
    }
    while !input.isEmpty && out.count < 64 {
        let value: Int64 = switch input.byte() % 6 {
        case 0, 1, 2: Int64(input.byte() % 8)
        case 3: -1
        case 4: 0
        default: input.integer(Int64.self)
        }
        let attach = input.byte()
        var descriptors: [Int32] = []
        switch attach % 8 {
        case 0, 1: break
        case 2, 3, 4: descriptors = [made.make(&input, ringCapacity: 0, ivshmemRegion: true)]
        case 5: descriptors = [made.make(&input, ringCapacity: 0, ivshmemRegion: true), made.make(&input, ringCapacity: 0, ivshmemRegion: true)]
        case 6: descriptors = [Int32](repeating: made.make(&input, ringCapacity: 0, ivshmemRegion: true), count: 5)
        default: descriptors = []
        }
        let split = attach & 0x80 != 0 ? Int(attach & 7) : 0
        out.append(Message(bytes: int64(value), descriptors: descriptors.filter { $0 >= 0 }, split: split))
    }
    if input.byte() & 1 != 0, var last = out.popLast() {  // a message cut short by the hang-up
        last.bytes = Array(last.bytes.prefix(3))
        out.append(last)
    }
    return out
}

/// The daemon's side: accepts the client, sends, hangs up. Runs on its own thread while the client reads.
private final class FakeDaemon: @unchecked Sendable {
    let messages: [Message]
    init(_ messages: [Message]) { self.messages = messages }

    func run() {
        let client = accept(listening, nil, nil)
        guard client >= 0 else { return }
        defer { close(client) }
        for message in messages {
            let pieces = message.split > 0 && message.split < message.bytes.count
                ? [Array(message.bytes[..<message.split]), Array(message.bytes[message.split...])]
                : [message.bytes]
            for (index, piece) in pieces.enumerated() {
                guard send(client, piece, index == 0 ? message.descriptors : []) else { return }
            }
        }
    }

    private func send(_ fd: Int32, _ bytes: [UInt8], _ descriptors: [Int32]) -> Bool {
        var payload = bytes
        let controlLength = descriptors.isEmpty ? 0 : vms_cmsg_space(descriptors.count * 4)
        var control = [UInt8](repeating: 0, count: max(controlLength, 1))
        return payload.withUnsafeMutableBytes { data in
            control.withUnsafeMutableBytes { control in
                var iov = iovec(iov_base: data.baseAddress, iov_len: data.count)
                return withUnsafeMutablePointer(to: &iov) { iovPointer in
                    var msg = msghdr()
                    msg.msg_iov = iovPointer
                    msg.msg_iovlen = 1
                    if !descriptors.isEmpty {
                        msg.msg_control = control.baseAddress
                        msg.msg_controllen = controlLength
                        let cmsg = vms_cmsg_firsthdr(&msg)!
                        cmsg.pointee.cmsg_level = SOL_SOCKET
                        cmsg.pointee.cmsg_type = Int32(SCM_RIGHTS)
                        cmsg.pointee.cmsg_len = vms_cmsg_len(descriptors.count * 4)
                        let slot = UnsafeMutableRawPointer(vms_cmsg_data(cmsg)!)
                        for (i, fd) in descriptors.enumerated() { slot.storeBytes(of: fd, toByteOffset: 4 * i, as: Int32.self) }
                    }
                    return sendmsg(fd, &msg, Int32(MSG_NOSIGNAL)) == data.count
                }
            }
        }
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzIvshmemClient(_ data: UnsafeRawPointer?, _ count: Int) -> CInt {
    _ = listening
    var input = FuzzInput(data, count)
    var made = PeerDescriptors()
    let daemon = FakeDaemon(messages(&input, made: &made))
    let before = openDescriptors()
    var thread = pthread_t()
    let box = Unmanaged.passRetained(daemon).toOpaque()
    precondition(pthread_create(&thread, nil, { box in
        let daemon = Unmanaged<FakeDaemon>.fromOpaque(box!).takeRetainedValue()
        daemon.run()
        return nil
    }, box) == 0)
    do throws(VMSockError) {
        let client = try IvshmemClient.connect(path: path, timeoutMs: 2000)
        let slots = client.region.geometry.peerSlots
        require(client.id >= 0 && client.id < slots, "joined with id \(client.id) of \(slots) slots")
        require(IvshmemHeader(base: client.region.base).liveness(of: client.id, in: client.region.geometry).live, "joined on a dead slot")
        for _ in 0..<2 {
            for (id, peer) in client.peers {
                require(id != client.id && id < slots && peer.vectors.count == client.vectors, "peer \(id) is malformed")
                for vector in 0..<client.vectors { try client.ring(peer: id, vector: vector) }
            }
            try client.ring(peer: client.id, vector: client.vectors - 1)
            _ = try client.wait(vector: 0, timeoutMs: 0)
            _ = try client.waitForEvents(timeoutMs: 0)
        }
    } catch {
        require([EPROTO, ECONNRESET, ETIMEDOUT].contains(error.code), "undocumented error: \(error)")
    }
    pthread_join(thread, nil)
    let ours = made.made.count
    made.closeAll()
    let after = openDescriptors()
    require(after == before - ours, "\(after - before + ours) descriptors leaked")
    return 0
}
