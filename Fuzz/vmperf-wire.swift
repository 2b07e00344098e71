// Fuzz target: what one vmperf reads from the other (Sources/vmperf/Wire): the greeting on every connection, the
// length-prefixed JSON control messages (test parameters, the server's reply and output, each side's results), and what the
// results become once they arrive: the summary lines and the JSON document (Summary).
// Invariants: no crash, whatever the other side sends; a greeting that parses is what it encodes to; parameters
// that pass `validated()` are within the command line's limits.
import Foundation
import VMPerfSupport
import VMSock
@testable import vmperf

/// The other side's bytes, as the control connection reads them.
private final class Bytes: ByteStream {
    var data: [UInt8]
    var offset = 0
    init(_ data: [UInt8]) { self.data = data }
    func send(block: UnsafeRawBufferPointer) throws {}
    func receive(scratch: UnsafeMutableRawBufferPointer) throws -> Int {
        let n = min(scratch.count, data.count - offset)
        scratch.copyMemory(from: UnsafeRawBufferPointer(rebasing: data.withUnsafeBytes { $0 }[offset..<offset + n]))
        offset += n
        return n
    }
    func readExactly(_ buffer: UnsafeMutableRawBufferPointer) throws -> Bool {
        guard data.count - offset >= buffer.count else {
            if offset == data.count { return false }
            throw Failure("short read")
        }
        data.withUnsafeBytes { buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[offset..<offset + buffer.count])) }
        offset += buffer.count
        return true
    }
    func writeAll(_ buffer: UnsafeRawBufferPointer) throws {}
    func shutdownWrite() throws {}
    func close() {}
    func setReadTimeout(_ seconds: Double?) {}
    func hasInput() -> Bool { offset < data.count }
}

/// Parameters a real client could send: what the summary of a test is made with.
private let sample = TestParameters(
    mode: .throughput, streams: 2, blockSize: 131072, duration: 1, bytes: 0, blocks: 0, reverse: false, bidir: false,
    interval: 0, spinUs: nil)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzVmperfWire(_ data: UnsafeRawPointer?, _ count: Int) -> CInt {
    var input = FuzzInput(data, count)
    let what = input.byte()
    switch what % 5 {
    case 0:  // a greeting
        let bytes = input.rest()
        if let greeting = Greeting(bytes) {
            require(greeting.bytes == bytes, "greeting \(greeting) does not encode back to what was received")
            require(greeting.index < 1024, "stream index \(greeting.index)")
        }
    case 1:  // the client's test parameters, as the server reads and checks them
        let channel = ControlChannel(stream: Bytes(input.rest()))
        guard let parameters = try? channel.receive(TestParameters.self, timeout: 1, what: "parameters").validated() else { break }
        require((1...128).contains(parameters.streams) && (1...(128 << 20)).contains(parameters.blockSize),
                "validated \(parameters)")
        for index in 0..<parameters.connections { _ = parameters.clientSends(index) }
    case 2:  // the server's answer
        let channel = ControlChannel(stream: Bytes(input.rest()))
        _ = try? channel.receive(ServerReply.self, timeout: 1, what: "the answer")
    case 3:  // the server's output (--get-server-output), as the client prints it and puts it in its document
        let channel = ControlChannel(stream: Bytes(input.rest()))
        guard let output = try? channel.receive(ServerOutput.self, timeout: 1, what: "the server's output") else { break }
        require(!output.printable.unicodeScalars.contains { $0.value < 0x20 && $0 != "\n" && $0 != "\t" }, "a control character printed")
        _ = JSON.object([output.documentMember]).rendered()
    default:  // the other side's results, and the summary made with them
        let mine = (0..<Int(input.byte() % 3)).map { i in
            StreamResult(index: i, sender: input.bool(), bytes: Int(input.integer(UInt32.self)), seconds: 1,
                         waits: input.bool() ? WaitStatistics() : nil)
        }
        let channel = ControlChannel(stream: Bytes(input.rest()))
        guard let remote = try? channel.receive(SideResults.self, timeout: 1, what: "results") else { break }
        let local = TestRun.Outcome(streams: mine, intervals: [], cpu: CPUUsage(user: 1, system: 1), histogram: nil)
        for side in [TestRun.Side.client, .server] {
            let summary = Summary(parameters: sample, side: side, local: local, remote: remote, format: .adaptiveBits)
            _ = summary.humanLines()
            _ = summary.waitLines()
            _ = summary.endJSON().rendered()
        }
    }
    return 0
}
