// Fuzz target: vmcat's command line (Sources/vmcat/Options.swift), as argument vectors: the input's zero bytes
// separate the words. A parsed command line then becomes the socket options vmcat connects or listens with.
// Invariants: no crash; what parses is within nc's rules (a port for a client, a valid ring size); a refusal
// says why.
@testable import vmcat
@testable import VMSock

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzVmcatOptions(_ data: UnsafeRawPointer?, _ count: Int) -> CInt {
    var input = FuzzInput(data, count)
    let arguments = input.words()
    do throws(Options.UsageError) {
        let options = try Options.parse(arguments)
        if options.help { return 0 }
        require(options.listen || (options.port != 0 && options.host != nil), "a client without a destination: \(options)")
        if let ring = options.ringSize { require((try? VMSocketOptions.validateRingSize(ring)) != nil, "ring size \(ring)") }
        let socket = options.socketOptions
        _ = socket.handshakeTimeoutMs
        _ = socket.connectTimeoutMs
    } catch {
        require(!error.message.isEmpty, "an empty usage message")
    }
    return 0
}
