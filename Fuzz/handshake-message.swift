// Fuzz target: a handshake message as the peer wrote it (HandshakeMessage.decode, Handshake.decode).
// Invariants: decoding never crashes; a message that decodes encodes back to the same 64 bytes (so nothing the
// peer sent is ignored by the check and then lost); the reasons a decode fails are the documented ones.
import Glibc
@testable import VMSock

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHandshakeMessage(_ data: UnsafeRawPointer?, _ count: Int) -> CInt {
    var input = FuzzInput(data, count)
    let truncated = input.byte() & 0x80 != 0  // as ControlSocket.receiveReady would say
    let bytes = input.rest()
    let decoded = bytes.withUnsafeBytes { raw in
        Result { () throws(HandshakeMessage.DecodeError) in try HandshakeMessage.decode(raw) }
    }
    switch decoded {
    case .success(let message):
        require(bytes.count == HandshakeMessage.size, "decoded a message of \(bytes.count) bytes")
        require(message.encoded() == bytes, "\(message) does not encode back to what was received")
        if let dialed = message.dialed {
            require(dialed.addressBytes.count == (dialed.family == .v4 ? 4 : 16), "address of the wrong length")
        }
        _ = "\(message.kind) \(message.rejectReason)"
    case .failure(let error):
        _ = error.description
    }
    // The wrapper every handshake step calls: EPROTO for anything malformed or truncated, never a crash.
    let received = ControlSocket.Received(bytes: bytes, descriptors: [], truncated: truncated)
    do {
        let message = try Handshake.decode(received, from: "peer")
        require(!truncated && bytes.count == HandshakeMessage.size, "accepted a truncated or odd-sized message")
        _ = message
    } catch {
        require(error.code == EPROTO || error.code == EMFILE || error.code == ENFILE, "decode threw \(error)")
    }
    return 0
}
